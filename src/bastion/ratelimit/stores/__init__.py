"""Rate limit stores: where the state of every key lives, behind one small protocol.

A store decides every rule that matches a request in one atomic step: either all
enforced rules admit the request and each admitting rule records it, or nothing is
recorded anywhere. ``memory`` keeps state in the process; ``redis`` shares it
between processes through one Lua script per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from bastion.ratelimit.algorithms import Limit, Verdict
from bastion.stores import CircuitBreaker

__all__ = ["Check", "CircuitBreaker", "Decision", "RateLimitStore", "admitted"]


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
