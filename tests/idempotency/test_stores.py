"""One behaviour suite for every store, at the store level: claims, replays, leases, fencing, expiry."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import redis.asyncio as redis_asyncio

from bastion.config.idempotency import IdempotencyConfig
from bastion.idempotency.core import State, StoredResponse
from bastion.idempotency.stores import IdempotencyStore, open_store
from bastion.stores import parse_store_url

RESPONSE = StoredResponse(
    201, ((b"content-type", b"application/json"), (b"location", b"/orders/1")), b'{"id":1}'
)
LEASE_MS = 400
TTL_MS = 60_000


@pytest.fixture
async def store(store_settings: dict[str, Any]) -> AsyncIterator[IdempotencyStore]:
    config = IdempotencyConfig.model_validate(store_settings)
    opened = open_store(parse_store_url(store_settings["store"]), config)
    await opened.start()
    try:
        yield opened
    finally:
        await opened.close()


async def test_first_claim_wins_then_duplicates_see_it_in_progress(store: IdempotencyStore) -> None:
    first = await store.claim("k", "fp", "owner-a", LEASE_MS * 10, TTL_MS)
    second = await store.claim("k", "fp", "owner-b", LEASE_MS * 10, TTL_MS)
    assert first.state is State.CLAIMED and not first.took_over
    assert second.state is State.IN_PROGRESS
    assert second.fingerprint == "fp"
    assert 0 < second.lease_remaining_ms <= LEASE_MS * 10


async def test_completed_record_is_replayed_with_everything_stored(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "owner-a", LEASE_MS, TTL_MS)
    assert await store.complete("k", "owner-a", RESPONSE, TTL_MS)
    again = await store.claim("k", "fp", "owner-b", LEASE_MS, TTL_MS)
    assert again.state is State.COMPLETED
    assert again.response == RESPONSE
    assert again.fingerprint == "fp"


async def test_binary_and_empty_bodies_survive_the_round_trip(store: IdempotencyStore) -> None:
    for i, body in enumerate([bytes(range(256)) * 4, b""]):
        response = StoredResponse(200, (), body)
        await store.claim(f"k{i}", "fp", "o", LEASE_MS, TTL_MS)
        assert await store.complete(f"k{i}", "o", response, TTL_MS)
        assert (await store.claim(f"k{i}", "fp", "x", LEASE_MS, TTL_MS)).response == response


async def test_body_not_kept_is_remembered(store: IdempotencyStore) -> None:
    response = StoredResponse(201, ((b"location", b"/x"),), b"", body_stored=False)
    await store.claim("k", "fp", "o", LEASE_MS, TTL_MS)
    assert await store.complete("k", "o", response, TTL_MS)
    replay = (await store.claim("k", "fp", "x", LEASE_MS, TTL_MS)).response
    assert replay is not None and replay.body_stored is False and replay.status == 201


async def test_release_frees_the_key_only_for_its_owner(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "owner-a", LEASE_MS * 10, TTL_MS)
    assert not await store.release("k", "owner-b")
    assert (await store.claim("k", "fp", "owner-b", LEASE_MS, TTL_MS)).state is State.IN_PROGRESS
    assert await store.release("k", "owner-a")
    assert (await store.claim("k", "fp", "owner-b", LEASE_MS, TTL_MS)).state is State.CLAIMED


async def test_expired_lease_is_taken_over_and_the_old_owner_is_fenced(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "old", LEASE_MS, TTL_MS)
    assert (await store.claim("k", "fp", "new", LEASE_MS, TTL_MS)).state is State.IN_PROGRESS
    await asyncio.sleep(LEASE_MS / 1000 + 0.05)
    takeover = await store.claim("k", "fp", "new", LEASE_MS * 10, TTL_MS)
    assert takeover.state is State.CLAIMED and takeover.took_over
    # The old owner wakes up late: it can neither renew, release nor complete.
    assert not await store.renew("k", "old", LEASE_MS)
    assert not await store.release("k", "old")
    late = StoredResponse(201, (), b"old owner's result")
    assert not await store.complete("k", "old", late, TTL_MS)
    assert await store.complete("k", "new", RESPONSE, TTL_MS)
    assert not await store.complete("k", "old", late, TTL_MS)
    assert (await store.claim("k", "fp", "third", LEASE_MS, TTL_MS)).response == RESPONSE


async def test_expired_lease_with_another_fingerprint_is_not_taken_over(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "old", LEASE_MS, TTL_MS)
    await asyncio.sleep(LEASE_MS / 1000 + 0.05)
    other = await store.claim("k", "other-fp", "new", LEASE_MS, TTL_MS)
    assert other.state is State.IN_PROGRESS
    assert other.fingerprint == "fp"


async def test_renewal_keeps_a_live_claim(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "owner", LEASE_MS, TTL_MS)
    for _ in range(3):
        await asyncio.sleep(LEASE_MS / 2000)
        assert await store.renew("k", "owner", LEASE_MS)
    assert (await store.claim("k", "fp", "other", LEASE_MS, TTL_MS)).state is State.IN_PROGRESS


async def test_completed_record_expires_after_ttl(store: IdempotencyStore) -> None:
    await store.claim("k", "fp", "a", LEASE_MS, 600)
    assert await store.complete("k", "a", RESPONSE, 600)
    assert (await store.claim("k", "fp", "b", LEASE_MS, 600)).state is State.COMPLETED
    await asyncio.sleep(0.75)
    fresh = await store.claim("k", "fp", "b", LEASE_MS, 600)
    assert fresh.state is State.CLAIMED and not fresh.took_over


async def test_completion_after_ttl_of_a_fresh_claim_is_fenced(store: IdempotencyStore) -> None:
    """A record that expired and was claimed again belongs to the new claim only."""
    await store.claim("k", "fp", "a", 100, 200)
    await asyncio.sleep(0.3)
    assert (await store.claim("k", "fp", "b", LEASE_MS * 10, TTL_MS)).state is State.CLAIMED
    assert not await store.complete("k", "a", RESPONSE, TTL_MS)


async def test_concurrent_claims_have_exactly_one_winner(store: IdempotencyStore) -> None:
    results = await asyncio.gather(
        *(store.claim("k", "fp", f"owner-{i}", LEASE_MS * 10, TTL_MS) for i in range(50))
    )
    states = [r.state for r in results]
    assert states.count(State.CLAIMED) == 1
    assert states.count(State.IN_PROGRESS) == 49


async def test_keys_are_independent(store: IdempotencyStore) -> None:
    assert (await store.claim("a", "fp", "o1", LEASE_MS, TTL_MS)).state is State.CLAIMED
    assert (await store.claim("b", "fp", "o2", LEASE_MS, TTL_MS)).state is State.CLAIMED


async def test_ping(store: IdempotencyStore) -> None:
    assert await store.ping()


async def records_left(store: IdempotencyStore, settings: dict[str, Any]) -> int:
    """How many records the store still holds, read the way an operator would."""
    if store.kind == "memory":
        return len(store)  # type: ignore[arg-type]
    if store.kind == "sqlite":
        conn = sqlite3.connect(parse_store_url(settings["store"]).path)
        try:
            return int(conn.execute(f"SELECT count(*) FROM {settings['table']}").fetchone()[0])
        finally:
            conn.close()
    if store.kind == "postgres":
        conn = await asyncpg.connect(settings["store"])
        try:
            return int(await conn.fetchval(f"SELECT count(*) FROM {settings['table']}"))
        finally:
            await conn.close()
    client = redis_asyncio.Redis.from_url(settings["store"])
    try:
        return len([k async for k in client.scan_iter(match=settings["key_prefix"] + ":*", count=1000)])
    finally:
        await client.aclose()


async def test_expired_records_are_removed_without_a_cron(
    store: IdempotencyStore, store_settings: dict[str, Any]
) -> None:
    # Long enough that six writes and a count fit in it on a busy machine.
    ttl_ms = 1_500
    started = time.monotonic()
    for i in range(5):
        await store.claim(f"old-{i}", "fp", "o", LEASE_MS, ttl_ms)
        await store.complete(f"old-{i}", "o", RESPONSE, ttl_ms)
    await store.claim("abandoned", "fp", "o", LEASE_MS, ttl_ms)  # a claim whose owner died
    assert await records_left(store, store_settings) == 6
    # Past the TTL of every record, and past the once-a-second clean-up pacing.
    await asyncio.sleep(max(1.2, started + ttl_ms / 1000 + 0.4 - time.monotonic()))
    await store.claim("new", "fp", "o", LEASE_MS, TTL_MS)
    for _ in range(50):  # PostgreSQL cleans up in the background; give it a moment
        if await records_left(store, store_settings) == 1:
            break
        await asyncio.sleep(0.05)
    assert await records_left(store, store_settings) == 1


async def test_sqlite_records_survive_a_restart(tmp_path: Any) -> None:
    from bastion.idempotency.stores.sqlite import SQLiteStore

    path = str(tmp_path / "restart.db")
    first = SQLiteStore(path)
    await first.start()
    await first.claim("k", "fp", "o", LEASE_MS, TTL_MS)
    assert await first.complete("k", "o", RESPONSE, TTL_MS)
    await first.close()
    second = SQLiteStore(path)
    await second.start()
    try:
        assert (await second.claim("k", "fp", "x", LEASE_MS, TTL_MS)).response == RESPONSE
    finally:
        await second.close()
