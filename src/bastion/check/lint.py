"""``bastion lint``: audit an OpenAPI description for the four pitfalls, in one pass.

The description is parsed once (the C YAML parser when available) with the line
of every member kept; the rules walk the operations once and the schemas a
request can reach once each. A description that cannot be parsed, or that holds
broken ``$ref``s, gives findings, never a crash.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from bastion.catalog import PITFALLS, RULES
from bastion.check.document import Document, ParseError, load_file, load_text, no_gc
from bastion.check.findings import Finding, FindingSink, Suppressed, reaches
from bastion.check.rules.business_rules import check_business_rules
from bastion.check.rules.operations import OperationRules
from bastion.config.check import LintConfig


@dataclass(slots=True)
class LintResult:
    """The outcome of linting one description."""

    source: str
    findings: list[Finding]
    fail_on: str
    operations: int = 0
    seconds: float = 0.0
    disabled: list[str] = field(default_factory=list)
    #: Findings silenced by an ``x-bastion-lint-ignore``: reported apart, never failing the run.
    suppressed: list[Suppressed] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        """Whether a finding reaches ``fail_on``."""
        return any(reaches(f.severity, self.fail_on) for f in self.findings)

    def counts(self) -> dict[str, dict[str, int]]:
        """Finding counts by pitfall, then severity."""
        table: dict[str, dict[str, int]] = {p: {"error": 0, "warning": 0, "info": 0} for p in PITFALLS}
        for finding in self.findings:
            table[finding.pitfall][finding.severity] += 1
        return table

    def by_rule(self) -> dict[str, list[Finding]]:
        """The findings grouped by rule id, rules in catalog order (which goes pitfall by pitfall)."""
        groups: dict[str, list[Finding]] = {rule: [] for rule in RULES}
        for finding in self.findings:
            groups[finding.rule].append(finding)
        return {rule: found for rule, found in groups.items() if found}


def lint_document(
    doc: Document | ParseError, config: LintConfig | None = None, source: str = ""
) -> LintResult:
    """Apply every enabled rule to a parsed description."""
    config = config or LintConfig()
    started = time.perf_counter()
    disabled = frozenset(config.disable)
    operations = 0
    if isinstance(doc, ParseError):
        sink = FindingSink(None, disabled)
        sink.add("spec-parse-error", (), f"not valid YAML or JSON: {doc.message}", line=doc.line)
    else:
        source = source or doc.source
        sink = FindingSink(doc, disabled)
        if doc.alias_problem is not None:
            sink.add("spec-aliases", (), doc.alias_problem)
        with no_gc():
            operations = OperationRules(doc, sink).run()
            check_business_rules(doc, sink)
    order = {p: i for i, p in enumerate(PITFALLS)}
    rank = {"error": 0, "warning": 1, "info": 2}
    findings = sorted(sink.findings, key=lambda f: (order[f.pitfall], rank[f.severity], f.line or 0, f.rule))
    return LintResult(
        source,
        findings,
        config.fail_on,
        operations,
        time.perf_counter() - started,
        sorted(disabled),
        sink.suppressed,
    )


def lint_file(path: str | Path, config: LintConfig | None = None) -> LintResult:
    """Lint the description in the file at ``path``."""
    started = time.perf_counter()
    result = lint_document(load_file(path), config, str(path))
    result.seconds = time.perf_counter() - started
    return result


def lint_text(text: str, config: LintConfig | None = None) -> LintResult:
    """Lint a description given as YAML or JSON text."""
    return lint_document(load_text(text), config, "<string>")


__all__ = ["RULES", "LintResult", "lint_document", "lint_file", "lint_text"]
