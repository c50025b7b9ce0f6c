"""Lease renewal: a claim stays its request's while the handler runs.

A claim is held for a lease (``idempotency.lease``); past it, a retry may take the
record over. So that only a dead or stalled process loses its claim, the leases of
running handlers are renewed: one task per guard renews every claim that has run for
a quarter lease, and a request that ends sooner costs one dictionary entry and no timer.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from bastion.idempotency.events import Events
from bastion.idempotency.stores import IdempotencyStore
from bastion.stores import StorePolicy
from bastion.units import Duration


class Leases:
    """The claims whose handlers run now, renewed until they end; stops renewing at shutdown.

    A resource (``name``, ``start``, ``close``, ``ping``) of the application it guards.
    """

    name = "idempotency:lease-renewal"

    def __init__(
        self,
        store: IdempotencyStore,
        policy: StorePolicy,
        *,
        lease: Duration,
        events: Events,
        logger: Any,
    ) -> None:
        self.store = store
        self.policy = policy
        self.lease_ms = lease.ms
        # Claims are renewed once they are a quarter lease old, checked every quarter lease:
        # a claim is renewed by half its lease at the latest.
        self.renew_every_s = max(lease.seconds / 4, 0.001)
        self.events = events
        self.logger = logger
        #: Claims whose handlers run now: owner -> record key.
        self.active: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None

    def hold(self, owner: str, key: str) -> None:
        """Keep the lease of ``owner``'s claim on ``key`` alive until :meth:`drop`."""
        self.active[owner] = key
        renewer = self._renewer
        if renewer is None or renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_held())

    def drop(self, owner: str) -> None:
        """Stop renewing ``owner``'s claim (its request is settled; nothing if not held)."""
        self.active.pop(owner, None)

    async def _renew_held(self) -> None:
        # A claim held at one tick has run for at least a tick (a quarter lease) at the next:
        # each tick renews the claims that the previous one saw, and a claim is renewed by
        # half its lease at the latest. The first claim, which starts this task, is seen at once.
        active = self.active
        seen = set(active)
        try:
            while active:
                await asyncio.sleep(self.renew_every_s)
                due = [(o, k) for o, k in active.items() if o in seen]
                seen = set(active)
                if not due:
                    continue
                results = await asyncio.gather(
                    *(self.policy.call(self.store.renew(k, o, self.lease_ms)) for o, k in due),
                    return_exceptions=True,
                )
                for (owner, _), renewed in zip(due, results, strict=True):
                    if isinstance(renewed, BaseException):
                        # A store hiccup: try again at the next tick, the lease may still hold.
                        self.events.store_error("renew", renewed)
                    elif not renewed and owner in active:
                        del active[owner]
                        self.logger.warning("idempotency lease lost to a takeover", owner=owner)
        finally:
            self._renewer = None

    async def start(self) -> None:
        """Nothing to open: renewal starts with the first claim."""

    async def close(self) -> None:
        """Stop renewing leases (claims still running lose theirs when it ends)."""
        renewer = self._renewer
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def ping(self) -> bool:
        """Always ready."""
        return True
