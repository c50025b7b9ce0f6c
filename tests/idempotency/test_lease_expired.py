"""A claim whose process died while its request ran: rerun (the default) or refuse.

The first attempt runs in one bastion instance; the instance is then shut down while
its handler still runs (its lease is no longer renewed: the process died, as far as the
store can tell). A second instance on the same store gets the retry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from bastion import Bastion
from bastion.config.idempotency import IdempotencyConfig
from bastion.idempotency.core import State
from bastion.idempotency.stores import open_store
from bastion.stores import parse_store_url
from tests.idempotency.apps import OrdersApp
from tests.support import LogCapture, client

ORDER = {"item": "book"}
SHARED = ["sqlite", "redis", "postgres"]
LOST_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def instance(app: OrdersApp, settings: dict[str, Any], **extra: Any) -> Bastion:
    idempotency = {"require": ["POST /orders"], "lease": "300ms", **settings, **extra}
    return Bastion(app, {"store": "memory://", "idempotency": idempotency}, env={}, log_stream=LogCapture())


@asynccontextmanager
async def lost_attempt(settings: dict[str, Any]) -> AsyncIterator[OrdersApp]:
    """An attempt at key ``k`` whose handler started and whose process then died."""
    app = OrdersApp()
    app.gate = asyncio.Event()
    dying = instance(app, settings)
    http = client(dying)
    headers = {
        "Idempotency-Key": "k",
        "X-Mode": "slow",
        "traceparent": f"00-{LOST_TRACE}-00f067aa0ba902b7-01",
    }
    attempt = asyncio.ensure_future(http.post("/orders", json=ORDER, headers=headers))
    while app.executions < 1:
        await asyncio.sleep(0.01)
    await dying.shutdown()  # no more renewals: the lease runs out
    try:
        yield app
    finally:
        app.gate.set()  # the handler ends; its completion is fenced off (or fails on the closed store)
        await asyncio.gather(attempt, return_exceptions=True)
        await http.aclose()
        for resource in reversed(dying.resources):
            await resource.close()


async def retry_after_the_lease(http: httpx.AsyncClient) -> httpx.Response:
    """Retry ``k`` while it is in progress (until the lost attempt's lease runs out; at most 10 s)."""
    deadline = time.monotonic() + 10
    response = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"})
    while response.status_code == 409 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        response = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"})
    return response


@pytest.mark.parametrize("store_settings", SHARED, indirect=True)
async def test_by_default_the_retry_runs_the_request_again(store_settings: dict[str, Any]) -> None:
    retry_app = OrdersApp()
    survivor = instance(retry_app, store_settings)
    async with lost_attempt(store_settings), client(survivor) as http:
        retried = await retry_after_the_lease(http)
        replay = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"})
    await survivor.shutdown()
    assert retried.status_code == 201
    assert retry_app.executions == 1
    assert replay.headers["idempotent-replayed"] == "true"


@pytest.mark.parametrize("store_settings", SHARED, indirect=True)
async def test_refuse_answers_outcome_unknown_with_the_lost_trace_id(store_settings: dict[str, Any]) -> None:
    retry_app = OrdersApp()
    survivor = instance(retry_app, store_settings, on_lease_expired="refuse")
    async with lost_attempt(store_settings), client(survivor) as http:
        refused = await retry_after_the_lease(http)
        again = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"})
        other = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k2"})
    await survivor.shutdown()
    assert refused.status_code == 500
    problem = refused.json()
    assert problem["code"] == "IDEMPOTENCY_OUTCOME_UNKNOWN"
    assert problem["lost_trace_id"] == LOST_TRACE
    assert problem["trace_id"] != LOST_TRACE
    # Every later retry gets the same answer; the request never runs a second time.
    assert again.status_code == 500
    assert again.json()["lost_trace_id"] == LOST_TRACE
    assert again.headers["idempotent-replayed"] == "true"
    assert other.status_code == 201
    assert retry_app.executions == 1  # "k2" only


async def test_a_takeover_reports_the_trace_id_of_the_claim_it_replaced(
    store_settings: dict[str, Any],
) -> None:
    config = IdempotencyConfig.model_validate(store_settings)
    store = open_store(parse_store_url(store_settings["store"]), config)
    await store.start()
    try:
        first = await store.claim("k", "fp", "owner-a", 50, 60_000, "trace-a")
        assert first.state is State.CLAIMED and not first.took_over
        deadline = time.monotonic() + 10
        second = await store.claim("k", "fp", "owner-b", 60_000, 60_000, "trace-b")
        while second.state is State.IN_PROGRESS and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            second = await store.claim("k", "fp", "owner-b", 60_000, 60_000, "trace-b")
        assert second.took_over
        assert second.lost_trace_id == "trace-a"
    finally:
        await store.close()


OLD_SQLITE_TABLE = """CREATE TABLE {t} (key TEXT PRIMARY KEY, fingerprint TEXT NOT NULL,
 state INTEGER NOT NULL, owner TEXT, lease_until INTEGER NOT NULL, expires_at INTEGER NOT NULL,
 status INTEGER, headers BLOB, body BLOB, body_stored INTEGER) WITHOUT ROWID"""
OLD_POSTGRES_TABLE = """CREATE TABLE {t} (key text PRIMARY KEY, fingerprint text NOT NULL,
 state smallint NOT NULL, owner text, lease_until bigint NOT NULL, expires_at bigint NOT NULL,
 status integer, headers bytea,
 body bytea, body_stored boolean, took_over boolean NOT NULL DEFAULT false)"""


@pytest.mark.parametrize("store_settings", ["sqlite", "postgres"], indirect=True)
async def test_a_table_of_an_earlier_version_gets_the_trace_id_columns(
    store_settings: dict[str, Any],
) -> None:
    url = parse_store_url(store_settings["store"])
    table = store_settings["table"]
    if url.kind == "sqlite":
        import sqlite3

        with sqlite3.connect(url.path) as conn:
            conn.execute(OLD_SQLITE_TABLE.format(t=table))
            conn.execute(
                f"INSERT INTO {table} VALUES ('old', 'fp', 0, 'o', 0, 9999999999999, NULL, NULL, NULL, NULL)"
            )
    else:
        import asyncpg

        conn = await asyncpg.connect(url.url)
        try:
            await conn.execute(OLD_POSTGRES_TABLE.format(t=table))
            await conn.execute(f"INSERT INTO {table} VALUES ('old', 'fp', 0, 'o', 0, 9999999999999)")
        finally:
            await conn.close()
    # The first claim runs on a just-migrated table: a generous timeout, so that a busy
    # machine is not mistaken for a store that failed (the default is 250 ms).
    store = open_store(url, IdempotencyConfig.model_validate({**store_settings, "timeout": "5s"}))
    await store.start()
    try:
        # A claim of the old version's, lease long expired: taken over, its trace id unknown.
        old = await store.claim("old", "fp", "new-owner", 60_000, 60_000, "trace-new")
        assert old.took_over and old.lost_trace_id == ""
        assert (await store.claim("fresh", "fp", "o", 60_000, 60_000, "t")).state is State.CLAIMED
    finally:
        await store.close()
