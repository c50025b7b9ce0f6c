"""--baseline and --write-baseline: accepted findings match by rule and location; only new ones fail."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion.check import probe_report
from bastion.check.baseline import (
    BaselineError,
    Entry,
    check_entry,
    compare,
    probe_entries,
    read_baseline,
    write_baseline,
)
from bastion.check.html import probe_html
from bastion.check.results import CheckResult, ProbeResult
from bastion.cli import app
from tests.conftest import free_port

SPEC = """\
openapi: 3.1.0
info: {title: t, version: '1'}
paths:
  /orders:
    post:
      responses:
        '201': {description: made}
"""
NEW_OPERATION = """\
  /refunds:
    post:
      responses:
        '201': {description: made}
"""


def lint(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["lint", *args])
    return result.exit_code, result.output


# -- matching -----------------------------------------------------------------------------------


def test_a_finding_matches_by_rule_and_location_not_by_message() -> None:
    accepted = [Entry("r", "/paths/~1a/post", "error", "old wording"), Entry("r", "/paths/~1b/post")]
    current = [Entry("r", "/paths/~1a/post", "error", "new wording"), Entry("s", "/paths/~1a/post")]
    diff = compare("b.json", accepted, current)
    assert [e.rule for e in diff.new] == ["s"]
    assert [e.location for e in diff.accepted] == ["/paths/~1a/post"]
    assert [e.location for e in diff.fixed] == ["/paths/~1b/post"]
    assert diff.failed("error")
    assert not compare("b.json", accepted, current[:1]).failed()


def test_a_second_finding_with_one_key_is_new() -> None:
    entry = Entry("r", "/x")
    diff = compare("b.json", [entry], [entry, entry])
    assert len(diff.accepted) == 1
    assert len(diff.new) == 1


def test_only_new_findings_that_reach_fail_on_fail() -> None:
    diff = compare("b.json", [], [Entry("r", "/x", "warning")])
    assert diff.failed("warning")
    assert not diff.failed("error")


entries = st.lists(
    st.builds(Entry, st.sampled_from(["a", "b", "c"]), st.sampled_from(["", "/x", "/y"])), max_size=12
)


@given(entries, entries)
def test_compare_accounts_for_every_finding_once(accepted: list[Entry], current: list[Entry]) -> None:
    diff = compare("b.json", accepted, current)
    assert Counter(e.key for e in diff.new + diff.accepted) == Counter(e.key for e in current)
    assert Counter(e.key for e in diff.accepted + diff.fixed) == Counter(e.key for e in accepted)
    same = compare("b.json", current, current)
    assert not same.new and not same.fixed


def test_a_baseline_round_trips_and_a_bad_one_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    write_baseline(path, "bastion lint", [Entry("r", "/b", "error", "m"), Entry("r", "/a", "warning", "n")])
    assert [e.location for e in read_baseline(path, "bastion lint")] == ["/a", "/b"]
    with pytest.raises(BaselineError, match="bastion lint"):
        read_baseline(path, "bastion probe")
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="not JSON"):
        read_baseline(path, "bastion lint")
    path.write_text(json.dumps({"tool": "bastion lint", "version": 99, "findings": []}))
    with pytest.raises(BaselineError, match="version"):
        read_baseline(path, "bastion lint")
    path.write_text(json.dumps({"tool": "bastion lint", "version": 1, "findings": [{"rule": 1}]}))
    with pytest.raises(BaselineError, match=r"findings\[0\]"):
        read_baseline(path, "bastion lint")
    with pytest.raises(BaselineError, match="cannot read"):
        read_baseline(tmp_path / "missing.json", "bastion lint")


# -- bastion lint -------------------------------------------------------------------------------


def test_lint_fails_on_new_findings_only_and_reports_fixed_ones(tmp_path: Path) -> None:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(SPEC)
    baseline = tmp_path / "lint-baseline.json"
    assert lint(str(spec))[0] == 1
    assert lint(str(spec), "--write-baseline", str(baseline))[0] == 0
    assert json.loads(baseline.read_text())["tool"] == "bastion lint"

    code, out = lint(str(spec), "--baseline", str(baseline))
    assert code == 0, out
    assert "0 new" in out and "passed" in out

    # Lines added above the findings move them; they still match (no line numbers compared).
    spec.write_text(SPEC.replace("paths:\n", "# a comment\n\n\npaths:\n"))
    assert lint(str(spec), "--baseline", str(baseline))[0] == 0

    spec.write_text(SPEC + NEW_OPERATION)
    code, out = lint(str(spec), "--baseline", str(baseline))
    assert code == 1
    assert "new (not in the baseline)" in out
    assert "idempotency-key-declared at /paths/~1refunds/post" in " ".join(out.split())

    spec.write_text(SPEC.replace("/orders", "/refunds") + "")
    code, out = lint(str(spec), "--baseline", str(baseline), "--format", "json")
    report = json.loads(out)
    assert code == 1
    assert report["failed"]
    assert report["baseline"]["fixed_count"] == report["baseline"]["new_count"] > 0
    assert {f["baseline"] for f in report["findings"]} == {"new"}
    assert {f["location"] for f in report["baseline"]["fixed"]} >= {"/paths/~1orders/post"}


def test_lint_junit_and_sarif_with_a_baseline(tmp_path: Path) -> None:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(SPEC)
    baseline = tmp_path / "b.json"
    lint(str(spec), "--write-baseline", str(baseline))
    spec.write_text(SPEC + NEW_OPERATION)

    junit = tmp_path / "lint.xml"
    assert lint(str(spec), "--baseline", str(baseline), "--format", "junit", "-o", str(junit))[0] == 1
    case = ET.parse(junit).getroot().find(".//testcase[@name='idempotency-key-declared']")
    assert case is not None
    failure = case.find("failure")
    assert failure is not None and failure.text is not None
    assert "/refunds" in failure.text and "/orders" not in failure.text.split("fix:")[0]
    out = case.find("system-out")
    assert out is not None and out.text is not None and "accepted in the baseline" in out.text

    sarif_path = tmp_path / "lint.sarif"
    lint(str(spec), "--baseline", str(baseline), "--format", "sarif", "-o", str(sarif_path))
    results = json.loads(sarif_path.read_text())["runs"][0]["results"]
    states = {
        (r["ruleId"], r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]): r["baselineState"]
        for r in results
    }
    assert states[("idempotency-key-declared", "/paths/~1refunds/post")] == "new"
    assert states[("idempotency-key-declared", "/paths/~1orders/post")] == "unchanged"

    spec.write_text(SPEC.replace("post:", "get:"))
    lint(str(spec), "--baseline", str(baseline), "--format", "sarif", "-o", str(sarif_path))
    results = json.loads(sarif_path.read_text())["runs"][0]["results"]
    assert any(r["baselineState"] == "absent" for r in results)


def test_an_unusable_baseline_is_a_usage_error(tmp_path: Path) -> None:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(SPEC)
    wrong = tmp_path / "probe.json"
    write_baseline(wrong, "bastion probe", [])
    code, out = lint(str(spec), "--baseline", str(wrong))
    assert code == 2
    assert "not 'bastion lint'" in " ".join(out.split())
    assert lint(str(spec), "--baseline", str(tmp_path / "missing.json"))[0] == 2


# -- bastion probe ------------------------------------------------------------------------------


def failing(*ids: str) -> ProbeResult:
    checks = [CheckResult(i, "errors", f"{i} for GET /things", "fail", "broke") for i in ids]
    return ProbeResult("http://127.0.0.1:9", None, checks, 3, 0.1)


def test_probe_reports_with_a_baseline() -> None:
    accepted = probe_entries(failing("errors-404-problem", "errors-no-leaks"))
    assert accepted[0].location == "GET /things"
    result = failing("errors-404-problem", "errors-400-problem")
    diff = compare("p.json", accepted, probe_entries(result))
    assert diff.failed()
    data = json.loads(probe_report.probe_json(result, diff))
    assert {c["id"]: c["baseline"] for c in data["checks"]} == {
        "errors-404-problem": "unchanged",
        "errors-400-problem": "new",
    }
    assert data["baseline"]["fixed"][0]["rule"] == "errors-no-leaks"
    root = ET.fromstring(probe_report.probe_junit(result, diff))
    assert root.find(".//testcase[@name='errors-404-problem']/failure") is None
    assert root.find(".//testcase[@name='errors-400-problem']/failure") is not None
    page = probe_html(result, diff)
    assert "accepted in the baseline" in page and "fixed since the baseline" in page
    sarif = json.loads(probe_report.probe_sarif(result, diff))
    states = sorted(r["baselineState"] for r in sarif["runs"][0]["results"])
    assert states == ["absent", "new", "unchanged"]
    assert check_entry(result.checks[1]).key == ("errors-400-problem", "GET /things")


def test_probe_cli_fails_on_new_failures_only(tmp_path: Path) -> None:
    # Nothing listens on the port: the error checks fail the same way every run.
    url = f"http://127.0.0.1:{free_port()}"
    baseline = tmp_path / "probe-baseline.json"
    runner = CliRunner()
    base = ["probe", url, "--max-requests", "30", "--max-seconds", "20"]
    assert runner.invoke(app, base).exit_code == 1
    assert runner.invoke(app, [*base, "--write-baseline", str(baseline)]).exit_code == 0
    written = json.loads(baseline.read_text())
    assert written["tool"] == "bastion probe" and written["findings"]

    result = runner.invoke(app, [*base, "--baseline", str(baseline), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["baseline"]["new_count"] == 0

    # A baseline that lacks one of today's failures: that one is new, and fails the run.
    dropped = written["findings"].pop(0)
    written["findings"].append({"rule": "rate-limit-429", "location": "GET /gone"})
    baseline.write_text(json.dumps(written))
    result = runner.invoke(app, [*base, "--baseline", str(baseline), "--format", "json"])
    assert result.exit_code == 1
    report = json.loads(result.output)
    assert [e["rule"] for e in report["baseline"]["new"]] == [dropped["rule"]]
    assert [e["rule"] for e in report["baseline"]["fixed"]] == ["rate-limit-429"]

    write_baseline(baseline, "bastion lint", [])
    assert runner.invoke(app, [*base, "--baseline", str(baseline)]).exit_code == 2
