"""The lint report a newcomer reads: findings by rule with one fix hint each, --summary, ignores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bastion.check.lint import lint_text
from bastion.cli import app

SPECS = Path("/work/shared/specs")


def _description(operations: int, extra: str = "", op_extra: str = "") -> str:
    """``operations`` POST operations with no Idempotency-Key, each also missing 409, 429 and 500."""
    lines = ["openapi: 3.1.0", "info: {title: t, version: '1'}", extra, "paths:"]
    for n in range(operations):
        lines += [
            f"  /things{n}:",
            "    post:",
            f"      operationId: make{n}",
            op_extra if n == 0 else "",
            "      responses:",
            "        '201': {description: made}",
        ]
    return "\n".join(line for line in lines if line) + "\n"


def _lint(tmp_path: Path, text: str, *args: str) -> tuple[int, str]:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(text)
    result = CliRunner().invoke(app, ["lint", str(spec), *args], env={"COLUMNS": "400"})
    return result.exit_code, result.output


def test_text_groups_findings_by_rule_with_count_hint_once_and_first_locations(tmp_path: Path) -> None:
    code, out = _lint(tmp_path, _description(8))
    assert code == 1
    assert "idempotency-key-declared (idempotency): 8 finding(s)" in out
    assert out.count("x-bastion-idempotency: required` to the operation") == 1  # the hint, once
    section = out.split("idempotency-key-declared (idempotency)")[1].split("\n\n")[0]
    # The first 5 locations, and the first finding's operation in the fix's `idempotency.require`.
    assert section.count("POST /things") == 6
    assert "... and 3 more" in section
    assert "rate-limit-429-documented (rate-limiting): 8 finding(s)" in out


def test_summary_shows_counts_and_hints_without_locations(tmp_path: Path) -> None:
    code, out = _lint(tmp_path, _description(8), "--summary")
    assert code == 1
    assert "idempotency-key-declared (idempotency): 8 finding(s)" in out
    assert "fix: Add `x-bastion-idempotency: required`" in out
    assert "POST /things" not in out
    assert "line " not in out
    code, out = _lint(tmp_path, _description(8), "--summary", "--format", "json")
    report = json.loads(out)
    assert "findings" not in report
    assert report["rules"]["idempotency-key-declared"]["count"] == 8
    assert "x-bastion-idempotency" in report["rules"]["idempotency-key-declared"]["hint"]
    code, out = _lint(tmp_path, _description(1), "--summary", "--format", "sarif")
    assert code == 2


def test_operation_ignore_with_reasons_suppresses_and_is_reported(tmp_path: Path) -> None:
    ignore = (
        "      x-bastion-lint-ignore:\n"
        "        idempotency-key-declared: deduplicated by the cart id\n"
        "        idempotency-conflict-documented: deduplicated by the cart id"
    )
    text = _description(2, op_extra=ignore)
    result = lint_text(text)
    unsafe = {"idempotency-key-declared", "idempotency-conflict-documented"}
    assert [f.finding.path for f in result.suppressed if f.finding.rule in unsafe] == [
        "$.paths['/things0'].post",
        "$.paths['/things0'].post.responses",
    ]
    assert {f.reason for f in result.suppressed} == {"deduplicated by the cart id"}
    # The other operation is still reported, and so is every other rule on the first one.
    assert [f.path for f in result.findings if f.rule == "idempotency-key-declared"] == [
        "$.paths['/things1'].post"
    ]
    assert any(f.rule == "rate-limit-429-documented" and "/things0" in f.path for f in result.findings)
    _, out = _lint(tmp_path, text)
    assert "2 finding(s) suppressed by x-bastion-lint-ignore" in out
    _, out = _lint(tmp_path, text, "--format", "sarif")
    results = json.loads(out)["runs"][0]["results"]
    silenced = [r for r in results if "suppressions" in r]
    assert len(silenced) == 2
    assert silenced[0]["suppressions"][0]["kind"] == "inSource"
    assert silenced[0]["suppressions"][0]["justification"] == "deduplicated by the cart id"
    assert all("suppressions" not in r for r in results if r not in silenced)
    _, out = _lint(tmp_path, text, "--format", "json")
    assert json.loads(out)["suppressed_count"] == 2


def test_root_ignore_covers_every_operation_and_suppressed_errors_do_not_fail(tmp_path: Path) -> None:
    ignore = (
        "x-bastion-lint-ignore:\n"
        "  idempotency-key-declared: a gateway in front adds the key\n"
        "  error-500-documented: documented in the portal\n"
        "  rate-limit-429-documented: documented in the portal\n"
        "  idempotency-conflict-documented: a gateway in front adds the key"
    )
    result = lint_text(_description(3, extra=ignore))
    assert result.findings == []
    assert len(result.suppressed) == 12
    assert not result.failed


@pytest.mark.parametrize(
    ("ignore", "message"),
    [
        ("x-bastion-lint-ignore: [idempotency-key-declared]", "must map each rule id"),
        ("x-bastion-lint-ignore: {idempotency-key-declard: typo}", "is not a lint rule"),
        ("x-bastion-lint-ignore: {idempotency-key-declared: ''}", "needs a reason"),
        ("x-bastion-lint-ignore: {lint-ignore-valid: no}", "cannot be ignored"),
    ],
)
def test_a_malformed_ignore_is_a_warning_and_silences_nothing(ignore: str, message: str) -> None:
    result = lint_text(_description(1, extra=ignore))
    [problem] = [f for f in result.findings if f.rule == "lint-ignore-valid"]
    assert problem.severity == "warning"
    assert message in problem.message
    assert problem.line == 3
    assert any(f.rule == "idempotency-key-declared" for f in result.findings)
    assert result.suppressed == []


@pytest.mark.parametrize("name", ["stripe_spec3.yaml", "twilio_api_v2010.yaml"])
def test_real_descriptions_give_a_report_of_a_sensible_size(name: str, tmp_path: Path) -> None:
    if not (SPECS / name).is_file():
        pytest.skip("the shared descriptions are not present")
    result = CliRunner().invoke(app, ["lint", str(SPECS / name)], env={"COLUMNS": "400"})
    lines = result.output.splitlines()
    assert len(lines) < 150, len(lines)
    assert "... and" in result.output
