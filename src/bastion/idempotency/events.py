"""What the idempotency guard counts and logs: its decisions and outcomes, and failed store calls.

Counted through :class:`bastion.observability.metrics.Tally`, the one way guards count on
the request path: ``bastion_idempotency_events_total{event}`` and
``bastion_store_errors_total{store, operation}``. Every label set is named at start-up,
so the exposition lists each series (at 0) before its first event. Records a store
drops to stay within a memory bound are counted through its ``on_evict``
(``bastion_idempotency_evictions_total``; a store without such a bound never calls it).
"""

from __future__ import annotations

from typing import Any

from bastion.idempotency.stores import IdempotencyStore
from bastion.observability.metrics import Metrics

EVENTS = (
    "claimed",
    "replayed",
    "mismatch",
    "in_progress",
    "lease_expired",
    "store_error",
    "released",
    "fenced",
    "missing",
    "invalid",
    "unprotected",
    "not_stored",
    "outcome_unknown",
)
#: The store steps whose failures are counted (the ``operation`` label is ``idempotency_<step>``).
OPERATIONS = ("claim", "complete", "release", "renew")


class Events:
    """Counts the guard's events, its store's failures (and logs them) and the records its store evicts."""

    __slots__ = ("add", "error_slots", "logger", "slots", "store_errors", "store_kind")

    def __init__(self, metrics: Metrics | None, store: IdempotencyStore, logger: Any) -> None:
        # Without metrics the counts go to a registry nobody reads: one way of counting.
        metrics = metrics if metrics is not None else Metrics(env={})
        events = metrics.tally(
            "bastion_idempotency_events_total", "Idempotency decisions and outcomes, by event.", ["event"]
        )
        #: Event -> its slot in the events tally.
        self.slots = {event: events.slot(event) for event in EVENTS}
        #: Count one for a slot of :attr:`slots`.
        self.add = events.add
        self.store_errors = metrics.tally(
            "bastion_store_errors_total",
            "Store calls that failed, by store and operation.",
            ["store", "operation"],
        )
        #: Store step -> its slot in the store errors tally.
        self.error_slots = {op: self.store_errors.slot(store.kind, "idempotency_" + op) for op in OPERATIONS}
        self.store_kind = store.kind
        # Off the request path (a store with a memory bound drops records rarely): a plain counter.
        evictions = metrics.counter(
            "bastion_idempotency_evictions_total",
            "Completed idempotency records the memory store dropped to stay under max_memory.",
            [],
        )
        store.on_evict = evictions.inc
        self.logger = logger

    def count(self, event: str) -> None:
        """Count one ``event`` (one of :data:`EVENTS`)."""
        self.add(self.slots[event])

    def store_error(self, operation: str, exc: BaseException) -> None:
        """Count and log a failed store step (one of :data:`OPERATIONS`)."""
        self.add(self.slots["store_error"])
        self.store_errors.add(self.error_slots[operation])
        self.logger.warning(
            "idempotency store error", store=self.store_kind, operation=operation, error=repr(exc)
        )
