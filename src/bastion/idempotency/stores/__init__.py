"""Idempotency stores: where records live, behind one protocol.

A record is either *in progress* (claimed by one request, identified by its
owner token, held for a lease) or *completed* (the response to replay). Every
store implements the same four atomic steps, and the shared behaviour suite in
``tests/idempotency`` runs against each of them:

- ``claim``: take the key if it is free, expired, or in progress with an expired
  lease and the same fingerprint (a takeover); otherwise report what is there.
- ``complete``: store the response, only while the caller still owns the claim
  (fencing: a takeover makes the old owner's completion a no-op).
- ``release``: drop the claim (the handler failed), again only for its owner.
- ``renew``: extend the lease of a claim the caller still owns.

A store that can answer without waiting for anything (``memory``) says so with
``sync = True`` and also offers ``claim_now``, ``complete_now`` and ``release_now``:
the same steps as plain calls, which the guard makes inline. Every other store
derives from :class:`WaitingStore`, whose ``*_now`` methods refuse.

Each kind of store URL is registered with the store registry
(:mod:`bastion.stores.registry`); :func:`open_store` opens the one a URL names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from bastion.idempotency.core import ClaimResult, StoredResponse
from bastion.stores.registry import Capability

if TYPE_CHECKING:
    from bastion.config.idempotency import IdempotencyConfig
    from bastion.stores import StoreURL


class IdempotencyStore(Protocol):
    """Holds idempotency records and changes them atomically."""

    #: ``memory``, ``sqlite``, ``redis`` or ``postgres`` (the ``store`` label of error metrics).
    kind: str
    #: The resource name bastion logs at start-up.
    name: str
    #: Whether the ``*_now`` methods answer without I/O (then the guard calls them inline,
    #: with no coroutine and no timeout); ``False``: only the ``async`` steps work.
    sync: bool
    #: Called once per completed record dropped to stay within a memory bound (``None``: not
    #: counted). Stores without such a bound never call it.
    on_evict: Callable[[], object] | None

    def claim_now(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """:meth:`claim` without waiting (``sync`` stores only)."""

    def complete_now(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """:meth:`complete` without waiting (``sync`` stores only)."""

    def release_now(self, key: str, owner: str) -> bool:
        """:meth:`release` without waiting (``sync`` stores only)."""

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key`` for ``owner`` for ``lease_ms``, or report the record that holds it.

        ``trace_id`` names the claiming request; a takeover reports the one it replaced
        (:attr:`ClaimResult.lost_trace_id`).
        """

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store ``response`` if ``owner`` still holds the claim; ``False`` if it was taken over."""

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease to ``lease_ms`` from now if ``owner`` still holds the claim."""

    async def start(self) -> None:
        """Open connections, create tables, load scripts."""

    async def close(self) -> None:
        """Release connections."""

    async def ping(self) -> bool:
        """Whether the store answers now."""


class WaitingStore:
    """The synchronous surface of a store that must wait for I/O: not available."""

    sync = False
    on_evict: Callable[[], object] | None = None

    def claim_now(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Not available: this store waits for I/O."""
        raise NotImplementedError(f"{type(self).__name__} answers asynchronously")

    def complete_now(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Not available: this store waits for I/O."""
        raise NotImplementedError(f"{type(self).__name__} answers asynchronously")

    def release_now(self, key: str, owner: str) -> bool:
        """Not available: this store waits for I/O."""
        raise NotImplementedError(f"{type(self).__name__} answers asynchronously")


#: The idempotency stores in the store registry; each factory imports its store's module.
STORES: Capability[IdempotencyConfig, IdempotencyStore] = Capability("idempotency", "idempotency records")


@STORES.register("memory")
def _memory(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    from bastion.idempotency.stores.memory import MemoryStore

    return MemoryStore(max_bytes=config.max_memory)


@STORES.register("sqlite")
def _sqlite(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    from bastion.idempotency.stores.sqlite import SQLiteStore

    return SQLiteStore(url.path, table=config.table)


@STORES.register("redis")
def _redis(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    from bastion.idempotency.stores.redis import RedisStore

    return RedisStore(url.url, key_prefix=config.key_prefix, timeout_s=config.timeout.seconds)


@STORES.register("postgres")
def _postgres(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    from bastion.idempotency.stores.postgres import PostgresStore

    return PostgresStore(url.url, table=config.table, timeout_s=config.timeout.seconds)


def open_store(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    """The store ``url`` names (its driver is imported only now); a refusal names the
    configuration key the URL came from."""
    return STORES.open(url, config, key="idempotency.store" if config.store else "store")


__all__ = ["STORES", "IdempotencyStore", "WaitingStore", "open_store"]
