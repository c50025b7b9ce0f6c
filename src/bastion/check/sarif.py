"""SARIF 2.1.0 for lint findings and failed probe checks, each with its remediation.

A rule's reporting descriptor carries the fix in ``help`` (``text``, and ``markdown``
with the bastion.yaml or ``x-bastion-*`` lines in YAML blocks); each result carries
its own, filled in for its operation, in ``message.markdown`` and
``properties.remediation``. With a baseline, every result has a ``baselineState``
(``new`` or ``unchanged``), and findings the baseline holds but the run no longer
has are results with ``baselineState: absent``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from bastion.catalog import RULES
from bastion.check.findings import Finding, Suppressed
from bastion.check.lint import LintResult
from bastion.check.probe_checks import PROBE_CHECKS, check_fix
from bastion.check.remediation import Remediation, rule_remediation
from bastion.check.results import ProbeResult

if TYPE_CHECKING:
    from bastion.check.baseline import BaselineDiff, Entry

TOOL_URI = "https://bastion.dev/docs/checker"
_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {"error": "error", "warning": "warning", "info": "note"}


def _help(fix: Remediation) -> dict[str, str]:
    return {"text": "\n".join(fix.lines()), "markdown": fix.markdown()}


def _message(text: str, fix: Remediation) -> dict[str, str]:
    return {"text": f"{text}. {fix.text}", "markdown": f"{text}.\n\n{fix.markdown()}"}


def _absent(entry: Entry, rule_index: int | None, location: dict[str, Any]) -> dict[str, Any]:
    """A baseline entry the run no longer finds, as a result SARIF viewers show as fixed."""
    result: dict[str, Any] = {
        "ruleId": entry.rule,
        "level": "none",
        "message": {"text": f"fixed since the baseline: {entry.message or entry.rule}"},
        "baselineState": "absent",
        "locations": [location],
    }
    if rule_index is not None:
        result["ruleIndex"] = rule_index
    return result


def _log(name: str, rules: list[dict[str, Any]], results: list[dict[str, Any]]) -> str:
    sarif = {
        "$schema": _SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {"driver": {"name": name, "informationUri": TOOL_URI, "rules": rules}},
                "results": results,
            }
        ],
    }
    return orjson.dumps(sarif, option=orjson.OPT_INDENT_2).decode()


def lint_sarif(result: LintResult, baseline: BaselineDiff | None = None) -> str:
    """SARIF 2.1.0, with one reporting descriptor per rule and a region per finding."""
    from bastion.check.baseline import finding_entry

    rules = list(RULES.values())
    index = {rule.id: i for i, rule in enumerate(rules)}
    results = []
    silenced: list[tuple[Finding, Suppressed | None]] = [(s.finding, s) for s in result.suppressed]
    for finding, suppressed in [*((f, None) for f in result.findings), *silenced]:
        location: dict[str, Any] = {"artifactLocation": {"uri": result.source}}
        if finding.line:
            location["region"] = {"startLine": finding.line}
        fix = finding.remediation
        sarif_result: dict[str, Any] = {
            "ruleId": finding.rule,
            "ruleIndex": index[finding.rule],
            "level": _LEVEL[finding.severity],
            "message": _message(finding.message, fix),
            "locations": [
                {
                    "physicalLocation": location,
                    "logicalLocations": [{"fullyQualifiedName": finding.pointer, "kind": "member"}],
                }
            ],
            "properties": {"remediation": fix.as_dict()},
        }
        if baseline is not None and suppressed is None:
            sarif_result["baselineState"] = baseline.state(finding_entry(finding))
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
    for entry in baseline.fixed if baseline is not None else []:
        where = {
            "physicalLocation": {"artifactLocation": {"uri": result.source}},
            "logicalLocations": [{"fullyQualifiedName": entry.location, "kind": "member"}],
        }
        results.append(_absent(entry, index.get(entry.rule), where))
    descriptors = [
        {
            "id": rule.id,
            "shortDescription": {"text": rule.summary},
            "help": _help(rule_remediation(rule).at(None)),
            "defaultConfiguration": {"level": _LEVEL[rule.severity]},
            "properties": {"pitfall": rule.pitfall},
        }
        for rule in rules
    ]
    return _log("bastion lint", descriptors, results)


def probe_sarif(result: ProbeResult, baseline: BaselineDiff | None = None) -> str:
    """SARIF 2.1.0 for a probe: a descriptor per known check, a result per failed check.

    A probe has no lines to point at: each result's location is the description
    (``--spec``) or the base URL, with the operation as a logical location.
    """
    from bastion.check.baseline import check_entry

    ids = list(PROBE_CHECKS)
    ids += sorted({c.id for c in result.checks} - set(ids))
    index = {check_id: i for i, check_id in enumerate(ids)}
    titles = {c.id: c.title for c in result.checks}
    uri = result.spec or result.base_url

    def location(operation: str | None) -> dict[str, Any]:
        where: dict[str, Any] = {
            "physicalLocation": {"artifactLocation": {"uri": uri}, "region": {"startLine": 1}}
        }
        if operation:
            where["logicalLocations"] = [{"fullyQualifiedName": operation, "kind": "function"}]
        return where

    results = []
    for check in result.checks:
        if check.status != "fail":
            continue
        fix = check.remediation
        sarif_result: dict[str, Any] = {
            "ruleId": check.id,
            "ruleIndex": index[check.id],
            "level": "error",
            "message": _message(f"{check.title}: {check.detail}", fix),
            "locations": [location(check.operation)],
            "properties": {"remediation": fix.as_dict(), "evidence": check.evidence},
        }
        if baseline is not None:
            sarif_result["baselineState"] = baseline.state(check_entry(check))
        results.append(sarif_result)
    for entry in baseline.fixed if baseline is not None else []:
        results.append(_absent(entry, index.get(entry.rule), location(entry.location)))
    descriptors = []
    for check_id in ids:
        known = PROBE_CHECKS.get(check_id)
        descriptor: dict[str, Any] = {
            "id": check_id,
            "shortDescription": {"text": titles.get(check_id, check_id)},
            "help": _help(check_fix(check_id).at(None)),
            "defaultConfiguration": {"level": "error"},
        }
        if known is not None:
            descriptor["properties"] = {"pitfall": known.pitfall}
        descriptors.append(descriptor)
    return _log("bastion probe", descriptors, results)
