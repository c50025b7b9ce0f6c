"""Rate limit stores: where the state of every key lives, behind one small protocol.

A store decides every rule that matches a request in one atomic step: either all
enforced rules admit the request and each admitting rule records it, or nothing is
recorded anywhere. ``memory`` keeps state in the process; ``redis`` shares it
between processes through one Lua script per request.

Each kind of store URL is registered with the store registry
(:mod:`bastion.stores.registry`); :func:`open_store` opens the one the
configuration names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from bastion.ratelimit.algorithms import Limit, Verdict
from bastion.stores import CircuitBreaker
from bastion.stores.registry import Capability

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.config.ratelimit import RateLimitsConfig
    from bastion.stores import StoreURL

__all__ = [
    "STORES",
    "Check",
    "CircuitBreaker",
    "Decision",
    "Opening",
    "RateLimitStore",
    "admitted",
    "open_store",
]


class Check(NamedTuple):
    """One rule to decide for a request: its store key, its limit, the cost and whether it only watches."""

    key: str
    limit: Limit
    cost: int
    shadow: bool


class Decision(NamedTuple):
    """The verdict of every rule, in order, and whether the request is admitted.

    An admitted verdict's ``retry_us`` is how long the request waits for its slot (a
    rule that queues; 0 otherwise). ``at_us`` is the store's clock at the decision,
    which :meth:`RateLimitStore.give_back` needs to find the windows it counted in.
    """

    admitted: bool
    verdicts: list[Verdict]
    at_us: int = 0


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

    async def give_back(self, checks: Sequence[Check], request_id: str, decision: Decision) -> None:
        """Undo an admission whose request never ran (its client left while it waited for its slot).

        Only called for a decision with a wait, which only a store whose limits queue
        (``Limit.max_delay_us``) answers: a store without queues never needs it.
        """

    async def start(self) -> None:
        """Open connections and load scripts."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> bool:
        """Whether the store answers now."""


class Opening(NamedTuple):
    """What a rate limit store factory gets besides the URL: the section, and the logger."""

    section: RateLimitsConfig
    logger: Any


#: The rate limit stores in the store registry; each factory imports its store's module.
STORES: Capability[Opening, RateLimitStore] = Capability("rate_limits", "rate limits")


@STORES.register("memory")
def _memory(url: StoreURL, opening: Opening) -> RateLimitStore:
    from bastion.ratelimit.stores.memory import MemoryStore

    return MemoryStore()


@STORES.register("sqlite", "postgres")
def _in_memory_instead(url: StoreURL, opening: Opening) -> RateLimitStore:
    # SQLite and PostgreSQL cannot decide in microseconds: with one of them as the
    # top-level store, rate limits stay in memory (per process).
    opening.logger.info(
        "rate limits use the memory store",
        reason=f"{url.kind} is not a rate limit store; set rate_limits.store to redis:// to share",
    )
    return _memory(url, opening)


@STORES.register("redis")
def _redis(url: StoreURL, opening: Opening) -> RateLimitStore:
    from bastion.ratelimit.stores.redis import RedisStore

    section = opening.section
    return RedisStore(url.url, key_prefix=section.key_prefix, timeout_s=section.timeout.seconds)


def open_store(config: Config, logger: Any) -> RateLimitStore:
    """The store the configuration names for rate limits.

    ``rate_limits.store`` wins, else the top-level ``store``; a refusal names the key.
    """
    section = config.rate_limits
    key = "rate_limits.store" if section.store else "store"
    return STORES.open(section.store or config.store, Opening(section, logger), key=key)
