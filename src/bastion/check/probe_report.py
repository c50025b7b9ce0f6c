"""Reports for probe results: a terminal table, JSON, JUnit XML and SARIF, each failure with its fix.

They share the lint reports' helpers (:mod:`bastion.check.report`): the text and
JUnit reports show a copy made :func:`~bastion.check.report.printable`, since the
server under probe is untrusted.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any
from xml.etree import ElementTree as ET

from rich.console import Console
from rich.markup import escape

from bastion.check.report import baseline_text, counts_table, dumps, printable, terminal_safe, xml_document
from bastion.check.results import PROBE_PITFALLS, ProbeResult

if TYPE_CHECKING:
    from bastion.check.baseline import BaselineDiff

_STATUS_STYLE = {"pass": "green", "fail": "bold red", "skip": "dim"}


def probe_text(result: ProbeResult, console: Console, baseline: BaselineDiff | None = None) -> None:
    """Print the probe's summary table by pitfall, then every check; a failed one with its fix.

    With ``baseline``, a failure the baseline accepts is marked so, the new and fixed
    failures follow, and only new ones decide the verdict.
    """
    from bastion.check.baseline import check_entry

    result = printable(result)
    title = f"bastion probe {result.base_url}"
    console.print(counts_table(title, PROBE_PITFALLS, result.counts(), _STATUS_STYLE))
    for pitfall in PROBE_PITFALLS:
        checks = [c for c in result.checks if c.pitfall == pitfall]
        if not checks:
            continue
        console.print(f"\n[bold]{pitfall}[/bold]")
        for check in checks:
            style = _STATUS_STYLE[check.status]
            accepted = (
                check.status == "fail" and baseline is not None and not baseline.is_new(check_entry(check))
            )
            mark = " (accepted in the baseline)" if accepted else ""
            console.print(
                f"  [{style}]{check.status.upper():<4}[/{style}] {escape(check.title)}{mark}", highlight=False
            )
            console.print(f"        {check.detail}", highlight=False, markup=False, soft_wrap=True)
            if check.status == "fail":
                for line in check.evidence[:3]:
                    console.print(f"        > {line}", highlight=False, markup=False, soft_wrap=True)
                for line in check.remediation.lines():
                    console.print(f"        {line}", highlight=False, markup=False, soft_wrap=True)
    failed = result.failed if baseline is None else baseline.failed()
    if baseline is not None:
        baseline_text(baseline, console)
    verdict = "FAILED" if failed else "passed"
    budget = " (request or time budget exhausted)" if result.budget_exhausted else ""
    console.print(f"\n{result.requests} request(s) in {result.seconds:.1f} s{budget}; {verdict}")


def probe_json(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """The probe result as JSON: every check with its operation and remediation."""
    from bastion.check.baseline import check_entry

    checks = []
    for check in result.checks:
        item = {
            **dataclasses.asdict(check),
            "operation": check.operation,
            "remediation": check.remediation.as_dict(),
        }
        if baseline is not None and check.status == "fail":
            item["baseline"] = baseline.state(check_entry(check))
        checks.append(item)
    body: dict[str, Any] = {
        "tool": "bastion probe",
        "base_url": result.base_url,
        "spec": result.spec,
        "requests": result.requests,
        "seconds": round(result.seconds, 3),
        "budget_exhausted": result.budget_exhausted,
        "failed": result.failed if baseline is None else baseline.failed(),
        "counts": result.counts(),
        "checks": checks,
    }
    if baseline is not None:
        body["baseline"] = baseline.as_dict()
    return dumps(body)


def probe_junit(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """JUnit XML: a suite per pitfall and a test case per check; a failure's body ends with its fix.

    With ``baseline``, a failure the baseline accepts is not a JUnit failure: its
    detail goes to the test case's output, marked as accepted.
    """
    from bastion.check.baseline import check_entry

    result = printable(result)  # XML 1.0 cannot carry control characters at all
    root = ET.Element("testsuites", name="bastion probe", time=f"{result.seconds:.3f}")
    for pitfall in PROBE_PITFALLS:
        checks = [c for c in result.checks if c.pitfall == pitfall]
        failing = [
            c for c in checks if c.status == "fail" and (baseline is None or baseline.is_new(check_entry(c)))
        ]
        suite = ET.SubElement(
            root,
            "testsuite",
            name=f"probe.{pitfall}",
            tests=str(len(checks)),
            failures=str(len(failing)),
            skipped=str(sum(c.status == "skip" for c in checks)),
        )
        for check in checks:
            case = ET.SubElement(suite, "testcase", classname=f"probe.{pitfall}", name=check.id)
            if check in failing:
                failure = ET.SubElement(case, "failure", message=check.detail)
                failure.text = "\n".join([*check.evidence, *check.remediation.lines()])
            elif check.status == "fail":
                ET.SubElement(case, "system-out").text = f"accepted in the baseline: {check.detail}"
            elif check.status == "skip":
                ET.SubElement(case, "skipped", message=check.detail)
            else:
                ET.SubElement(case, "system-out").text = check.detail
        fixed = [e for e in (baseline.fixed if baseline else []) if _probe_pitfall(e.rule) == pitfall]
        if fixed:
            ET.SubElement(suite, "system-out").text = "\n".join(
                terminal_safe(f"fixed since the baseline: {e.rule} {e.location}".rstrip()) for e in fixed
            )
    return xml_document(root)


def _probe_pitfall(check_id: str) -> str:
    from bastion.check.probe_checks import PROBE_CHECKS

    check = PROBE_CHECKS.get(check_id)
    return check.pitfall if check is not None else ""


def probe_sarif(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """SARIF 2.1.0 (see :func:`bastion.check.sarif.probe_sarif`)."""
    from bastion.check.sarif import probe_sarif as sarif

    return sarif(result, baseline)
