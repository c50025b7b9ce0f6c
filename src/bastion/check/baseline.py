"""Baselines: the findings a team has accepted, so CI fails on regressions only.

``--write-baseline FILE`` records the current findings of ``bastion lint`` or
``bastion probe``; ``--baseline FILE`` compares a run with them. A finding matches a
baseline entry by its rule (or check) id and its location: the JSON pointer of a
lint finding (which names the operation or component), the ``METHOD /template`` of
a probe check (empty when the check names none). Messages and line numbers are not
compared, so rewording a message or adding lines above a finding changes nothing.
Only new findings fail the run; baseline entries no longer found are reported as
fixed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import orjson

from bastion.check.findings import Finding, reaches
from bastion.check.results import CheckResult, ProbeResult

Tool = Literal["bastion lint", "bastion probe"]
#: The layout of a baseline file; a file of another version is refused.
BASELINE_VERSION = 1


class BaselineError(Exception):
    """The baseline file cannot be used."""


@dataclass(frozen=True, slots=True)
class Entry:
    """One accepted finding: what matches (rule, location) and what helps a reader (the rest)."""

    rule: str
    location: str
    severity: str = "error"
    message: str = ""

    @property
    def key(self) -> tuple[str, str]:
        """What a finding is matched by."""
        return self.rule, self.location


def finding_entry(finding: Finding) -> Entry:
    """The baseline entry of a lint finding."""
    return Entry(finding.rule, finding.pointer, finding.severity, finding.message)


def check_entry(check: CheckResult) -> Entry:
    """The baseline entry of a failed probe check."""
    return Entry(check.id, check.operation or "", "error", check.detail)


def probe_entries(result: ProbeResult) -> list[Entry]:
    """The entries of a probe run: one per failed check."""
    return [check_entry(c) for c in result.checks if c.status == "fail"]


def write_baseline(path: Path, tool: Tool, entries: list[Entry]) -> None:
    """Write ``entries`` as the accepted findings of ``tool``, sorted so the file diffs well."""
    ordered = sorted(entries, key=lambda e: e.key)
    body = {
        "tool": tool,
        "version": BASELINE_VERSION,
        "findings": [
            {"rule": e.rule, "location": e.location, "severity": e.severity, "message": e.message}
            for e in ordered
        ],
    }
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2) + b"\n")


def read_baseline(path: Path, tool: Tool) -> list[Entry]:
    """The entries of the baseline file at ``path``, written by ``tool``."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise BaselineError(f"cannot read the baseline {path}: {exc.strerror}") from None
    except orjson.JSONDecodeError as exc:
        raise BaselineError(f"the baseline {path} is not JSON: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("findings"), list):
        raise BaselineError(f"the baseline {path} has no findings list; write one with --write-baseline")
    if data.get("tool") != tool:
        raise BaselineError(f"the baseline {path} was written by {data.get('tool')!r}, not {tool!r}")
    if data.get("version") != BASELINE_VERSION:
        raise BaselineError(f"the baseline {path} is version {data.get('version')!r}, not {BASELINE_VERSION}")
    entries = []
    for i, item in enumerate(data["findings"]):
        if not (
            isinstance(item, dict)
            and isinstance(item.get("rule"), str)
            and isinstance(item.get("location"), str)
        ):
            raise BaselineError(f"the baseline {path}: findings[{i}] needs a string rule and location")
        entries.append(
            Entry(item["rule"], item["location"], str(item.get("severity", "")), str(item.get("message", "")))
        )
    return entries


@dataclass(slots=True)
class BaselineDiff:
    """A run compared with its baseline: new, accepted (still there) and fixed findings."""

    file: str
    new: list[Entry] = field(default_factory=list)
    accepted: list[Entry] = field(default_factory=list)
    fixed: list[Entry] = field(default_factory=list)

    def is_new(self, entry: Entry) -> bool:
        """Whether ``entry`` is a finding the baseline does not hold."""
        return entry.key in {e.key for e in self.new}

    def state(self, entry: Entry) -> Literal["new", "unchanged"]:
        """``new`` or ``unchanged`` (the SARIF ``baselineState`` words)."""
        return "new" if self.is_new(entry) else "unchanged"

    def failed(self, fail_on: str = "info") -> bool:
        """Whether a new finding reaches ``fail_on``."""
        return any(reaches(e.severity, fail_on) for e in self.new)

    def as_dict(self) -> dict[str, object]:
        """The comparison as plain data for JSON."""

        def listed(entries: list[Entry]) -> list[dict[str, str]]:
            return [{"rule": e.rule, "location": e.location, "message": e.message} for e in entries]

        return {
            "file": self.file,
            "new_count": len(self.new),
            "accepted_count": len(self.accepted),
            "fixed_count": len(self.fixed),
            "new": listed(self.new),
            "fixed": listed(self.fixed),
        }

    def summary(self) -> str:
        """One line: how the run compares with the baseline."""
        return (
            f"baseline {self.file}: {len(self.new)} new, {len(self.accepted)} accepted, "
            f"{len(self.fixed)} fixed"
        )


def compare(file: str, accepted: list[Entry], current: list[Entry]) -> BaselineDiff:
    """Compare the ``current`` findings with the ``accepted`` ones, matching by rule and location.

    Counts matter: a baseline entry absorbs one current finding with its key, so a
    second finding of the same rule at the same place is new.
    """
    remaining = Counter(e.key for e in accepted)
    diff = BaselineDiff(file)
    for entry in current:
        if remaining[entry.key] > 0:
            remaining[entry.key] -= 1
            diff.accepted.append(entry)
        else:
            diff.new.append(entry)
    for entry in accepted:
        if remaining[entry.key] > 0:
            remaining[entry.key] -= 1
            diff.fixed.append(entry)
    return diff
