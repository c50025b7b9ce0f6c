"""The memory store: records in a dictionary of this process.

For tests and single-process deployments: each worker process has its own
records, so it does not give exactly-once across processes. Every step runs
without awaiting, which makes it atomic under asyncio. Expired records are
swept a few at a time on each claim, from a heap ordered by expiry.

Stored responses are capped (``idempotency.max_memory``): past the cap the oldest
completed records are dropped (a retry of one runs again) and counted; claims in
flight are never dropped, so a running request can always store its response.

Records are plain tuples of strings, numbers and bytes: the garbage collector
stops tracking such tuples, so a store holding a day of records does not make
every collection of the process walk them.
"""

from __future__ import annotations

import heapq
import time
from collections import OrderedDict
from collections.abc import Callable
from itertools import chain
from typing import Any

from bastion.idempotency.core import CLAIMED, ClaimResult, State, StoredResponse, may_claim, took_over

#: At most this many expired records are dropped per claim: the cost per request stays bounded.
SWEEP_PER_CLAIM = 8
#: Entries the expiry index may hold beyond twice the records before it is rebuilt.
COMPACT_SLACK = 1024

#: What a completed record costs besides its key, body and headers (the tuple, its ints and
#: the index entries), in bytes: an estimate, so that many tiny records count too.
RECORD_OVERHEAD = 256
DEFAULT_MAX_BYTES = 64 * 1024 * 1024

# A record is one flat tuple: (fingerprint, owner, lease_until, expires_at, None, trace_id)
# while in progress; (fingerprint, "", 0, expires_at, status, body, body_stored, name, value, name,
# value, ...) once completed. Flat, because the collector untracks a tuple of strings,
# numbers and bytes at the first collection that sees it, but a tuple holding tuples
# only one level per collection: nested records would live on as tracked objects into
# the oldest generation and make its full collections walk them.
_Record = tuple[Any, ...]

_monotonic_ns = time.monotonic_ns


def _monotonic_ms() -> int:
    return _monotonic_ns() // 1_000_000


class MemoryStore:
    """Idempotency records in process memory.

    Every step is synchronous underneath (``claim_now``, ``complete_now``,
    ``release_now``): the guard calls those directly, the protocol's coroutines wrap them.
    """

    kind = "memory"
    name = "idempotency:memory"
    #: Every step answers at once: the guard calls the ``*_now`` methods inline.
    sync = True

    def __init__(
        self, clock_ms: Callable[[], int] | None = None, *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        #: Milliseconds from a monotonic clock; ``None`` reads ``time.monotonic_ns`` inline.
        self.clock_ms = clock_ms
        #: The cap on the estimated size of the completed records.
        self.max_bytes = max_bytes
        #: Called once per record dropped to stay under the cap (the guard counts them).
        self.on_evict: Callable[[], object] | None = None
        self._records: dict[str, _Record] = {}
        self._expiries: list[tuple[int, str]] = []
        #: Completed records, oldest completion first -> their estimated size.
        self._sizes: OrderedDict[str, int] = OrderedDict()
        #: The sum of ``_sizes``.
        self.stored_bytes = 0

    def __len__(self) -> int:
        return len(self._records)

    def _now(self) -> int:
        clock = self.clock_ms
        return _monotonic_ns() // 1_000_000 if clock is None else clock()

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key``, take over an expired lease, or report the record."""
        return self.claim_now(key, fingerprint, owner, lease_ms, ttl_ms, trace_id)

    def claim_now(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """:meth:`claim`, without a coroutine."""
        clock = self.clock_ms
        now = _monotonic_ns() // 1_000_000 if clock is None else clock()
        expiries = self._expiries
        if expiries and expiries[0][0] <= now:
            self._sweep(now)
        records = self._records
        record = records.get(key)
        if record is not None:
            stored_fp, _, lease_until, expires_at, status = record[:5]
            verdict = may_claim(
                now_ms=now,
                expires_at=expires_at,
                state_completed=status is not None,
                lease_until=lease_until,
                stored_fingerprint=stored_fp,
                request_fingerprint=fingerprint,
            )
            if verdict is False:
                if status is not None:
                    headers = tuple(zip(record[7::2], record[8::2], strict=True))
                    response = StoredResponse(status, headers, record[5], record[6])
                    return ClaimResult(State.COMPLETED, stored_fp, response)
                return ClaimResult(State.IN_PROGRESS, stored_fp, None, lease_until - now)
            if verdict is True:
                records[key] = (stored_fp, owner, now + lease_ms, expires_at, None, trace_id)
                return took_over(record[5])
            if status is not None:  # an expired completed record, replaced
                self._forget(key)
        expires_at = now + ttl_ms
        records[key] = (fingerprint, owner, now + lease_ms, expires_at, None, trace_id)
        heapq.heappush(expiries, (expires_at, key))
        if len(expiries) > 2 * len(records) + COMPACT_SLACK:
            self._compact()
        return CLAIMED

    def _owned(self, key: str, owner: str) -> _Record | None:
        record = self._records.get(key)
        if record is None or record[4] is not None or record[1] != owner:
            return None
        return record

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim."""
        return self.complete_now(key, owner, response, ttl_ms)

    def complete_now(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """:meth:`complete`, without a coroutine."""
        record = self._records.get(key)
        if record is None or record[4] is not None or record[1] != owner:
            return False
        clock = self.clock_ms
        now = _monotonic_ns() // 1_000_000 if clock is None else clock()
        status, headers, body, body_stored = response
        flat = tuple(chain(*headers))
        # No second heap entry: the sweep finds the claim's entry first and pushes it
        # back with the later expiry then.
        self._records[key] = (record[0], "", 0, now + ttl_ms, status, body, body_stored, *flat)
        size = RECORD_OVERHEAD + len(key) + len(body) + sum(map(len, flat))
        self._sizes[key] = size
        self.stored_bytes += size
        if self.stored_bytes > self.max_bytes:
            self._evict()
        return True

    @property
    def expiry_entries(self) -> int:
        """Entries in the expiry index: at most twice the records plus ``COMPACT_SLACK``."""
        return len(self._expiries)

    def _compact(self) -> None:
        """Rebuild the expiry index from the records: one entry each.

        Records dropped before they expire (evicted past the cap, released) and records
        claimed again leave entries behind; without this, a store at its cap would grow
        by one entry per request for a whole TTL. The rebuild runs once the index holds
        twice the records: its cost is spread over at least as many claims.
        """
        self._expiries = [(record[3], key) for key, record in self._records.items()]
        heapq.heapify(self._expiries)

    def _evict(self) -> None:
        """Drop the oldest completed records until the rest fit under the cap."""
        sizes, records, on_evict = self._sizes, self._records, self.on_evict
        while self.stored_bytes > self.max_bytes and sizes:
            key, size = sizes.popitem(last=False)
            self.stored_bytes -= size
            del records[key]  # its heap entry finds nothing when it comes due
            if on_evict is not None:
                on_evict()

    def _forget(self, key: str) -> None:
        """Take a completed record that is going away out of the size account."""
        size = self._sizes.pop(key, None)
        if size is not None:
            self.stored_bytes -= size

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""
        return self.release_now(key, owner)

    def release_now(self, key: str, owner: str) -> bool:
        """:meth:`release`, without a coroutine."""
        if self._owned(key, owner) is None:
            return False
        del self._records[key]
        return True

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        record = self._owned(key, owner)
        if record is None:
            return False
        self._records[key] = (record[0], owner, self._now() + lease_ms, record[3], None, record[5])
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
                self._forget(key)
            else:
                # Completed (or claimed again) after this entry was pushed: it lives longer.
                heapq.heappush(heap, (record[3], key))

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Forget every record."""
        self._records.clear()
        self._expiries.clear()
        self._sizes.clear()
        self.stored_bytes = 0

    async def ping(self) -> bool:
        """Always reachable."""
        return True
