"""Findings: what a lint rule found, where, and how to fix it."""

from __future__ import annotations

from dataclasses import dataclass, field

from bastion.check.document import Document, Path_, json_path, pointer
from bastion.check.rules.catalog import RULES, SEVERITY_RANK, Pitfall, Severity


@dataclass(frozen=True, slots=True)
class Finding:
    """One place where the description misses a rule."""

    rule: str
    pitfall: Pitfall
    severity: Severity
    pointer: str
    path: str
    line: int | None
    message: str
    hint: str


@dataclass(slots=True)
class FindingSink:
    """Collects findings once per (rule, place), skipping disabled rules."""

    doc: Document | None
    disabled: frozenset[str] = frozenset()
    findings: list[Finding] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def enabled(self, rule: str) -> bool:
        """Whether ``rule`` runs."""
        return rule not in self.disabled

    def add(self, rule: str, path: Path_, message: str, *, line: int | None = None) -> None:
        """Record a finding of ``rule`` at ``path`` (once per rule and place)."""
        if rule in self.disabled:
            return
        where = pointer(path)
        if (rule, where) in self._seen:
            return
        self._seen.add((rule, where))
        spec = RULES[rule]
        if line is None and self.doc is not None:
            line = self.doc.line_at(path)
        self.findings.append(
            Finding(
                rule, spec.pitfall, spec.severity, where or "/", json_path(path), line, message, spec.hint
            )
        )


def reaches(severity: str, threshold: str) -> bool:
    """Whether a finding of ``severity`` fails a run whose ``fail_on`` is ``threshold``."""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]
