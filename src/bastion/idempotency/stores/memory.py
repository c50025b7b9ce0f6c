"""The memory store: records in a dictionary of this process.

For tests and single-process deployments: each worker process has its own
records, so it does not give exactly-once across processes. Every step runs
without awaiting, which makes it atomic under asyncio. Expired records are
swept a few at a time on each claim, from a heap ordered by expiry.

Records are plain tuples of strings, numbers and bytes: the garbage collector
stops tracking such tuples, so a store holding a day of records does not make
every collection of the process walk them.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable

from bastion.idempotency.core import CLAIMED, TOOK_OVER, ClaimResult, State, StoredResponse, may_claim

#: At most this many expired records are dropped per claim: the cost per request stays bounded.
SWEEP_PER_CLAIM = 8

# A record: (fingerprint, owner, lease_until, expires_at, response). The response is
# None while in progress, else (status, headers, body, body_stored) with headers a
# tuple of (name, value) byte pairs.
_Stored = tuple[int, tuple[tuple[bytes, bytes], ...], bytes, bool]
_Record = tuple[str, str, int, int, _Stored | None]


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
            stored_fp, _, lease_until, expires_at, stored = record
            verdict = may_claim(
                now_ms=now,
                expires_at=expires_at,
                state_completed=stored is not None,
                lease_until=lease_until,
                stored_fingerprint=stored_fp,
                request_fingerprint=fingerprint,
            )
            if verdict is False:
                if stored is not None:
                    return ClaimResult(State.COMPLETED, stored_fp, StoredResponse(*stored))
                return ClaimResult(State.IN_PROGRESS, stored_fp, None, lease_until - now)
            if verdict is True:
                self._records[key] = (stored_fp, owner, now + lease_ms, expires_at, None)
                return TOOK_OVER
        expires_at = now + ttl_ms
        self._records[key] = (fingerprint, owner, now + lease_ms, expires_at, None)
        heapq.heappush(self._expiries, (expires_at, key))
        return CLAIMED

    def _owned(self, key: str, owner: str) -> _Record | None:
        record = self._records.get(key)
        if record is None or record[4] is not None or record[1] != owner:
            return None
        return record

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim."""
        record = self._owned(key, owner)
        if record is None:
            return False
        stored = (response.status, response.headers, response.body, response.body_stored)
        # No second heap entry: the sweep finds the claim's entry first and pushes it
        # back with the later expiry then.
        self._records[key] = (record[0], "", 0, self.clock_ms() + ttl_ms, stored)
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
        self._records[key] = (record[0], owner, self.clock_ms() + lease_ms, record[3], None)
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
            if record[3] <= now:
                del self._records[key]
            else:
                # Completed (or claimed again) after this entry was pushed: it lives longer.
                heapq.heappush(heap, (record[3], key))

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Forget every record."""
        self._records.clear()
        self._expiries.clear()

    async def ping(self) -> bool:
        """Always reachable."""
        return True
