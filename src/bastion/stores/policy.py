"""The failure policy every store-backed guard shares: a timeout, a circuit breaker, open or closed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Literal, Protocol, TypeVar

T = TypeVar("T")


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


class _Seconds(Protocol):
    @property
    def seconds(self) -> float: ...


class PolicySettings(Protocol):
    """The settings a store-backed guard's section carries (``rate_limits``, ``idempotency``)."""

    @property
    def on_store_error(self) -> Literal["open", "closed"]: ...
    @property
    def timeout(self) -> _Seconds: ...
    @property
    def breaker_failures(self) -> int: ...
    @property
    def breaker_cooldown(self) -> _Seconds: ...


class StorePolicy:
    """What a guard does when its store fails: count the failure towards the breaker, then
    answer ``503`` (closed) or go on unprotected (open).

    ``timeout_s`` bounds the store's answer once a call is sent; each store applies it to
    its own I/O (a Redis reply, a PostgreSQL statement), so that a burst queued for a
    connection is not mistaken for a frozen store. :meth:`call` adds an outer bound,
    ``outer_timeout_s``, against a wait that never ends (a pool that never frees a
    connection, a file lock held by a stopped process). A frozen store costs the first
    ``failures`` requests the timeout each; after that the breaker answers at once until
    a probe finds the store back.
    """

    __slots__ = ("breaker", "fail_closed", "outer_timeout_s", "timeout_s")

    def __init__(self, *, timeout_s: float, fail_closed: bool, breaker: CircuitBreaker) -> None:
        self.timeout_s = timeout_s
        self.outer_timeout_s = max(1.0, 10 * timeout_s)
        self.fail_closed = fail_closed
        self.breaker = breaker

    @classmethod
    def from_settings(cls, section: PolicySettings) -> StorePolicy:
        """The policy a configuration section describes."""
        return cls(
            timeout_s=section.timeout.seconds,
            fail_closed=section.on_store_error == "closed",
            breaker=CircuitBreaker(section.breaker_failures, section.breaker_cooldown.seconds),
        )

    def allow(self) -> bool:
        """Whether to call the store now (``False`` while the breaker is open)."""
        return self.breaker.allow()

    async def call(self, work: Awaitable[T]) -> T:
        """``await work`` within the outer bound; its outcome opens or closes the breaker.

        A timeout or a store error is raised again (``TimeoutError`` for the former) for
        the caller to log, count and answer by its policy.
        """
        try:
            async with asyncio.timeout(self.outer_timeout_s):
                result = await work
        except Exception:
            self.breaker.failure()
            raise
        self.breaker.success()
        return result

    def retry_after(self) -> str:
        """The ``Retry-After`` value of a 503: until the breaker's next probe, at least 1 s."""
        return str(max(1, int(self.breaker.retry_after_s() + 0.999)))
