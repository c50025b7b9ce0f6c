"""Reports for lint results (a terminal table, JSON, JUnit XML, SARIF) and what every report shares.

JSON is for scripts, JUnit for CI test tabs (one test case per rule or check),
SARIF 2.1.0 for code-scanning views that annotate the description's lines.

Findings and checks quote what the description and the server under probe said
(keys, reason phrases, header values, body excerpts). The text and JUnit reports
render a copy of the result with terminal control sequences and other control
characters taken out (:func:`printable`), so no server can retitle, clear or
rewrite the user's terminal; JSON and SARIF keep every character, escaped.
"""

from __future__ import annotations

import dataclasses
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar
from xml.etree import ElementTree as ET

import orjson
from rich.console import Console
from rich.table import Table

from bastion.catalog import PITFALLS, RULES
from bastion.check.findings import Finding, reaches
from bastion.check.lint import LintResult
from bastion.check.remediation import Remediation, rule_remediation

if TYPE_CHECKING:
    from bastion.check.baseline import BaselineDiff

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}


_T = TypeVar("_T")

# ANSI/ECMA-48 sequences whole (so their parameters do not survive as text), then any other
# C0 or C1 control character but tab and newline. An OSC or string sequence goes whole only
# when it is terminated on its line; otherwise just its introducer goes and the rest stays
# visible, so an unterminated one cannot hide the text after it.
_CONTROLS = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"  # CSI
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)"  # OSC, DCS...
    r"|\x1b[ -/]*[0-~]?"  # any other escape sequence
    r"|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
#: Every sequence above starts with one of these: a cheap test that most strings pass clean.
_CONTROL_CHAR = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def terminal_safe(text: str) -> str:
    """``text`` without terminal control sequences or control characters (tab and newline stay)."""
    return _CONTROLS.sub("", text) if _CONTROL_CHAR.search(text) else text


def printable(value: _T) -> _T:
    """A result (dataclasses, lists, strings) with every string made :func:`terminal_safe`.

    Only what changes is copied: a clean result comes back as the same objects.
    """
    if isinstance(value, str):
        return terminal_safe(value)  # type: ignore[return-value]
    if isinstance(value, list):
        items = [printable(item) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return items if changed else value  # type: ignore[return-value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {}
        for member in dataclasses.fields(value):
            old = getattr(value, member.name)
            new = printable(old)
            if new is not old and member.init:
                changes[member.name] = new
        return dataclasses.replace(value, **changes) if changes else value
    return value


def dumps(value: Any) -> str:
    """``value`` as indented JSON text."""
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


# -- lint ---------------------------------------------------------------------------------------


#: Locations the text report shows per rule; the JSON report has them all.
LOCATIONS_PER_RULE = 5


def counts_table(
    title: str, pitfalls: Sequence[str], counts: Mapping[str, Mapping[str, int]], styles: Mapping[str, str]
) -> Table:
    """A pitfall per row, a column per outcome (``styles``' keys, in order), the counts in the cells."""
    table = Table(title=title, title_justify="left")
    table.add_column("pitfall")
    for outcome, style in styles.items():
        table.add_column(outcome, justify="right", style=style)
    for pitfall in pitfalls:
        row = counts[pitfall]
        table.add_row(pitfall, *(str(row[outcome]) for outcome in styles))
    return table


def lint_text(
    result: LintResult,
    console: Console,
    *,
    summary: bool = False,
    limit: int = LOCATIONS_PER_RULE,
    baseline: BaselineDiff | None = None,
) -> None:
    """Print a table by pitfall, then each rule that found something: count, fix, first locations.

    The fix (the hint, then the bastion.yaml or ``x-bastion-*`` lines for the first
    finding's operation) is printed once per rule, not once per finding, so a
    description with thousands of findings still reads as one screen per rule.
    ``summary`` leaves the locations out. With ``baseline``, the new and fixed
    findings follow, and only new ones decide the verdict.
    """
    from bastion.check.baseline import finding_entry

    result = printable(result)
    console.print(counts_table(f"bastion lint {result.source}", PITFALLS, result.counts(), _SEVERITY_STYLE))
    for rule_id, findings in result.by_rule().items():
        rule = RULES[rule_id]
        style = _SEVERITY_STYLE[rule.severity]
        console.print(
            f"\n[{style}]{rule.severity}[/{style}] [bold]{rule_id}[/bold] ({rule.pitfall}): "
            f"{len(findings)} finding(s)",
            highlight=False,
        )
        for line in _rule_fix(findings, summary).lines():
            console.print(f"  {line}", highlight=False, markup=False, soft_wrap=True)
        if summary:
            continue
        for finding in findings[:limit]:
            where = f"line {finding.line}" if finding.line else "-"
            new = "NEW " if baseline is not None and baseline.is_new(finding_entry(finding)) else ""
            console.print(
                f"  {where:>11}  {new}{finding.path}: {finding.message}",
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if len(findings) > limit:
            console.print(f"  {'':11}  ... and {len(findings) - limit} more (--format json lists all)")
    if result.suppressed:
        console.print(
            f"\n{len(result.suppressed)} finding(s) suppressed by x-bastion-lint-ignore", highlight=False
        )
    failed = result.failed if baseline is None else baseline.failed(result.fail_on)
    if baseline is not None:
        baseline_text(baseline, console)
    verdict = "FAILED" if failed else "passed"
    console.print(
        f"\n{len(result.findings)} finding(s) in {result.operations} operation(s), "
        f"{result.seconds:.2f} s; {verdict} (fail on {result.fail_on}"
        f"{', new findings only' if baseline is not None else ''})"
    )


#: Entries the text report lists per baseline section (new, fixed); JSON has them all.
BASELINE_LIST = 20


def baseline_text(diff: BaselineDiff, console: Console) -> None:
    """Print how a run compares with its baseline: the counts, then the new and the fixed findings.

    Entries quote the description, the server and the baseline file: shown terminal-safe.
    """
    console.print(f"\n{terminal_safe(diff.summary())}", highlight=False, markup=False)
    for title, entries in (("new (not in the baseline)", diff.new), ("fixed since the baseline", diff.fixed)):
        if not entries:
            continue
        console.print(f"  {title}:", highlight=False, markup=False)
        for entry in entries[:BASELINE_LIST]:
            where = f" at {entry.location}" if entry.location else ""
            console.print(
                terminal_safe(f"    {entry.rule}{where}: {entry.message}"),
                highlight=False,
                markup=False,
                soft_wrap=True,
            )
        if len(entries) > BASELINE_LIST:
            console.print(f"    ... and {len(entries) - BASELINE_LIST} more (--format json lists all)")


def _rule_fix(findings: list[Finding], summary: bool) -> Remediation:
    """A rule's fix for its first finding's operation; for none in a summary, which names no place."""
    if summary:
        return rule_remediation(RULES[findings[0].rule]).at(None)
    return findings[0].remediation


def _rule_summary(result: LintResult, summary: bool) -> dict[str, dict[str, Any]]:
    return {
        rule_id: {
            "count": len(found),
            "severity": RULES[rule_id].severity,
            "pitfall": RULES[rule_id].pitfall,
            "hint": RULES[rule_id].hint,
            "remediation": _rule_fix(found, summary).as_dict(),
        }
        for rule_id, found in result.by_rule().items()
    }


def finding_dict(finding: Finding, baseline: BaselineDiff | None = None) -> dict[str, Any]:
    """One finding as JSON: its members, its operation and its remediation (and baseline state)."""
    item = {
        **dataclasses.asdict(finding),
        "operation": finding.operation,
        "remediation": finding.remediation.as_dict(),
    }
    if baseline is not None:
        from bastion.check.baseline import finding_entry

        item["baseline"] = baseline.state(finding_entry(finding))
    return item


def lint_json(result: LintResult, *, summary: bool = False, baseline: BaselineDiff | None = None) -> str:
    """The lint result as JSON: summary, counts by pitfall and by rule, and (unless ``summary``) findings."""
    body: dict[str, Any] = {
        "tool": "bastion lint",
        "source": result.source,
        "operations": result.operations,
        "seconds": round(result.seconds, 3),
        "fail_on": result.fail_on,
        "failed": result.failed if baseline is None else baseline.failed(result.fail_on),
        "disabled": result.disabled,
        "counts": result.counts(),
        "rules": _rule_summary(result, summary),
        "suppressed_count": len(result.suppressed),
    }
    if baseline is not None:
        body["baseline"] = baseline.as_dict()
    if not summary:
        body["findings"] = [finding_dict(f, baseline) for f in result.findings]
        body["suppressed"] = [
            {**dataclasses.asdict(s.finding), "reason": s.reason, "ignored_at": s.ignored_at or "/"}
            for s in result.suppressed
        ]
    return dumps(body)


def xml_document(root: ET.Element) -> str:
    """``root`` as an indented XML document with its declaration."""
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def lint_junit(result: LintResult, baseline: BaselineDiff | None = None) -> str:
    """JUnit XML: a suite per pitfall and a test case per rule; findings that reach fail_on fail it.

    The failure's body lists the findings, then the fix. With ``baseline``, only new
    findings fail a test case; accepted ones are listed in its output, and findings
    the baseline holds but the run no longer has are listed in their suite's output.
    """
    from bastion.check.baseline import finding_entry

    result = printable(result)  # XML 1.0 cannot carry control characters at all
    root = ET.Element("testsuites", name="bastion lint", time=f"{result.seconds:.3f}")
    by_rule: dict[str, list[Finding]] = defaultdict(list)
    for finding in result.findings:
        by_rule[finding.rule].append(finding)
    for pitfall in PITFALLS:
        rules = [r for r in RULES.values() if r.pitfall == pitfall and r.id not in result.disabled]
        suite = ET.SubElement(root, "testsuite", name=f"lint.{pitfall}", tests=str(len(rules)))
        failures = 0
        for rule in rules:
            case = ET.SubElement(suite, "testcase", classname=f"lint.{pitfall}", name=rule.id)
            findings = by_rule.get(rule.id, [])
            if not findings:
                continue
            new = [f for f in findings if baseline is None or baseline.is_new(finding_entry(f))]
            old = [f for f in findings if f not in new]
            text = "\n".join(f"{result.source}:{f.line or 0}: {f.path}: {f.message}" for f in new)
            accepted = "\n".join(
                f"accepted in the baseline: {result.source}:{f.line or 0}: {f.path}: {f.message}" for f in old
            )
            if new and reaches(rule.severity, result.fail_on):
                failures += 1
                failure = ET.SubElement(
                    case, "failure", type=rule.severity, message=f"{len(new)} finding(s): {rule.summary}"
                )
                failure.text = "\n".join([text, *new[0].remediation.lines()])
                if accepted:
                    ET.SubElement(case, "system-out").text = accepted
            else:
                ET.SubElement(case, "system-out").text = "\n".join(t for t in (text, accepted) if t)
        suite.set("failures", str(failures))
        fixed = [e for e in (baseline.fixed if baseline else []) if _pitfall_of(e.rule) == pitfall]
        if fixed:
            ET.SubElement(suite, "system-out").text = "\n".join(
                terminal_safe(f"fixed since the baseline: {e.rule} at {e.location}") for e in fixed
            )
    return xml_document(root)


def lint_sarif(result: LintResult, baseline: BaselineDiff | None = None) -> str:
    """SARIF 2.1.0 (see :func:`bastion.check.sarif.lint_sarif`)."""
    from bastion.check.sarif import lint_sarif as sarif

    return sarif(result, baseline)


def _pitfall_of(rule_id: str) -> str:
    rule = RULES.get(rule_id)
    return rule.pitfall if rule is not None else "description"
