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
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from bastion.idempotency.core import ClaimResult, StoredResponse

if TYPE_CHECKING:
    from bastion.config.idempotency import IdempotencyConfig
    from bastion.stores import StoreURL


class IdempotencyStore(Protocol):
    """Holds idempotency records and changes them atomically."""

    #: ``memory``, ``sqlite``, ``redis`` or ``postgres`` (the ``store`` label of error metrics).
    kind: str
    #: The resource name bastion logs at start-up.
    name: str

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


def open_store(url: StoreURL, config: IdempotencyConfig) -> IdempotencyStore:
    """The store for ``url`` (the driver is imported only when its store is used)."""
    if url.kind == "memory":
        from bastion.idempotency.stores.memory import MemoryStore

        return MemoryStore(max_bytes=config.max_memory)
    if url.kind == "sqlite":
        from bastion.idempotency.stores.sqlite import SQLiteStore

        return SQLiteStore(url.path, table=config.table)
    if url.kind == "redis":
        from bastion.idempotency.stores.redis import RedisStore

        return RedisStore(url.url, key_prefix=config.key_prefix, timeout_s=config.timeout.seconds)
    from bastion.idempotency.stores.postgres import PostgresStore

    return PostgresStore(url.url, table=config.table, timeout_s=config.timeout.seconds)


__all__ = ["IdempotencyStore", "open_store"]
