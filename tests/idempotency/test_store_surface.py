"""The guard uses a store through its protocol only: ``sync`` chooses the inline or the awaited steps.

Neither store here is (or derives from) a bastion store class: one answers at once
(``sync = True``), the other waits (a :class:`WaitingStore`). Both keep their records
in a memory store they hide, log the steps the guard took, and give the same answers.
"""

from __future__ import annotations

from typing import Any

import pytest

import bastion.idempotency.guard as guard_module
from bastion import Bastion
from bastion.idempotency.core import ClaimResult, StoredResponse
from bastion.idempotency.stores import WaitingStore
from bastion.idempotency.stores.memory import MemoryStore
from tests.idempotency.apps import OrdersApp
from tests.support import LogCapture, client

ORDER = {"item": "book"}


class Hidden:
    """Records in a memory store the guard never sees, and the log of the steps taken."""

    def __init__(self) -> None:
        self.records = MemoryStore()
        self.steps: list[str] = []

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        return await self.records.renew(key, owner, lease_ms)

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> bool:
        return True


class InlineStore(Hidden):
    """A store of its own that answers at once: only its ``*_now`` steps may be used."""

    kind = "inline"
    name = "idempotency:inline"
    sync = True

    on_evict: Any = None

    def claim_now(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        self.steps.append("claim")
        return self.records.claim_now(key, fingerprint, owner, lease_ms, ttl_ms, trace_id)

    def complete_now(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        self.steps.append(f"complete {response.status}")
        return self.records.complete_now(key, owner, response, ttl_ms)

    def release_now(self, key: str, owner: str) -> bool:
        self.steps.append("release")
        return self.records.release_now(key, owner)

    async def claim(self, *args: Any) -> ClaimResult:
        raise AssertionError("a sync store is called inline")

    async def complete(self, *args: Any) -> bool:
        raise AssertionError("a sync store is called inline")

    async def release(self, *args: Any) -> bool:
        raise AssertionError("a sync store is called inline")


class AwaitedStore(WaitingStore, Hidden):
    """A store of its own that waits: its ``*_now`` steps refuse (:class:`WaitingStore`)."""

    kind = "awaited"
    name = "idempotency:awaited"

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        self.steps.append("claim")
        return await self.records.claim(key, fingerprint, owner, lease_ms, ttl_ms, trace_id)

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        self.steps.append(f"complete {response.status}")
        return await self.records.complete(key, owner, response, ttl_ms)

    async def release(self, key: str, owner: str) -> bool:
        self.steps.append("release")
        return await self.records.release(key, owner)


async def exercise(store: InlineStore | AwaitedStore, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Stored, replayed, mismatched, failed (released), raised and answered requests through ``store``."""
    monkeypatch.setattr(guard_module, "open_store", lambda url, config: store)
    app = OrdersApp()
    config = {"store": "memory://", "idempotency": {"require": ["POST /orders"]}}
    bastion = Bastion(app, config, env={}, log_stream=LogCapture())
    requests = [
        ("k1", ORDER, ""),
        ("k1", ORDER, ""),  # replayed
        ("k1", {"item": "pen"}, ""),  # reused with another body
        ("k2", ORDER, "fail"),  # 500: released
        ("k2", ORDER, ""),  # runs again
        ("k3", ORDER, "conflict"),  # a Problem raised by the handler: answered and stored
        ("k3", ORDER, "conflict"),
        ("k4", ORDER, "raise"),  # an exception: released (and answered 500 by the boundary)
    ]
    answers = []
    async with client(bastion) as http:
        for value, body, mode in requests:
            response = await http.post(
                "/orders", json=body, headers={"Idempotency-Key": value, "X-Mode": mode}
            )
            kept = {
                k: v for k, v in response.headers.items() if k not in ("date", "x-request-id", "traceparent")
            }
            payload = response.json()
            payload.pop("trace_id", None)
            answers.append((response.status_code, kept, payload))
        metrics = (await http.get("/metrics")).text
    await bastion.shutdown()
    events = sorted(
        line for line in metrics.splitlines() if line.startswith("bastion_idempotency_events_total{")
    )
    return {
        "answers": answers,
        "steps": store.steps,
        "records": len(store.records),
        "executions": app.executions,
        "events": events,
    }


async def test_a_sync_store_is_called_inline_and_a_waiting_store_awaited_with_the_same_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    inline = await exercise(InlineStore(), monkeypatch)
    awaited = await exercise(AwaitedStore(), monkeypatch)
    assert inline == awaited
    assert inline["steps"] == [
        "claim",
        "complete 201",
        "claim",
        "claim",
        "claim",
        "release",
        "claim",
        "complete 201",
        "claim",
        "complete 409",
        "claim",
        "claim",
        "release",
    ]
    assert inline["executions"] == 5
    assert [a[0] for a in inline["answers"]] == [201, 201, 409, 500, 201, 409, 409, 500]
    assert inline["answers"][6][1]["idempotent-replayed"] == "true"
    assert 'bastion_idempotency_events_total{event="released"} 2.0' in inline["events"]
