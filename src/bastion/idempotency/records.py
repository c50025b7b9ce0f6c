"""The guard's steps on its store: claim a record, then settle it (store the response, or release).

One way for every store. A store that answers at once (``store.sync``, the memory store)
is called inline through its ``*_now`` methods: no coroutine, no timeout. Any other is
awaited through the :class:`~bastion.stores.StorePolicy` (timeout, circuit breaker,
``on_store_error``). Either way, what the store answered (or how it failed) is counted
and logged by the same code.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from bastion.asgi import RequestContext
from bastion.idempotency.core import ClaimResult, StoredResponse
from bastion.idempotency.events import Events
from bastion.idempotency.leases import Leases
from bastion.idempotency.stores import IdempotencyStore
from bastion.problems import DependencyUnavailable
from bastion.stores import StorePolicy


class Records:
    """Claims and settles the records of requests, for their owners only."""

    __slots__ = ("events", "fail_closed", "lease_ms", "leases", "logger", "policy", "store", "ttl_ms")

    def __init__(
        self,
        store: IdempotencyStore,
        policy: StorePolicy,
        *,
        lease_ms: int,
        ttl_ms: int,
        leases: Leases,
        events: Events,
        logger: Any,
    ) -> None:
        self.store = store
        self.policy = policy
        self.fail_closed = policy.fail_closed
        self.lease_ms = lease_ms
        self.ttl_ms = ttl_ms
        self.leases = leases
        self.events = events
        self.logger = logger

    async def claim(self, key: str, request_fp: str, owner: str, ctx: RequestContext) -> ClaimResult | None:
        """Claim ``key`` for ``owner``; ``None`` when the store failed and the policy is open
        (closed: :class:`~bastion.problems.DependencyUnavailable` is raised)."""
        store = self.store
        if store.sync:
            try:
                return store.claim_now(key, request_fp, owner, self.lease_ms, self.ttl_ms, ctx.trace_id)
            except Exception as exc:
                self._claim_failed(exc, ctx)
                return None
        policy = self.policy
        if not policy.allow():
            # The breaker is open: answer at once, without waiting on a store known to fail.
            self._claim_failed(None, ctx)
            return None
        try:
            claim = store.claim(key, request_fp, owner, self.lease_ms, self.ttl_ms, ctx.trace_id)
            return await policy.call(claim)
        except Exception as exc:
            self._claim_failed(exc, ctx)
            return None

    def _claim_failed(self, exc: Exception | None, ctx: RequestContext) -> None:
        """Count and log a failed claim (``exc`` ``None``: skipped, the breaker is open);
        raise 503 when the policy is closed."""
        if exc is not None:
            self.events.store_error("claim", exc)
        if self.fail_closed:
            ctx.log["idempotency"] = "store_error"
            raise DependencyUnavailable(
                detail="the idempotency store is unreachable",
                headers={"Retry-After": self.policy.retry_after()},
            ) from None

    def settle(
        self, key: str, owner: str, response: StoredResponse | None, ctx: RequestContext
    ) -> Awaitable[None] | None:
        """Store ``response`` as the record of ``owner``'s claim (``None``: release the claim).

        With a store that answers at once this is done on return (``None``); otherwise the
        awaitable that does it is returned. The claim's lease is no longer renewed either way.
        """
        self.leases.drop(owner)
        store = self.store
        if not store.sync:
            return self._settle_waiting(key, owner, response, ctx)
        outcome: bool | Exception
        try:
            if response is None:
                outcome = store.release_now(key, owner)
            else:
                outcome = store.complete_now(key, owner, response, self.ttl_ms)
        except Exception as exc:
            outcome = exc
        self._settled(outcome, owner, response, ctx)
        return None

    async def _settle_waiting(
        self, key: str, owner: str, response: StoredResponse | None, ctx: RequestContext
    ) -> None:
        """:meth:`settle` with a store that waits for I/O, through :attr:`policy`."""
        store = self.store
        outcome: bool | Exception
        try:
            if response is None:
                outcome = await self.policy.call(store.release(key, owner))
            else:
                outcome = await self.policy.call(store.complete(key, owner, response, self.ttl_ms))
        except Exception as exc:
            outcome = exc
        self._settled(outcome, owner, response, ctx)

    def _settled(
        self, outcome: bool | Exception, owner: str, response: StoredResponse | None, ctx: RequestContext
    ) -> None:
        """Count and log how a claim was settled: ``outcome`` is the store's answer or its error."""
        events = self.events
        if response is None:  # a release
            if isinstance(outcome, Exception):
                events.store_error("release", outcome)
            elif outcome:
                events.count("released")
        elif isinstance(outcome, Exception):
            # The handler ran and its response goes out; the record stays in progress
            # until its lease ends, after which a retry runs the handler again (or, with
            # on_lease_expired: refuse, is answered IDEMPOTENCY_OUTCOME_UNKNOWN).
            events.store_error("complete", outcome)
            events.count("not_stored")
            ctx.log["idempotency_stored"] = False
            self.logger.error(
                "idempotency response not stored: the request ran, a retry after the lease may run it again",
                store=self.store.kind,
                lease_ms=self.lease_ms,
            )
        elif not outcome:
            events.count("fenced")
            ctx.log["idempotency"] = "fenced"
            self.logger.warning("idempotency completion fenced: the claim was taken over", owner=owner)
        elif not response.body_stored:
            ctx.log["idempotency_body_stored"] = False
