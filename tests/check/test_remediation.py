"""A remediation for every lint rule and probe check, in every report, and probe --suggest-config.

The catalogue test walks every lint rule and every probe check (the catalogue and
the ids the probes really emit); each bastion.yaml fragment must parse and, merged
into a minimal configuration, pass ``load_config``. The reports are checked on a
real lint result and on a probe result built from the catalogue; --suggest-config
runs against the naive app, and the app behind bastion with the configuration it
wrote must pass every check.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import yaml
from rich.console import Console

from bastion.catalog import RULES
from bastion.check import probe_report
from bastion.check.html import probe_html
from bastion.check.lint import lint_text
from bastion.check.probe import ProbeOptions, run_probe
from bastion.check.probe_checks import PRIORITIES, PROBE_CHECKS, ProbeCheck
from bastion.check.remediation import (
    OPERATION,
    MergeConflict,
    Remediation,
    merge_fragment,
    operation_at,
    rule_remediation,
)
from bastion.check.report import lint_json, lint_junit, lint_sarif
from bastion.check.results import CheckResult, ProbeResult
from bastion.check.starter import SuggestError, starter_config
from bastion.config import load_config
from tests.conftest import free_port

PROBES = Path(__file__).resolve().parents[2] / "src" / "bastion" / "check" / "probes"
FIXTURES = Path(__file__).parent / "fixtures"
MINIMAL = {"store": "memory://"}


def every_remediation() -> Iterator[tuple[str, Remediation]]:
    """Every lint rule's and probe check's remediation, at an operation and at none."""
    for rule in RULES.values():
        for operation in ("POST /orders", None):
            yield f"lint {rule.id} at {operation}", rule_remediation(rule).at(operation)
    for check in PROBE_CHECKS.values():
        for operation in ("POST /orders", None):
            yield f"probe {check.id} at {operation}", check.fix.at(operation)


def emitted_check_ids() -> set[str]:
    """The check ids the probe modules spell out, read from their source."""
    ids: set[str] = set()
    for module in PROBES.glob("*.py"):
        text = module.read_text()
        ids |= set(re.findall(r'ctx\.add\(\s*"([a-z0-9-]+)"', text))
        ids |= set(re.findall(r'_problem_check\(\s*ctx,\s*"([a-z0-9-]+)"', text))
        ids |= set(re.findall(r'chaos\.add\(\s*"([a-z0-9-]+)"', text))
        for block in re.findall(r"^_TITLES = \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL):
            for key in re.findall(r'^\s+"([a-z0-9-]+)": ', block, re.MULTILINE):
                # validation.py names its checks f"validation-{kind}" from these keys
                prefixed = 'f"validation-{kind}"' in text and not key.startswith("validation-")
                ids.add(f"validation-{key}" if prefixed else key)
    return ids


# -- the catalogue ------------------------------------------------------------------------------


def test_every_lint_rule_and_probe_check_has_a_remediation() -> None:
    missing = [name for name, fix in every_remediation() if not fix.text.strip()]
    assert not missing
    assert set(RULES) <= {name.split()[1] for name, _ in every_remediation()}


def test_every_check_the_probes_emit_is_in_the_catalogue() -> None:
    ids = emitted_check_ids()
    assert {"idempotency-replay", "errors-no-leaks", "rate-limit-429", "validation-oversized"} <= ids
    assert ids <= set(PROBE_CHECKS), sorted(ids - set(PROBE_CHECKS))


def test_every_check_a_real_run_reports_is_in_the_catalogue() -> None:
    # Nothing listens on the port: each check still reports (as a failure or a skip).
    result = run_probe(ProbeOptions(f"http://127.0.0.1:{free_port()}", None, max_requests=40, max_seconds=20))
    ids = {c.id for c in result.checks}
    assert len(ids) >= 15
    assert ids <= set(PROBE_CHECKS), sorted(ids - set(PROBE_CHECKS))


@pytest.mark.parametrize(
    ("name", "fix"), list(every_remediation()), ids=lambda v: v if isinstance(v, str) else ""
)
def test_each_yaml_remediation_parses_and_passes_config_check(name: str, fix: Remediation) -> None:
    if fix.config is not None:
        text = fix.config_yaml()
        assert text is not None
        assert yaml.safe_load(text) == fix.config, name
        assert OPERATION not in text
        config = dict(MINIMAL)
        merge_fragment(config, fix.config)
        load_config(config, env={})
    if fix.extension is not None:
        text = fix.extension_yaml()
        assert text is not None
        parsed = yaml.safe_load(text)
        assert parsed == fix.extension
        assert all(key.startswith("x-bastion-") for key in parsed), name


def test_every_configuration_fix_merges_with_every_other() -> None:
    config: dict[str, Any] = dict(MINIMAL)
    for _, fix in every_remediation():
        if fix.config is not None:
            merge_fragment(config, fix.config)
    loaded = load_config(config, env={})
    assert loaded.idempotency.require == ["POST /orders"]
    assert loaded.errors.normalize_upstream == "all"
    assert [rule.name for rule in loaded.rate_limits.rules] == ["per-client"]


def test_the_extension_fix_closes_the_lint_finding() -> None:
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/orders": {"post": {"responses": {"201": {"description": "made"}}}}},
    }
    [finding] = [f for f in lint_text(json.dumps(spec)).findings if f.rule == "idempotency-key-declared"]
    assert finding.operation == "POST /orders"
    assert finding.remediation.config == {"idempotency": {"enabled": True, "require": ["POST /orders"]}}
    extension = finding.remediation.extension
    assert extension is not None
    spec["paths"]["/orders"]["post"].update(extension)  # type: ignore[index]
    assert "idempotency-key-declared" not in {f.rule for f in lint_text(json.dumps(spec)).findings}


def test_a_fix_without_its_operation_drops_the_entries_that_name_it() -> None:
    fix = rule_remediation(RULES["idempotency-key-declared"])
    assert fix.at(None).config == {"idempotency": {"enabled": True}}
    assert fix.at("PATCH /a/{id}").config == {"idempotency": {"enabled": True, "require": ["PATCH /a/{id}"]}}
    assert operation_at("/paths/~1a~1{id}/patch/responses") == "PATCH /a/{id}"
    assert operation_at("/components/schemas/A") is None


def test_merging_conflicting_scalars_names_the_key() -> None:
    config: dict[str, Any] = {"errors": {"normalize_upstream": "all"}}
    with pytest.raises(MergeConflict, match=r"errors\.normalize_upstream"):
        merge_fragment(config, {"errors": {"normalize_upstream": False}})
    merge_fragment(config, {"idempotency": {"require": ["POST /a"]}})
    merge_fragment(config, {"idempotency": {"require": ["POST /a", "POST /b"]}})
    assert config["idempotency"]["require"] == ["POST /a", "POST /b"]


# -- the reports --------------------------------------------------------------------------------

UNSAFE = """
openapi: 3.1.0
info: {title: t, version: '1'}
paths:
  /orders:
    post:
      requestBody:
        content:
          application/json:
            schema: {type: object, properties: {note: {type: string}}, additionalProperties: false}
      responses:
        '201': {description: made}
"""


def test_lint_reports_carry_the_remediation() -> None:
    result = lint_text(UNSAFE)
    console = Console(record=True, width=200)
    from bastion.check.report import lint_text as print_text

    print_text(result, console)
    text = console.export_text()
    assert "bastion.yaml:" in text
    assert "- POST /orders" in text
    assert "x-bastion-idempotency: required" in text

    data = json.loads(lint_json(result))
    finding = next(f for f in data["findings"] if f["rule"] == "idempotency-key-declared")
    assert finding["operation"] == "POST /orders"
    assert "require:\n  - POST /orders" in finding["remediation"]["config"]
    assert data["rules"]["idempotency-key-declared"]["remediation"]["extension"]

    sarif = json.loads(lint_sarif(result))
    run = sarif["runs"][0]
    descriptor = next(r for r in run["tool"]["driver"]["rules"] if r["id"] == "idempotency-key-declared")
    assert "```yaml\nidempotency:" in descriptor["help"]["markdown"]
    assert descriptor["help"]["text"].startswith("fix: ")
    sarif_result = next(r for r in run["results"] if r["ruleId"] == "idempotency-key-declared")
    assert "POST /orders" in sarif_result["properties"]["remediation"]["config"]
    assert "```yaml" in sarif_result["message"]["markdown"]

    root = ET.fromstring(lint_junit(result))
    failure = root.find(".//testcase[@name='idempotency-key-declared']/failure")
    assert failure is not None and failure.text is not None
    assert "fix: " in failure.text
    assert "- POST /orders" in failure.text


def synthetic_probe(statuses: dict[str, str] | None = None) -> ProbeResult:
    """Every catalogued check failing (or as ``statuses`` says), on ``POST /orders`` where it can."""
    checks = []
    for check in PROBE_CHECKS.values():
        if check.id.endswith("-budget"):
            continue
        status = (statuses or {}).get(check.id, "fail")
        checks.append(
            CheckResult(
                check.id, check.pitfall, f"{check.id} on POST /orders", status, "it broke", ["POST /orders"]
            )  # type: ignore[arg-type]
        )
    return ProbeResult("http://127.0.0.1:9", str(FIXTURES / "naive_openapi.yaml"), checks, 10, 1.0)


def test_probe_reports_carry_the_remediation() -> None:
    result = synthetic_probe()
    console = Console(record=True, width=200)
    probe_report.probe_text(result, console)
    text = console.export_text()
    assert text.count("fix: ") == len(result.checks)
    assert "normalize_upstream: all" in text

    data = json.loads(probe_report.probe_json(result))
    by_id = {c["id"]: c for c in data["checks"]}
    assert by_id["idempotency-key-required"]["operation"] == "POST /orders"
    assert "- POST /orders" in by_id["idempotency-key-required"]["remediation"]["config"]

    root = ET.fromstring(probe_report.probe_junit(result))
    failure = root.find(".//testcase[@name='rate-limit-429']/failure")
    assert failure is not None and failure.text is not None
    assert "fix: " in failure.text and "limit: 100/minute" in failure.text

    sarif = json.loads(probe_report.probe_sarif(result))
    run = sarif["runs"][0]
    assert len(run["results"]) == len(result.checks)
    assert all(
        "```yaml" in r["help"]["markdown"]
        for r in run["tool"]["driver"]["rules"]
        if r["id"] != "idempotency-budget" and not r["id"].endswith("-budget")
    )
    assert all(r["properties"]["remediation"]["text"] for r in run["results"])


def test_the_html_checklist_goes_by_priority_with_each_fix() -> None:
    page = probe_html(synthetic_probe({"validation-oversized": "pass"}))
    assert "<script" not in page
    checklist = page.split("<h2>Checklist</h2>")[1].split("<h2>")[0]
    headings = re.findall(r"<h3>([^<]+)</h3>", checklist)
    assert headings == ["idempotency for writes", "errors", "rate limits", "validation", "monitoring"]
    assert headings == [p for p in PRIORITIES if p in headings]
    # each item with its fix, and the monitoring group holds the trace id check
    assert checklist.count("<b>fix:</b>") == len(PROBE_CHECKS) - 4 - 1
    assert "errors-trace-id" in checklist.split("<h3>monitoring</h3>")[1]
    assert "validation-oversized" not in checklist
    assert "normalize_upstream: all" in checklist


def test_a_passing_run_has_nothing_on_its_checklist() -> None:
    result = synthetic_probe({check: "pass" for check in PROBE_CHECKS})
    assert "Nothing to fix" in probe_html(result)


# -- --suggest-config ---------------------------------------------------------------------------


def test_suggested_configuration_merges_every_fix_and_loads(tmp_path: Path) -> None:
    config, answered = starter_config(synthetic_probe(), tmp_path / "bastion.yaml")
    assert len(answered) == len(PROBE_CHECKS) - 4  # the budget checks did not fail
    assert config["openapi"] == os.path.relpath(FIXTURES / "naive_openapi.yaml", tmp_path)
    loaded = load_config({**config, **MINIMAL}, env={})
    assert loaded.idempotency.require == ["POST /orders"]
    assert loaded.validation.reject_unknown_fields


def test_an_invalid_merge_is_an_error_naming_the_finding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = ProbeCheck(
        "rate-limit-429",
        "rate-limiting",
        "rate limits",
        Remediation("limit it", {"rate_limits": {"rules": [{"name": "x", "limit": "lots"}]}}),
    )
    monkeypatch.setitem(PROBE_CHECKS, "rate-limit-429", broken)
    with pytest.raises(SuggestError, match="rate-limit-429"):
        starter_config(synthetic_probe(), tmp_path / "bastion.yaml")
    clash = ProbeCheck(
        "errors-no-leaks", "errors", "errors", Remediation("x", {"errors": {"normalize_upstream": False}})
    )
    monkeypatch.setitem(PROBE_CHECKS, "rate-limit-429", PROBE_CHECKS["rate-limit-retry-after"])
    monkeypatch.setitem(PROBE_CHECKS, "errors-no-leaks", clash)
    with pytest.raises(SuggestError, match=r"errors-no-leaks.*normalize_upstream"):
        starter_config(synthetic_probe(), tmp_path / "bastion.yaml")


def suggested_app() -> Any:
    """The naive app behind bastion with the configuration --suggest-config wrote (for uvicorn)."""
    from bastion import Bastion
    from tests.check.naive_app import build_app

    env = {"BASTION_STORE": "memory://", "BASTION_LOGGING__ACCESS": "false"}
    return Bastion(build_app(), os.environ["SUGGESTED_CONFIG"], env=env)


@pytest.mark.e2e
def test_the_suggested_configuration_closes_what_the_probe_saw(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from bastion.cli import app
    from tests.check.servers import serve, uvicorn

    suggested = tmp_path / "bastion.yaml"
    spec = str(FIXTURES / "naive_openapi.yaml")
    limits = ["--burst", "20", "--max-requests", "200", "--max-seconds", "60", "--format", "json"]
    with serve(uvicorn("tests.check.naive_app:app")) as naive:
        run = CliRunner().invoke(
            app, ["probe", naive, "--spec", spec, *limits, "--suggest-config", str(suggested)]
        )
    assert run.exit_code == 1
    before = json.loads(run.stdout)
    failed = {c["id"] for c in before["checks"] if c["status"] == "fail"}
    assert {"idempotency-replay", "errors-no-leaks", "rate-limit-429", "validation-wrong-type"} <= failed
    text = suggested.read_text()
    assert all(check in text for check in failed)  # the header names what it answers
    load_config(suggested, env={})

    monkeypatch.setenv("SUGGESTED_CONFIG", str(suggested))
    with serve(uvicorn("tests.check.test_remediation:suggested_app", factory=True)) as guarded:
        after = run_probe(ProbeOptions(guarded, Path(spec), max_requests=200, max_seconds=60, burst=20))
    still = [f"{c.id}: {c.detail}" for c in after.checks if c.status == "fail" and c.id in failed]
    assert not still
    assert not after.failed
