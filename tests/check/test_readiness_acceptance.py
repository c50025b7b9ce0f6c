"""The readiness loop as a new user runs it against the Express example.

Without bastion, ``bastion probe --chaos`` fails, each failed check with its fix, and
``--suggest-config`` writes a configuration; the gateway started with that configuration
(and nothing but the upstream's address added) in front of the same app passes the same probe.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bastion.cli import app
from tests.gateway.conftest import Server, express, start_gateway

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).parents[1] / "gateway" / "orders-openapi.yaml"
__all__ = ["express"]  # the session fixture, used here too


def probe(base: str, *extra: str) -> tuple[int, dict[str, object]]:
    """``bastion probe BASE --spec SPEC --chaos --format json`` and its report."""
    result = CliRunner().invoke(
        app, ["probe", base, "--spec", str(SPEC), "--chaos", "--format", "json", *extra]
    )
    return result.exit_code, json.loads(result.stdout[result.stdout.index("{") :])


def test_probe_chaos_fails_without_bastion_and_passes_behind_the_suggested_configuration(
    express: Server, tmp_path: Path
) -> None:
    suggested = tmp_path / "bastion.yaml"
    code, report = probe(express.base, "--suggest-config", str(suggested))
    assert code == 1
    checks = report["checks"]
    assert isinstance(checks, list)
    failed = [c for c in checks if c["status"] == "fail"]
    assert {c["id"] for c in failed} >= {
        "idempotency-replay",
        "chaos-retry-after-timeout",
        "chaos-duplicates-while-slow",
        "errors-trace-id",
    }
    # Each finding carries its fix: an instruction, and bastion.yaml lines for what bastion enforces.
    for check in failed:
        assert check["remediation"]["text"].strip(), check["id"]
    assert any(check["remediation"].get("config") for check in failed)

    config = yaml.safe_load(suggested.read_text())
    config["openapi"] = str(SPEC)  # written relative to the file; the gateway's file lives elsewhere
    gateway = start_gateway(
        tmp_path, {"upstream": express.base, "store": "memory://", **config}, name="suggested"
    )
    try:
        code, report = probe(gateway.base)
        statuses = {c["id"]: c["status"] for c in report["checks"]}  # type: ignore[union-attr]
        assert code == 0, {k: v for k, v in statuses.items() if v == "fail"}
        assert statuses["chaos-retry-after-timeout"] == "pass"
        assert statuses["chaos-duplicates-while-slow"] == "pass"
        assert statuses["idempotency-replay"] == "pass"
    finally:
        gateway.stop()
