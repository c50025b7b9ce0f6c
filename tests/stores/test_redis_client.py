"""The Redis client the Redis stores share: scripts that survive a flush, bounded batches,
and callers that fail (never hang) when the server dies or freezes."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bastion.stores.redis import Batcher, RedisResource, Script, ScriptCall
from tests.ratelimit.conftest import RedisServer

pytestmark = pytest.mark.redis

ECHO = Script("return ARGV[1]")
FAIL = Script("return redis.error_reply('refused')")
# Holds the server for about ``ARGV[1]`` ms: a call that is surely on the wire while others queue.
BUSY = Script(
    "local t = redis.call('TIME') local start = t[1] * 1000000 + t[2] "
    "repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - start >= ARGV[1] * 1000 return 1"
)


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[RedisResource]:
    resource = RedisResource(redis_server.url, timeout_s=1.0)
    yield resource
    await resource.close()


def echo(value: str) -> ScriptCall:
    return ECHO.call((), (value,))


async def script_calls(url: str) -> dict[str, int]:
    """How many EVALSHA and EVAL commands the server ran since its statistics were reset."""
    admin = aioredis.Redis.from_url(url)
    try:
        stats = await admin.info("commandstats")
    finally:
        await admin.aclose()
    return {k: stats.get(f"cmdstat_{k}", {}).get("calls", 0) for k in ("evalsha", "eval")}


async def test_a_flushed_script_cache_is_refilled_with_eval(
    client: RedisResource, redis_server: RedisServer
) -> None:
    await client.load(ECHO)
    assert await client.run([echo("a")]) == [b"a"]
    await client.redis.script_flush()
    await client.redis.config_resetstat()
    # Every call of the write meets NOSCRIPT; they are sent again together, with the script itself.
    assert await client.run([echo("b"), echo("c"), echo("d")]) == [b"b", b"c", b"d"]
    assert await script_calls(redis_server.url) == {"evalsha": 3, "eval": 3}
    # EVAL cached it: the next calls go with EVALSHA alone.
    assert await client.run([echo("e")]) == [b"e"]
    assert await script_calls(redis_server.url) == {"evalsha": 4, "eval": 3}


async def test_an_error_reply_fails_only_its_own_call(client: RedisResource) -> None:
    replies = await client.run([echo("a"), FAIL.call((), ()), echo("b")])
    assert replies[0] == b"a" and replies[2] == b"b"
    assert isinstance(replies[1], ResponseError) and "refused" in str(replies[1])


async def test_batches_are_bounded_and_every_caller_gets_its_own_reply(client: RedisResource) -> None:
    sizes: list[int] = []

    async def run(calls: list[ScriptCall]) -> list[Any]:
        sizes.append(len(calls))
        return await client.run(calls)

    batcher: Batcher[ScriptCall] = Batcher(run, client.track, max_batch=16)
    replies = await asyncio.gather(*(batcher.call(echo(str(i))) for i in range(300)))
    assert replies == [str(i).encode() for i in range(300)]
    # The first call goes alone; the callers that came meanwhile share the next calls, 16 at most.
    assert sizes[0] == 1
    assert max(sizes) == 16
    assert sum(sizes) == 300
    assert len(sizes) < 300 // 8


async def callers_while_busy(client: RedisResource, queued: int) -> tuple[Batcher[ScriptCall], list[Any]]:
    """A batcher with a slow call on the wire and ``queued`` callers behind it."""
    batcher: Batcher[ScriptCall] = Batcher(client.run, client.track, max_batch=8)
    tasks: list[Any] = [asyncio.ensure_future(batcher.call(BUSY.call((), (300,))))]
    await asyncio.sleep(0.05)
    tasks.extend(asyncio.ensure_future(batcher.call(echo(str(i)))) for i in range(queued))
    await asyncio.sleep(0.05)
    return batcher, tasks


async def test_a_killed_server_fails_every_queued_caller(
    client: RedisResource, redis_server: RedisServer
) -> None:
    await client.load(BUSY, ECHO)
    _, tasks = await callers_while_busy(client, 20)
    started = time.monotonic()
    redis_server.kill()
    outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=5)
    assert all(isinstance(o, (RedisConnectionError, OSError, TimeoutError)) for o in outcomes), outcomes
    assert time.monotonic() - started < 3
    assert not await client.ping()


async def test_a_frozen_server_times_out_every_queued_caller_then_recovers(
    client: RedisResource, redis_server: RedisServer
) -> None:
    await client.load(BUSY, ECHO)
    batcher, tasks = await callers_while_busy(client, 20)
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        outcomes = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=10)
        # Each call on the wire waits its timeout: the one in flight, then each queued batch.
        assert all(isinstance(o, TimeoutError) for o in outcomes), outcomes
        assert time.monotonic() - started < 1.0 * (1 + 20 // 8 + 1) + 1
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    assert await batcher.call(echo("back")) == b"back"
