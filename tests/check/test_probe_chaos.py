"""``bastion probe --chaos`` against real servers.

A bastion gateway with fault injection on request (``faults.allow_header_control``)
in front of the gateway tests' upstream must pass every chaos check, with the
faults it is asked for; the naive app (tests/check/naive_app.py), which has no
bastion, must fail them on its own slow and failing requests.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bastion.check.document import ParseError, load_file
from bastion.check.probes import chaos
from bastion.check.probes.base import ProbeContext
from bastion.check.probes.client import ProbeClient
from bastion.check.probes.payloads import SchemaSampler
from bastion.check.probes.target import build_target
from bastion.check.results import PROBE_PITFALLS, CheckResult
from bastion.cli import app
from tests.check.servers import serve, uvicorn
from tests.gateway.conftest import Server, start_gateway, start_upstream

NAIVE_SPEC = Path(__file__).parent / "fixtures" / "naive_openapi.yaml"
CHECKS = (
    "chaos-fault-control",
    "chaos-retry-after-timeout",
    "chaos-duplicates-while-slow",
    "chaos-retry-after-honoured",
    "chaos-errors-under-faults",
    "chaos-no-stack-trace",
)
#: The test upstream's orders and an echo route, as the probe reads them.
UPSTREAM_SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "orders", "version": "1"},
    "paths": {
        "/orders": {
            "post": {
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["item"],
                                "properties": {"item": {"type": "string", "minLength": 1, "maxLength": 20}},
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "created"}},
            }
        },
        "/echo/probe": {"get": {"responses": {"200": {"description": "ok"}}}},
    },
}

pytestmark = pytest.mark.e2e


def run_chaos(base_url: str, spec: Path) -> dict[str, CheckResult]:
    doc = load_file(spec)
    assert not isinstance(doc, ParseError)
    sampler = SchemaSampler(doc)
    client = ProbeClient(base_url, max_requests=120, max_seconds=60)
    ctx = ProbeContext(client, build_target(doc, sampler), sampler)
    chaos.run(ctx)
    results = {c.id: c for c in ctx.checks}
    assert set(results) == set(CHECKS)
    assert all(c.pitfall in PROBE_PITFALLS for c in ctx.checks)
    return results


def summary(results: dict[str, CheckResult]) -> str:
    return "\n".join(f"{c.status:4} {c.id}: {c.detail} {c.evidence}" for c in results.values())


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    workdir = tmp_path_factory.mktemp("chaos")
    server = start_upstream(workdir)
    spec = workdir / "openapi.yaml"
    spec.write_text(yaml.safe_dump(UPSTREAM_SPEC))
    try:
        yield server, spec
    finally:
        server.stop()


def gateway_config(upstream: Server, **extra: object) -> dict[str, object]:
    return {
        "upstream": upstream.base,
        "store": "memory://",
        "idempotency": {"require": ["POST /orders"]},
        "rate_limits": {"rules": [{"name": "probe-get", "match": "GET /echo/probe", "limit": "8/10s"}]},
        "errors": {"normalize_upstream": "all"},
        **extra,
    }


@pytest.fixture(scope="module")
def gateway(upstream: tuple[Server, Path]) -> Iterator[tuple[Server, Path]]:
    server, spec = upstream
    gateway = start_gateway(spec.parent, gateway_config(server, faults={"allow_header_control": True}))
    try:
        yield gateway, spec
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def naive_url() -> Iterator[str]:
    with serve(uvicorn("tests.check.naive_app:app")) as url:
        yield url


def test_the_gateway_with_fault_injection_passes_every_chaos_check(gateway: tuple[Server, Path]) -> None:
    server, spec = gateway
    results = run_chaos(server.base, spec)
    assert all(c.status == "pass" for c in results.values()), summary(results)
    # The first POST timed out on the client, and the retry waited for it rather than running again.
    retry = results["chaos-retry-after-timeout"]
    assert "after a client timeout" in retry.detail and "in-progress" in retry.detail, summary(results)
    assert "got 409 in progress" in results["chaos-duplicates-while-slow"].detail
    # The injected faults were the gateway's: logged with their trace ids.
    injected = [line for line in server.log_lines() if line.get("event") == "fault injected"]
    assert {line["side"] for line in injected} == {"client", "upstream"}
    assert all(line["trace_id"] for line in injected)


def test_without_fault_injection_the_probe_makes_its_own_slow_requests(upstream: tuple[Server, Path]) -> None:
    server, spec = upstream
    gateway = start_gateway(spec.parent, gateway_config(server), name="plain-gateway")
    try:
        results = run_chaos(gateway.base, spec)
    finally:
        gateway.stop()
    assert results["chaos-fault-control"].status == "skip", summary(results)
    # The headers asked for nothing, and the checks still pass on the probe's own requests.
    for check_id in CHECKS[1:]:
        assert results[check_id].status == "pass", summary(results)
    assert "after a client timeout" in results["chaos-retry-after-timeout"].detail, summary(results)


def test_the_naive_app_fails_the_chaos_checks(naive_url: str) -> None:
    results = run_chaos(naive_url, NAIVE_SPEC)
    assert results["chaos-fault-control"].status == "skip", summary(results)
    for check_id in (
        "chaos-retry-after-timeout",
        "chaos-duplicates-while-slow",
        "chaos-errors-under-faults",
        "chaos-no-stack-trace",
    ):
        check = results[check_id]
        assert check.status == "fail", summary(results)
        assert check.evidence, summary(results)
    assert "Python traceback" in results["chaos-no-stack-trace"].detail
    assert results["chaos-retry-after-honoured"].status == "skip", summary(results)


def test_probe_chaos_on_the_command_line(naive_url: str, tmp_path: Path) -> None:
    report = tmp_path / "probe.json"
    result = CliRunner().invoke(
        app,
        [
            "probe",
            naive_url,
            "--spec",
            str(NAIVE_SPEC),
            "--chaos",
            "--format",
            "json",
            "--max-requests",
            "150",
            "--output",
            str(report),
        ],
    )
    assert result.exit_code == 1, result.output
    text = report.read_text()
    for check_id in CHECKS:
        assert check_id in text
    assert json.loads(text)


def test_every_chaos_check_is_documented() -> None:
    text = (Path(__file__).resolve().parents[2] / "docs" / "checker.md").read_text()
    assert set(chaos.TITLES) == set(CHECKS)
    assert [c for c in CHECKS if f"`{c}`" not in text] == []
