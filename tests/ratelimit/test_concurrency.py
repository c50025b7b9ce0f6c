"""The concurrency limiter: slots held while a response runs, freed however it ends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion.asgi import Receive, Scope, Send
from bastion.ratelimit.algorithms import Limit
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.memory import MemoryStore

from .conftest import Make
from .helpers import client, parse_headers


def concurrency_config(limit: int = 1) -> dict[str, Any]:
    return {
        "rate_limits": {"rules": [{"name": "inflight", "algorithm": "concurrency", "limit": f"{limit}/s"}]}
    }


async def test_concurrency_limits_requests_in_flight_and_releases_when_done(make: Make) -> None:
    gate = asyncio.Event()
    entered = asyncio.Event()

    async def slow(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/slow":
            entered.set()
            await gate.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})

    bastion = make(concurrency_config(1), slow)
    async with client(bastion) as http:
        first = asyncio.create_task(http.get("/slow"))
        await asyncio.wait_for(entered.wait(), 5)
        blocked = await http.get("/fast")
        assert blocked.status_code == 429
        assert blocked.headers["retry-after"] == "1"
        assert parse_headers(blocked)["policy"]["inflight"] == {"q": 1, "qu": "concurrent-requests"}
        gate.set()
        assert (await first).status_code == 200
        assert (await http.get("/fast")).status_code == 200
        assert (await http.get("/fast")).status_code == 200


async def test_concurrency_slot_released_when_the_app_raises(make: Make) -> None:
    bastion = make(concurrency_config(1))
    async with client(bastion) as http:
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/")).status_code == 200


async def test_concurrency_slot_released_on_client_disconnect(make: Make) -> None:
    async def waits_for_disconnect(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] == "/stream":
            while (await receive())["type"] != "http.disconnect":
                pass
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    bastion = make(concurrency_config(1), waits_for_disconnect)
    messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return await messages.get()

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    task = asyncio.create_task(bastion(scope, receive, send))
    await messages.put({"type": "http.request", "body": b"", "more_body": False})
    await asyncio.sleep(0.05)
    async with client(bastion) as http:
        assert (await http.get("/")).status_code == 429
        await messages.put({"type": "http.disconnect"})
        await asyncio.wait_for(task, 5)
        assert (await http.get("/")).status_code == 200

    # A cancelled request (the server gave up on it) frees its slot as well.
    task = asyncio.create_task(bastion(dict(scope), receive, send))
    await messages.put({"type": "http.request", "body": b"", "more_body": False})
    await asyncio.sleep(0.05)
    async with client(bastion) as http:
        assert (await http.get("/")).status_code == 429
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert (await http.get("/")).status_code == 200


async def test_concurrency_lease_frees_a_lost_slot() -> None:
    now = [0]
    store = MemoryStore(lambda: now[0])
    check = Check("k", Limit.build("concurrency", 1, 60_000_000), 1, False)
    assert store.decide_now([check], "crashed").admitted
    assert not store.decide_now([check], "next").admitted
    now[0] = 60_000_000
    assert store.decide_now([check], "next").admitted
