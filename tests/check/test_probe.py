"""bastion probe against real servers: the naive app fails every pitfall, bastion in front passes.

The naive app (tests/check/naive_app.py) has no idempotency, answers crashes with
tracebacks, has no limits and validates nothing. The same app behind
``bastion.Bastion`` with fixtures/naive_bastion.yaml must pass every check; so
must the demo API. Each server is a real uvicorn process on a free loopback port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.check.probe import ProbeOptions, run_probe
from bastion.check.results import PROBE_PITFALLS, ProbeResult
from bastion.cli import app
from tests.check.servers import serve, uvicorn

FIXTURES = Path(__file__).parent / "fixtures"
NAIVE_SPEC = FIXTURES / "naive_openapi.yaml"
BURST = 20

pytestmark = pytest.mark.e2e


def summary(result: ProbeResult) -> str:
    return "\n".join(f"{c.status:4} {c.id}: {c.detail}" for c in result.checks)


def assert_passes(result: ProbeResult, pitfall: str) -> None:
    checks = [c for c in result.checks if c.pitfall == pitfall]
    failed = [c for c in checks if c.status == "fail"]
    assert not failed, summary(result)
    assert any(c.status == "pass" for c in checks), summary(result)


@pytest.fixture(scope="module")
def naive_url() -> Iterator[str]:
    with serve(uvicorn("tests.check.naive_app:app")) as url:
        yield url


@pytest.fixture(scope="module")
def naive_result(naive_url: str) -> ProbeResult:
    return run_probe(ProbeOptions(naive_url, NAIVE_SPEC, max_requests=200, max_seconds=60, burst=BURST))


@pytest.mark.parametrize(
    ("pitfall", "check_id"),
    [
        ("idempotency", "idempotency-replay"),
        ("idempotency", "idempotency-concurrent"),
        ("idempotency", "idempotency-key-reuse"),
        ("errors", "errors-no-leaks"),
        ("errors", "errors-404-problem"),
        ("rate-limiting", "rate-limit-429"),
        ("validation", "validation-wrong-type"),
        ("validation", "validation-missing-required"),
    ],
)
def test_naive_app_fails_every_pitfall(naive_result: ProbeResult, pitfall: str, check_id: str) -> None:
    [check] = [c for c in naive_result.checks if c.id == check_id]
    assert check.pitfall == pitfall
    assert check.status == "fail", summary(naive_result)
    assert check.evidence


def test_naive_app_fails_on_all_four_pitfalls(naive_result: ProbeResult) -> None:
    failing = {c.pitfall for c in naive_result.checks if c.status == "fail"}
    assert failing == set(PROBE_PITFALLS)
    assert naive_result.failed
    leak = next(c for c in naive_result.checks if c.id == "errors-no-leaks")
    assert "Python traceback" in leak.detail


def test_probe_stays_within_the_request_budget(naive_url: str) -> None:
    result = run_probe(ProbeOptions(naive_url, NAIVE_SPEC, max_requests=4, max_seconds=30, burst=BURST))
    assert result.requests == 4
    assert result.budget_exhausted
    assert any(c.id.endswith("-budget") for c in result.checks)


def test_probe_stays_within_the_time_budget(naive_url: str) -> None:
    import time

    started = time.monotonic()
    result = run_probe(ProbeOptions(naive_url, NAIVE_SPEC, max_requests=500, max_seconds=0.3, burst=BURST))
    assert time.monotonic() - started < 5
    assert result.budget_exhausted
    assert result.requests < 500


def test_cli_without_spec_probes_what_the_url_allows(naive_url: str, tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    out = tmp_path / "report.json"
    result = CliRunner().invoke(
        app,
        ["probe", naive_url, "--format", "json", "--max-requests", "20", "--html", str(html), "-o", str(out)],
    )
    assert result.exit_code == 1, result.output
    data = json.loads(out.read_text())
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["errors-404-problem"]["status"] == "fail"
    assert by_id["idempotency-replay"]["status"] == "skip"
    assert by_id["rate-limit-429"]["status"] == "skip"  # no --burst, no load
    assert data["requests"] <= 20
    page = html.read_text()
    assert page.startswith("<!doctype html>")
    assert "<script" not in page
    assert "unknown path gives a 404 problem" in page


def test_cli_junit_output(naive_url: str, tmp_path: Path) -> None:
    from xml.etree import ElementTree as ET

    out = tmp_path / "probe.xml"
    result = CliRunner().invoke(
        app,
        [
            "probe",
            naive_url,
            "--spec",
            str(NAIVE_SPEC),
            "--format",
            "junit",
            "--max-requests",
            "60",
            "-o",
            str(out),
        ],
    )
    assert result.exit_code == 1
    root = ET.parse(out).getroot()
    assert {s.get("name") for s in root} == {f"probe.{p}" for p in PROBE_PITFALLS}
    assert root.find(".//testcase[@name='errors-no-leaks']/failure") is not None


# -- the same app behind bastion ---------------------------------------------------------------


@pytest.fixture(scope="module")
def guarded_result() -> Iterator[ProbeResult]:
    with serve(uvicorn("tests.check.naive_app:guarded", factory=True)) as url:
        yield run_probe(ProbeOptions(url, NAIVE_SPEC, max_requests=200, max_seconds=60, burst=BURST))


@pytest.mark.parametrize("pitfall", PROBE_PITFALLS)
def test_naive_app_behind_bastion_passes(guarded_result: ProbeResult, pitfall: str) -> None:
    assert_passes(guarded_result, pitfall)


# -- the same app behind bastion gateway -------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_result(naive_url: str) -> Iterator[ProbeResult]:
    config = FIXTURES / "naive_gateway.yaml"
    args = ["-c", "from bastion.cli import main; main()", "gateway", "--config", str(config)]
    args += ["--upstream", naive_url, "--host", "127.0.0.1", "--port", "{port}"]
    with serve(args) as url:
        yield run_probe(ProbeOptions(url, NAIVE_SPEC, max_requests=200, max_seconds=60, burst=BURST))


@pytest.mark.parametrize("pitfall", PROBE_PITFALLS)
def test_naive_app_behind_the_gateway_passes(gateway_result: ProbeResult, pitfall: str) -> None:
    assert_passes(gateway_result, pitfall)


# -- the demo API ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo_result(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProbeResult]:
    from importlib import resources

    spec = resources.files("bastion.demo").joinpath("openapi.yaml")
    if not spec.is_file():
        pytest.skip("the demo API has no description yet")
    workdir = tmp_path_factory.mktemp("demo")
    args = ["-c", "from bastion.cli import main; main()", "demo", "--port", "{port}", "--store", "memory://"]
    with serve(args, cwd=workdir) as url:
        yield run_probe(ProbeOptions(url, Path(str(spec)), max_requests=300, max_seconds=90, burst=40))


@pytest.mark.parametrize("pitfall", PROBE_PITFALLS)
def test_demo_passes(demo_result: ProbeResult, pitfall: str) -> None:
    assert_passes(demo_result, pitfall)


def test_the_cli_default_response_cap_is_the_probe_clients() -> None:
    import inspect

    from bastion import cli
    from bastion.check.probe import MAX_RESPONSE_BYTES

    default = inspect.signature(cli.probe).parameters["max_response_bytes"].default
    assert default == MAX_RESPONSE_BYTES == ProbeOptions("http://x", None).max_response_bytes
