"""Rate limit stores: where the state of every key lives, behind one small protocol.

A store decides every rule that matches a request in one atomic step: either all
enforced rules admit the request and each admitting rule records it, or nothing is
recorded anywhere. ``memory`` keeps state in the process; ``redis`` shares it
between processes through one Lua script per request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

from bastion.ratelimit.algorithms import Limit, Verdict


class Check(NamedTuple):
    """One rule to decide for a request: its store key, its limit, the cost and whether it only watches."""

    key: str
    limit: Limit
    cost: int
    shadow: bool


class Decision(NamedTuple):
    """The verdict of every rule, in order, and whether the request is admitted."""

    admitted: bool
    verdicts: list[Verdict]


def admitted(checks: Sequence[Check], verdicts: Sequence[Verdict]) -> bool:
    """Whether a request passes: every rule admits it, or only shadow rules object."""
    for check, verdict in zip(checks, verdicts, strict=True):
        if not verdict.allowed and not check.shadow:
            return False
    return True


class RateLimitStore(Protocol):
    """Holds rate limit state and decides requests against it."""

    #: ``memory`` or ``redis`` (the ``store`` label of the store-error metric).
    name: str
    #: Whether :meth:`decide_now` works (no I/O): the guard then skips the timeout machinery.
    sync: bool

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide without I/O (only for ``sync`` stores)."""

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide every check in one atomic step; ``request_id`` names concurrency leases."""

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        """Free the concurrency slots the request holds."""

    async def start(self) -> None:
        """Open connections and load scripts."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> bool:
        """Whether the store answers now."""


class CircuitBreaker:
    """Stops calling a failing store for a cool-down, then lets one probe through.

    ``closed``: calls go through, consecutive failures are counted. After
    ``failures`` of them the breaker opens: calls are skipped until ``cooldown_s``
    has passed. Then one probe goes through (half-open): success closes the
    breaker, failure opens it again. A probe that never reports (its request was
    cancelled) is replaced by another after a further cool-down.
    """

    def __init__(self, failures: int, cooldown_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.clock = clock
        self.failures = 0
        self.state = "closed"
        self.opened_at = 0.0

    def allow(self) -> bool:
        """Whether to call the store now."""
        if self.state == "closed":
            return True
        now = self.clock()
        if now - self.opened_at >= self.cooldown_s:
            # Half-open: this caller is the probe; others wait for its outcome or another cool-down.
            self.state = "half_open"
            self.opened_at = now
            return True
        return False

    def retry_after_s(self) -> float:
        """Seconds until the next probe may run."""
        return max(0.0, self.cooldown_s - (self.clock() - self.opened_at))

    def success(self) -> None:
        """The store answered: close the breaker."""
        self.failures = 0
        self.state = "closed"

    def failure(self) -> bool:
        """The store failed; returns ``True`` when this failure opened the breaker."""
        self.failures += 1
        if self.state == "half_open" or self.failures >= self.threshold:
            was_closed = self.state == "closed"
            self.state = "open"
            self.opened_at = self.clock()
            return was_closed
        return False
