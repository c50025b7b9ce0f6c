"""The outcome of a probe: one result per check, grouped by pitfall."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bastion.check.probe_checks import check_fix
from bastion.check.remediation import Remediation, operation_named

Status = Literal["pass", "fail", "skip"]
#: Probe pitfalls in report order.
PROBE_PITFALLS = ("idempotency", "errors", "rate-limiting", "validation")


@dataclass(slots=True)
class CheckResult:
    """One probe check: what was tried, whether the API passed, and the evidence."""

    id: str
    pitfall: str
    title: str
    status: Status
    detail: str
    evidence: list[str] = field(default_factory=list)

    @property
    def operation(self) -> str | None:
        """``METHOD /template`` of the operation the check tried, when its title or detail names it."""
        return operation_named(self.title, self.detail)

    @property
    def remediation(self) -> Remediation:
        """The check's fix, for its operation."""
        return check_fix(self.id).at(self.operation)


@dataclass(slots=True)
class ProbeResult:
    """Every check of one probe run, with the traffic it took."""

    base_url: str
    spec: str | None
    checks: list[CheckResult] = field(default_factory=list)
    requests: int = 0
    seconds: float = 0.0
    budget_exhausted: bool = False

    @property
    def failed(self) -> bool:
        """Whether any check failed."""
        return any(c.status == "fail" for c in self.checks)

    def counts(self) -> dict[str, dict[str, int]]:
        """Check counts by pitfall, then status."""
        table = {p: {"pass": 0, "fail": 0, "skip": 0} for p in PROBE_PITFALLS}
        for check in self.checks:
            table.setdefault(check.pitfall, {"pass": 0, "fail": 0, "skip": 0})[check.status] += 1
        return table
