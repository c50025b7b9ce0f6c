"""The memory store's own properties: flat records the garbage collector stops tracking."""

from __future__ import annotations

import gc

from bastion.idempotency.core import CLAIMED, State, StoredResponse
from bastion.idempotency.stores.memory import MemoryStore

RESPONSE = StoredResponse(201, ((b"content-type", b"application/json"), (b"location", b"/o/1")), b"{}")


async def test_records_are_untracked_after_one_collection() -> None:
    store = MemoryStore()
    assert store.claim_now("done", "fp", "a", 1000, 60_000) is CLAIMED
    assert store.complete_now("done", "a", RESPONSE, 60_000)
    assert await store.claim("running", "fp", "b", 1000, 60_000) is CLAIMED
    gc.collect(0)
    # Nested tuples would take one collection per level, long enough to reach the
    # oldest generation and make its full collections walk every record.
    assert not gc.is_tracked(store._records["done"])
    assert not gc.is_tracked(store._records["running"])
    assert not any(gc.is_tracked(entry) for entry in store._expiries)


async def test_sync_steps_are_the_protocol_steps() -> None:
    now = [0]
    store = MemoryStore(lambda: now[0])
    assert store.claim_now("k", "fp", "a", 1000, 60_000) is CLAIMED
    assert not store.complete_now("k", "b", RESPONSE, 60_000)  # fenced: not the owner
    assert store.complete_now("k", "a", RESPONSE, 60_000)
    replay = store.claim_now("k", "fp", "c", 1000, 60_000)
    assert replay.state is State.COMPLETED and replay.response == RESPONSE
    assert (await store.claim("k", "fp", "c", 1000, 60_000)) == replay
    assert store.claim_now("r", "fp", "a", 1000, 60_000) is CLAIMED
    assert not store.release_now("r", "b")
    assert store.release_now("r", "a")
    assert store.claim_now("r", "fp", "b", 1000, 60_000) is CLAIMED
    now[0] = 60_000
    assert store.claim_now("k", "other", "d", 1000, 60_000) is CLAIMED  # expired: a fresh claim
