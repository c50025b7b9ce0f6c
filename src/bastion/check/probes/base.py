"""What every probe shares: the client, the target, the sampler and the list of results."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from bastion.check.probes.client import ProbeClient
from bastion.check.probes.payloads import SchemaSampler
from bastion.check.probes.target import TargetAPI
from bastion.check.results import CheckResult, Status


@dataclass(slots=True)
class ProbeContext:
    """The state one probe run passes to each pitfall's probes."""

    client: ProbeClient
    target: TargetAPI | None
    sampler: SchemaSampler
    burst: int = 0
    checks: list[CheckResult] = field(default_factory=list)
    on_step: Callable[[str], None] = lambda _label: None

    def add(
        self,
        check_id: str,
        pitfall: str,
        title: str,
        status: Status,
        detail: str,
        evidence: Iterable[str] = (),
    ) -> None:
        """Record the result of one check."""
        self.checks.append(CheckResult(check_id, pitfall, title, status, detail, list(evidence)))

    def step(self, label: str) -> None:
        """Tell the progress display what is being probed now."""
        self.on_step(label)

    def has(self, check_id: str) -> bool:
        """Whether ``check_id`` already has a result."""
        return any(c.id == check_id for c in self.checks)


def new_key() -> str:
    """A fresh idempotency key."""
    return f"bastion-probe-{uuid.uuid4()}"
