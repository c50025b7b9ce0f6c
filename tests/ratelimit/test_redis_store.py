"""The Redis store's contract: NOSCRIPT recovery, hash-tagged keys that expire, one call per decision."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import redis.asyncio as aioredis

from bastion.ratelimit.algorithms import Limit
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.redis import RedisStore

from .conftest import RedisServer

pytestmark = pytest.mark.redis

ALGORITHMS = ["gcra", "fixed_window", "sliding_window", "sliding_log", "concurrency"]


async def test_script_is_reloaded_after_the_server_forgets_it(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, key_prefix="t-" + uuid.uuid4().hex)
    await store.start()
    limit = Limit.build("fixed_window", 3, 60_000_000)
    check = [Check("k", limit, 1, False)]
    assert (await store.decide(check, "a")).admitted
    await store.redis.script_flush()
    # The first call meets NOSCRIPT and is sent again with the script itself.
    assert (await store.decide(check, "b")).admitted
    results = await asyncio.gather(*(store.decide(check, f"c{i}") for i in range(3)))
    assert [r.admitted for r in results] == [True, False, False]
    await store.close()


async def test_keys_are_hash_tagged_and_expire(redis_url: str) -> None:
    prefix = "bastion-test-" + uuid.uuid4().hex
    store = RedisStore(redis_url, key_prefix=prefix)
    await store.start()
    checks = [
        Check(f"rule{i}|client", Limit.build(a, 5, 2_000_000), 1, False) for i, a in enumerate(ALGORITHMS)
    ]
    decision = await store.decide(checks, "req-1")
    assert decision.admitted
    client = aioredis.Redis.from_url(redis_url)
    keys = sorted(k.decode() for k in await client.keys("{" + prefix + "}:*"))
    assert len(keys) == len(ALGORITHMS)
    for key in keys:
        assert key.startswith("{" + prefix + "}:")
        ttl = await client.pttl(key)
        assert 0 < ttl <= 4_100
    await store.release(checks, "req-1")
    await client.delete(*keys)
    await client.aclose()
    await store.close()


async def test_a_rejected_request_writes_nothing(redis_url: str) -> None:
    prefix = "bastion-test-" + uuid.uuid4().hex
    store = RedisStore(redis_url, key_prefix=prefix)
    wide = Check("wide", Limit.build("sliding_log", 10, 60_000_000), 1, False)
    narrow = Check("narrow", Limit.build("fixed_window", 1, 60_000_000), 1, False)
    assert (await store.decide([wide, narrow], "1")).admitted
    for i in range(3):
        assert not (await store.decide([wide, narrow], f"r{i}")).admitted
    client = aioredis.Redis.from_url(redis_url)
    key = "{" + prefix + "}:3:wide"
    assert await client.zcard(key) == 1
    await client.delete(key, "{" + prefix + "}:1:narrow")
    await client.aclose()
    await store.close()


async def test_concurrent_decisions_share_script_calls(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, key_prefix="t-" + uuid.uuid4().hex)
    await store.start()
    client = aioredis.Redis.from_url(redis_server.url)
    checks = [Check(f"r{i}", Limit.build("gcra", 30, 60_000_000), 1, False) for i in range(3)]
    # One at a time: one script call each, all rules inside it.
    await client.config_resetstat()
    for i in range(5):
        assert (await store.decide(checks, f"s{i}")).admitted
    assert await script_calls(client) == 5
    # 50 at once: they share calls, and each is still decided exactly.
    await client.config_resetstat()
    decisions = await asyncio.gather(*(store.decide(checks, f"q{i}") for i in range(50)))
    calls = await script_calls(client)
    assert 1 <= calls < 50
    assert sum(d.admitted for d in decisions) == 30 - 5
    await client.aclose()
    await store.close()


async def script_calls(client: aioredis.Redis) -> int:
    stats = await client.info("commandstats")
    return sum(v["calls"] for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def test_a_server_that_stops_answering_times_out_and_recovers(redis_server: RedisServer) -> None:
    import os
    import signal
    import time

    store = RedisStore(redis_server.url, key_prefix="t-" + uuid.uuid4().hex, timeout_s=0.05)
    await store.start()
    check = [Check("k", Limit.build("fixed_window", 100, 60_000_000), 1, False)]
    assert (await store.decide(check, "a")).admitted
    assert redis_server.process is not None
    os.kill(redis_server.process.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError):
            await store.decide(check, "b")
        assert time.monotonic() - started < 1.0
    finally:
        os.kill(redis_server.process.pid, signal.SIGCONT)
    decision = await store.decide(check, "c")
    assert decision.admitted
    await store.close()


async def test_a_long_queue_is_sent_in_bounded_calls(redis_url: str) -> None:
    store = RedisStore(redis_url, key_prefix="bastion-test-" + uuid.uuid4().hex)
    check = [Check("k", Limit.build("fixed_window", 300, 60_000_000), 1, False)]
    decisions = await asyncio.gather(*(store.decide(check, f"q{i}") for i in range(400)))
    assert sum(d.admitted for d in decisions) == 300
    await store.close()
