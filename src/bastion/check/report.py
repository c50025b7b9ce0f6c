"""Reports for lint and probe results: a terminal table, JSON, JUnit XML and SARIF.

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
from typing import Any, TypeVar
from xml.etree import ElementTree as ET

import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from bastion.catalog import PITFALLS, RULES
from bastion.check.findings import Finding, Suppressed, reaches
from bastion.check.lint import LintResult
from bastion.check.results import PROBE_PITFALLS, ProbeResult

_SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_STATUS_STYLE = {"pass": "green", "fail": "bold red", "skip": "dim"}
TOOL_URI = "https://bastion.dev/docs/checker"


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


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


# -- lint ---------------------------------------------------------------------------------------


#: Locations the text report shows per rule; the JSON report has them all.
LOCATIONS_PER_RULE = 5


def _counts_table(
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
    result: LintResult, console: Console, *, summary: bool = False, limit: int = LOCATIONS_PER_RULE
) -> None:
    """Print a table by pitfall, then each rule that found something: count, fix hint, first locations.

    The hint is printed once per rule, not once per finding, so a description with
    thousands of findings still reads as one screen per rule. ``summary`` leaves the
    locations out.
    """
    result = printable(result)
    console.print(_counts_table(f"bastion lint {result.source}", PITFALLS, result.counts(), _SEVERITY_STYLE))
    for rule_id, findings in result.by_rule().items():
        rule = RULES[rule_id]
        style = _SEVERITY_STYLE[rule.severity]
        console.print(
            f"\n[{style}]{rule.severity}[/{style}] [bold]{rule_id}[/bold] ({rule.pitfall}): "
            f"{len(findings)} finding(s)",
            highlight=False,
        )
        console.print(f"  fix: {rule.hint}", highlight=False, markup=False, soft_wrap=True)
        if summary:
            continue
        for finding in findings[:limit]:
            where = f"line {finding.line}" if finding.line else "-"
            console.print(
                f"  {where:>11}  {finding.path}: {finding.message}",
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
    verdict = "FAILED" if result.failed else "passed"
    console.print(
        f"\n{len(result.findings)} finding(s) in {result.operations} operation(s), "
        f"{result.seconds:.2f} s; {verdict} (fail on {result.fail_on})"
    )


def _rule_summary(result: LintResult) -> dict[str, dict[str, Any]]:
    return {
        rule_id: {
            "count": len(found),
            "severity": RULES[rule_id].severity,
            "pitfall": RULES[rule_id].pitfall,
            "hint": RULES[rule_id].hint,
        }
        for rule_id, found in result.by_rule().items()
    }


def lint_json(result: LintResult, *, summary: bool = False) -> str:
    """The lint result as JSON: summary, counts by pitfall and by rule, and (unless ``summary``) findings."""
    body: dict[str, Any] = {
        "tool": "bastion lint",
        "source": result.source,
        "operations": result.operations,
        "seconds": round(result.seconds, 3),
        "fail_on": result.fail_on,
        "failed": result.failed,
        "disabled": result.disabled,
        "counts": result.counts(),
        "rules": _rule_summary(result),
        "suppressed_count": len(result.suppressed),
    }
    if not summary:
        body["findings"] = [dataclasses.asdict(f) for f in result.findings]
        body["suppressed"] = [
            {**dataclasses.asdict(s.finding), "reason": s.reason, "ignored_at": s.ignored_at or "/"}
            for s in result.suppressed
        ]
    return _dumps(body)


def _xml(root: ET.Element) -> str:
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def lint_junit(result: LintResult) -> str:
    """JUnit XML: a suite per pitfall and a test case per rule; findings that reach fail_on fail it."""
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
            text = "\n".join(f"{result.source}:{f.line or 0}: {f.path}: {f.message}" for f in findings)
            if reaches(rule.severity, result.fail_on):
                failures += 1
                failure = ET.SubElement(
                    case, "failure", type=rule.severity, message=f"{len(findings)} finding(s): {rule.summary}"
                )
                failure.text = text + f"\nfix: {rule.hint}"
            else:
                ET.SubElement(case, "system-out").text = text
        suite.set("failures", str(failures))
    return _xml(root)


_SARIF_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def lint_sarif(result: LintResult) -> str:
    """SARIF 2.1.0, with one reporting descriptor per rule and a region per finding."""
    rules = list(RULES.values())
    index = {rule.id: i for i, rule in enumerate(rules)}
    results = []
    silenced: list[tuple[Finding, Suppressed | None]] = [(s.finding, s) for s in result.suppressed]
    for finding, suppressed in [*((f, None) for f in result.findings), *silenced]:
        location: dict[str, Any] = {"artifactLocation": {"uri": result.source}}
        if finding.line:
            location["region"] = {"startLine": finding.line}
        sarif_result: dict[str, Any] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": _SARIF_LEVEL[finding.severity],
            "message": {"text": f"{finding.message}. {finding.hint}"},
            "locations": [
                {
                    "physicalLocation": location,
                    "logicalLocations": [{"fullyQualifiedName": finding.pointer, "kind": "member"}],
                }
            ],
        }
        if suppressed is not None:
            # SARIF viewers show these as dismissed in source, with the description's reason.
            sarif_result["suppressions"] = [
                {
                    "kind": "inSource",
                    "justification": suppressed.reason,
                    "location": {"logicalLocations": [{"fullyQualifiedName": suppressed.ignored_at or "/"}]},
                }
            ]
        results.append(sarif_result)
    sarif = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "bastion lint",
                        "informationUri": TOOL_URI,
                        "rules": [
                            {
                                "id": rule.id,
                                "shortDescription": {"text": rule.summary},
                                "help": {"text": rule.hint},
                                "defaultConfiguration": {"level": _SARIF_LEVEL[rule.severity]},
                                "properties": {"pitfall": rule.pitfall},
                            }
                            for rule in rules
                        ],
                    }
                },
                "results": results,
            }
        ],
    }
    return _dumps(sarif)


# -- probe --------------------------------------------------------------------------------------


def probe_text(result: ProbeResult, console: Console) -> None:
    """Print the probe's summary table by pitfall, then every check."""
    result = printable(result)
    title = f"bastion probe {result.base_url}"
    console.print(_counts_table(title, PROBE_PITFALLS, result.counts(), _STATUS_STYLE))
    for pitfall in PROBE_PITFALLS:
        checks = [c for c in result.checks if c.pitfall == pitfall]
        if not checks:
            continue
        console.print(f"\n[bold]{pitfall}[/bold]")
        for check in checks:
            style = _STATUS_STYLE[check.status]
            console.print(
                f"  [{style}]{check.status.upper():<4}[/{style}] {escape(check.title)}", highlight=False
            )
            console.print(f"        {check.detail}", highlight=False, markup=False, soft_wrap=True)
            if check.status == "fail":
                for line in check.evidence[:3]:
                    console.print(f"        > {line}", highlight=False, markup=False, soft_wrap=True)
    verdict = "FAILED" if result.failed else "passed"
    budget = " (request or time budget exhausted)" if result.budget_exhausted else ""
    console.print(f"\n{result.requests} request(s) in {result.seconds:.1f} s{budget}; {verdict}")


def probe_json(result: ProbeResult) -> str:
    """The probe result as JSON."""
    return _dumps(
        {
            "tool": "bastion probe",
            "base_url": result.base_url,
            "spec": result.spec,
            "requests": result.requests,
            "seconds": round(result.seconds, 3),
            "budget_exhausted": result.budget_exhausted,
            "failed": result.failed,
            "counts": result.counts(),
            "checks": [dataclasses.asdict(c) for c in result.checks],
        }
    )


def probe_junit(result: ProbeResult) -> str:
    """JUnit XML: a suite per pitfall and a test case per check."""
    result = printable(result)  # XML 1.0 cannot carry control characters at all
    root = ET.Element("testsuites", name="bastion probe", time=f"{result.seconds:.3f}")
    for pitfall in PROBE_PITFALLS:
        checks = [c for c in result.checks if c.pitfall == pitfall]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"probe.{pitfall}",
            tests=str(len(checks)),
            failures=str(sum(c.status == "fail" for c in checks)),
            skipped=str(sum(c.status == "skip" for c in checks)),
        )
        for check in checks:
            case = ET.SubElement(suite, "testcase", classname=f"probe.{pitfall}", name=check.id)
            if check.status == "fail":
                failure = ET.SubElement(case, "failure", message=check.detail)
                failure.text = "\n".join(check.evidence)
            elif check.status == "skip":
                ET.SubElement(case, "skipped", message=check.detail)
            else:
                ET.SubElement(case, "system-out").text = check.detail
    return _xml(root)
