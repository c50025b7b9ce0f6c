"""The memory store: records in a dictionary of this process.

For tests and single-process deployments: each worker process has its own
records, so it does not give exactly-once across processes. Every step runs
without awaiting, which makes it atomic under asyncio. Expired records are
swept a few at a time on each claim, from a heap ordered by expiry.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from bastion.idempotency.core import CLAIMED, TOOK_OVER, ClaimResult, State, StoredResponse, may_claim

#: At most this many expired records are dropped per claim: the cost per request stays bounded.
SWEEP_PER_CLAIM = 8


class _Record:
    __slots__ = ("expires_at", "fingerprint", "lease_until", "owner", "response")

    def __init__(self, fingerprint: str, owner: str, lease_until: int, expires_at: int) -> None:
        self.fingerprint = fingerprint
        self.owner = owner
        self.lease_until = lease_until
        self.expires_at = expires_at
        self.response: StoredResponse | None = None


def _monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class MemoryStore:
    """Idempotency records in process memory."""

    kind = "memory"
    name = "idempotency:memory"

    def __init__(self, clock_ms: Callable[[], int] = _monotonic_ms) -> None:
        self.clock_ms = clock_ms
        self._records: dict[str, _Record] = {}
        self._expiries: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._records)

    async def claim(self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int) -> ClaimResult:
        """Claim ``key``, take over an expired lease, or report the record."""
        now = self.clock_ms()
        if self._expiries and self._expiries[0][0] <= now:
            self._sweep(now)
        record = self._records.get(key)
        if record is not None:
            verdict = may_claim(
                now_ms=now,
                expires_at=record.expires_at,
                state_completed=record.response is not None,
                lease_until=record.lease_until,
                stored_fingerprint=record.fingerprint,
                request_fingerprint=fingerprint,
            )
            if verdict is False:
                if record.response is not None:
                    return ClaimResult(State.COMPLETED, record.fingerprint, record.response)
                return ClaimResult(State.IN_PROGRESS, record.fingerprint, None, record.lease_until - now)
            if verdict is True:
                record.owner = owner
                record.lease_until = now + lease_ms
                return TOOK_OVER
        expires_at = now + ttl_ms
        self._records[key] = _Record(fingerprint, owner, now + lease_ms, expires_at)
        heapq.heappush(self._expiries, (expires_at, key))
        return CLAIMED

    def _owned(self, key: str, owner: str) -> _Record | None:
        record = self._records.get(key)
        if record is None or record.response is not None or record.owner != owner:
            return None
        return record

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim."""
        record = self._owned(key, owner)
        if record is None:
            return False
        record.response = response
        # No second heap entry: the sweep finds the claim's entry first and pushes it
        # back with the later expiry then.
        record.expires_at = self.clock_ms() + ttl_ms
        return True

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""
        if self._owned(key, owner) is None:
            return False
        del self._records[key]
        return True

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        record = self._owned(key, owner)
        if record is None:
            return False
        record.lease_until = self.clock_ms() + lease_ms
        return True

    def _sweep(self, now: int) -> None:
        heap = self._expiries
        for _ in range(SWEEP_PER_CLAIM):
            if not heap or heap[0][0] > now:
                return
            _, key = heapq.heappop(heap)
            record = self._records.get(key)
            if record is None:
                continue
            if record.expires_at <= now:
                del self._records[key]
            else:
                # Completed (or claimed again) after this entry was pushed: it lives longer.
                heapq.heappush(heap, (record.expires_at, key))

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Forget every record."""
        self._records.clear()
        self._expiries.clear()

    async def ping(self) -> bool:
        """Always reachable."""
        return True
