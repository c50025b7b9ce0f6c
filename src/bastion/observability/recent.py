"""What the dashboard shows beyond counters: the latest 5xx responses and the clients
behind the most 429s and validation failures.

The boundary hands every finished request to :meth:`RecentRequests.finished`; all
but 5xx, 429 and validation failures return after one comparison. Everything is
bounded whatever the traffic: :data:`MAX_RECENT_ERRORS` responses and
:data:`TRACKED_CLIENTS` clients per table. Only the method, route template, status,
trace id and time of a request are kept, and clients by the id bastion gives them
(``key:NAME``, ``key:`` and the start of the key's digest, or ``ip:ADDRESS``), never
a raw API key. Kept per process: in multiprocess mode each worker shows its own.
"""

from __future__ import annotations

import heapq
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from bastion.asgi import RequestContext, Scope
from bastion.problems import MalformedBody, ValidationFailed

#: How many 5xx responses the dashboard lists.
MAX_RECENT_ERRORS = 20
#: How many clients each top-clients table tracks; past that its counts are estimates.
TRACKED_CLIENTS = 200
#: How many clients each top-clients table shows.
TOP_CLIENTS = 10
#: The problem codes of requests that failed validation (400 or 422).
VALIDATION_CODES = frozenset({ValidationFailed.code_default, MalformedBody.code_default})
#: The client of a request no identifier named (bastion built without one).
UNIDENTIFIED = "(unidentified)"

if TYPE_CHECKING:
    from bastion.clients import ClientIdentifier


class TopK:
    """The keys seen most often, in bounded memory (the Space-Saving algorithm).

    Counts are exact while at most ``capacity`` keys have been seen. After that a new
    key takes the place of the smallest and starts from its count, so a heavy key is
    never lost, and a count overstates by at most its ``error``.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._counts: dict[str, int] = {}
        self._errors: dict[str, int] = {}
        #: One (count, key) per tracked key, its count as of when it was pushed (a lower bound).
        self._heap: list[tuple[int, str]] = []

    def __len__(self) -> int:
        return len(self._counts)

    def add(self, key: str) -> None:
        """Count one occurrence of ``key``."""
        counts = self._counts
        if key in counts:
            counts[key] += 1
            return
        floor = self._evict() if len(counts) >= self.capacity else 0
        counts[key] = floor + 1
        self._errors[key] = floor
        heapq.heappush(self._heap, (floor + 1, key))

    def _evict(self) -> int:
        """Drop a key with the smallest count and return that count.

        Counts only grow, so the heap's entries are lower bounds: an entry that is
        still exact is a true minimum, and a stale one is pushed back at its count.
        Each refresh pays for an increment since the last, so a flood of new keys
        (rotating addresses) costs a logarithm each, not a scan of every key.
        """
        heap, counts = self._heap, self._counts
        while True:
            count, key = heap[0]
            current = counts[key]
            if current == count:
                heapq.heappop(heap)
                del counts[key], self._errors[key]
                return count
            heapq.heapreplace(heap, (current, key))

    def top(self, n: int) -> list[dict[str, Any]]:
        """The ``n`` largest as rows ``{"client", "count", "error"}``, largest first."""
        ranked = sorted(self._counts.items(), key=lambda item: (-item[1], item[0]))[:n]
        return [{"client": key, "count": count, "error": self._errors[key]} for key, count in ranked]


class RecentRequests:
    """The latest 5xx responses and the top clients by 429s and by validation failures."""

    def __init__(self, clients: ClientIdentifier | None = None) -> None:
        self.clients = clients
        self.errors: deque[dict[str, Any]] = deque(maxlen=MAX_RECENT_ERRORS)
        self.rate_limited = TopK(TRACKED_CLIENTS)
        self.invalid = TopK(TRACKED_CLIENTS)

    def finished(self, scope: Scope, ctx: RequestContext, method: str, route: str, status: int) -> None:
        """Record one finished request (the boundary calls this for every request)."""
        if status < 400:
            return
        if status >= 500:
            self.errors.append(
                {
                    "time": time.time(),
                    "method": method,
                    "route": route,
                    "status": status,
                    "trace_id": ctx.trace_id,
                }
            )
        elif status == 429:
            self.rate_limited.add(self._client(scope, ctx))
        elif ctx.problem_code in VALIDATION_CODES:
            self.invalid.add(self._client(scope, ctx))

    def _client(self, scope: Scope, ctx: RequestContext) -> str:
        if self.clients is not None:
            self.clients.fill(scope, ctx)
        return ctx.client_id or UNIDENTIFIED

    def snapshot(self) -> dict[str, Any]:
        """The dashboard's view: 5xx responses newest first, and the two top-clients tables."""
        return {
            "recent_5xx": list(reversed(self.errors)),
            "top_clients": {
                "rate_limited": self.rate_limited.top(TOP_CLIENTS),
                "validation": self.invalid.top(TOP_CLIENTS),
            },
        }
