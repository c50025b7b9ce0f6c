"""Findings: what a lint rule found, where, and how to fix it; and which ones the description ignores."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bastion.catalog import RULES, SEVERITY_RANK, UNIGNORABLE, Pitfall, Severity
from bastion.check.document import Document, Path_, json_path, pointer
from bastion.check.remediation import Remediation, operation_at, rule_remediation

#: The extension that silences rules on an operation, or on the whole description at its root.
IGNORE_KEY = "x-bastion-lint-ignore"


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

    @property
    def operation(self) -> str | None:
        """``METHOD /template`` of the operation the finding lies in, if any."""
        return operation_at(self.pointer)

    @property
    def remediation(self) -> Remediation:
        """The rule's fix for this finding's operation."""
        return rule_remediation(RULES[self.rule]).at(self.operation)


@dataclass(frozen=True, slots=True)
class Suppressed:
    """A finding that an ``x-bastion-lint-ignore`` silenced, with the reason it gives."""

    finding: Finding
    reason: str
    #: JSON pointer of the object carrying the ignore ("" for the root).
    ignored_at: str


@dataclass(slots=True)
class FindingSink:
    """Collects findings once per (rule, place), skipping disabled rules and setting ignored ones aside."""

    doc: Document | None
    disabled: frozenset[str] = frozenset()
    findings: list[Finding] = field(default_factory=list)
    suppressed: list[Suppressed] = field(default_factory=list)
    #: path of an object carrying x-bastion-lint-ignore -> {rule id: reason}
    ignores: dict[Path_, dict[str, str]] = field(default_factory=dict)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def read_ignores(self, node: dict[Any, Any], path: Path_) -> None:
        """Take in the ``x-bastion-lint-ignore`` of the object at ``path``, reporting a malformed one.

        The form is a mapping of rule ids to the reason each does not apply. A list
        (Zally's form) gives no reason, so it is a finding and silences nothing; so is
        an unknown id, so a typo cannot leave a rule running unnoticed.
        """
        declared = node.get(IGNORE_KEY)
        if declared is None:
            return
        where = (*path, IGNORE_KEY)
        if not isinstance(declared, dict):
            self.add(
                "lint-ignore-valid",
                where,
                f"{IGNORE_KEY} must map each rule id to the reason it does not apply "
                "(`{rule-id: reason}`); this one silences nothing",
            )
            return
        accepted: dict[str, str] = {}
        for rule, reason in declared.items():
            if rule not in RULES or rule in UNIGNORABLE:
                why = "cannot be ignored" if rule in UNIGNORABLE else "is not a lint rule"
                # The id is the description's text: quoted, and cut short like any echo.
                self.add(
                    "lint-ignore-valid",
                    (*where, str(rule)),
                    f"{str(rule)[:64]!r} {why}, so it ignores nothing",
                )
            elif not isinstance(reason, str) or not reason.strip():
                self.add(
                    "lint-ignore-valid",
                    (*where, rule),
                    f"ignoring {rule!r} needs a reason (`{rule}: why it does not apply`); it stays on",
                )
            else:
                accepted[rule] = reason.strip()
        if accepted:
            self.ignores[path] = accepted

    def ignored_by(self, rule: str, path: Path_) -> tuple[Path_, str] | None:
        """The nearest object on ``path`` (itself included) that ignores ``rule``, and its reason."""
        if rule in UNIGNORABLE or not self.ignores:
            return None
        for end in range(len(path), -1, -1):
            reasons = self.ignores.get(path[:end])
            if reasons is not None and rule in reasons:
                return path[:end], reasons[rule]
        return None

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
        finding = Finding(
            rule, spec.pitfall, spec.severity, where or "/", json_path(path), line, message, spec.hint
        )
        ignored = self.ignored_by(rule, path)
        if ignored is None:
            self.findings.append(finding)
        else:
            self.suppressed.append(Suppressed(finding, ignored[1], pointer(ignored[0])))


def reaches(severity: str, threshold: str) -> bool:
    """Whether a finding of ``severity`` fails a run whose ``fail_on`` is ``threshold``."""
    return SEVERITY_RANK[severity] >= SEVERITY_RANK[threshold]
