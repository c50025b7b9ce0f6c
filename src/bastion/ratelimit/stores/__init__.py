"""Rate limit stores: where the state of every key lives, behind one small protocol.

A store decides every rule that matches a request in one atomic step: either all
enforced rules admit the request and each admitting rule records it, or nothing is
recorded anywhere. ``memory`` keeps state in the process; ``redis`` shares it
between processes through one Lua script per request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from bastion.ratelimit.algorithms import Limit, Verdict
from bastion.stores import CircuitBreaker, parse_store_url

if TYPE_CHECKING:
    from bastion.config import Config

__all__ = ["Check", "CircuitBreaker", "Decision", "RateLimitStore", "admitted", "open_store"]


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


def open_store(config: Config, logger: Any) -> RateLimitStore:
    """The store the configuration names for rate limits.

    ``rate_limits.store`` wins; else the top-level ``store`` if it is Redis or
    memory. SQLite and PostgreSQL cannot decide in microseconds, so with those as
    the top-level store rate limits stay in memory (per process).
    """
    section = config.rate_limits
    url = section.store or config.store
    parsed = parse_store_url(url)
    if parsed.kind == "redis":
        try:
            from bastion.ratelimit.stores.redis import RedisStore
        except ImportError:
            from bastion.config import ConfigError

            where = "rate_limits.store" if section.store else "store"
            reason = "Redis needs the redis extra: pip install 'bastion-guards[redis]'"
            raise ConfigError([(where, reason)]) from None

        return RedisStore(parsed.url, key_prefix=section.key_prefix, timeout_s=section.timeout.seconds)
    from bastion.ratelimit.stores.memory import MemoryStore

    if parsed.kind != "memory":
        logger.info(
            "rate limits use the memory store",
            reason=f"{parsed.kind} is not a rate limit store; set rate_limits.store to redis:// to share",
        )
    return MemoryStore()
