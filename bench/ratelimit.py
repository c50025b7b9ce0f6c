"""Rate limit decisions: bastion beside limits (memory, Redis sync and asyncio) and slowapi, in one run.

    .venv/bin/python bench/ratelimit.py [--quick]

1. Memory: the cost of one decision (one rule, one key that never runs out),
   bastion's algorithms against limits' fixed, moving and sliding windows.
2. Redis: decisions per second, one caller in sequence and 64 concurrent callers,
   against limits' Redis storage (threads for 64 callers) and limits.aio.
3. ASGI: what the whole rate limit guard adds to a Starlette request, against slowapi.

Rows over the limit decide a rule that refuses every request, in shadow mode (admitted
anyway) or with ``throttle`` (each queued for a slot): the cost of those paths.

Absolute numbers drift on a shared machine; compare the ratios, which come from
measurements interleaved in the same run. In-process sections count CPU time of
this process (time spent waiting for a core is not the code's cost); the Redis
section is wall time, since waiting for Redis is the point.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import limits
import limits.aio.storage
import limits.aio.strategies
import limits.storage
import limits.strategies
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asgi_driver import call, make_scope
from bastion import Bastion
from bastion.ratelimit.algorithms import Limit
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.memory import MemoryStore
from bastion.ratelimit.stores.redis import RedisStore

REDIS = "redis://127.0.0.1:6379/0"
QUICK = "--quick" in sys.argv
HUGE = 1_000_000_000  # requests per second: a limit the benchmark never reaches


def per_call_us(fn: Callable[[], Any], calls: int, rounds: int) -> float:
    """Median over rounds of the mean CPU microseconds per call.

    CPU time of this process, not wall time: on a machine shared with other work
    the time spent waiting for a core is not the code's cost.
    """
    for _ in range(min(calls, 2000)):
        fn()
    samples = []
    for _ in range(rounds):
        start = time.process_time_ns()
        for _ in range(calls):
            fn()
        samples.append((time.process_time_ns() - start) / calls / 1000)
    return statistics.median(samples)


def noop() -> None:
    """The cheapest call Python can make: the unit the other rows can be read in."""


def memory_section() -> list[tuple[str, float]]:
    calls, rounds = (20_000, 3) if QUICK else (200_000, 7)
    store = MemoryStore()
    rows: list[tuple[str, float]] = [("an empty Python function call", per_call_us(noop, calls, rounds))]
    # 1000 clients, visited in turn: every implementation sees the same keys and never runs out.
    clients = [f"{i:016x}" for i in range(1000)]
    for algorithm in ("gcra", "fixed_window", "sliding_window"):
        limit = Limit.build(algorithm, 100_000, 1_000_000)
        keys = itertools.cycle([f"per-client|key:{c}" for c in clients])
        hit = store.hit

        def one(limit: Limit = limit, keys: Any = keys, hit: Any = hit) -> Any:
            return hit(next(keys), limit)

        rows.append((f"bastion {algorithm}", per_call_us(one, calls, rounds)))
    # The atomic multi-rule entry point, here with one rule, and the exact log (which needs it).
    for algorithm in ("gcra", "sliding_log"):
        limit = Limit.build(algorithm, 100_000, 1_000_000)
        keys = itertools.cycle([f"per-client|key:{c}" for c in clients])
        decide = store.decide_now

        def atomic(limit: Limit = limit, keys: Any = keys, decide: Any = decide) -> Any:
            return decide([Check(next(keys), limit, 1, False)], "r")

        rows.append((f"bastion {algorithm}, decide_now([check])", per_call_us(atomic, calls, rounds)))
    # Over the limit: a rule in shadow mode (refused, admitted anyway) and one with throttle
    # (every request queued for a slot; an hour of queue per key outlasts the run).
    over = Limit.build("gcra", 1, 3_600_000_000)
    queued = Limit.build("gcra", 1, 1_000_000, max_delay_us=3_600_000_000, queue_limit=1_000_000)
    for name, limit, shadow in (
        ("bastion gcra over the limit, shadow mode", over, True),
        ("bastion gcra over the limit, throttle (queued)", queued, False),
    ):
        keys = itertools.cycle([f"over|key:{c}" for c in clients])

        def over_limit(limit: Limit = limit, keys: Any = keys, shadow: bool = shadow) -> Any:
            return store.decide_now([Check(next(keys), limit, 1, shadow)], "r")

        rows.append((f"{name}, decide_now([check])", per_call_us(over_limit, calls, rounds)))
    storage = limits.storage.MemoryStorage()
    item = limits.RateLimitItemPerSecond(100_000)
    for name, strategy in (
        ("fixed window", limits.strategies.FixedWindowRateLimiter(storage)),
        ("moving window", limits.strategies.MovingWindowRateLimiter(storage)),
        ("sliding window counter", limits.strategies.SlidingWindowCounterRateLimiter(storage)),
    ):
        keys = itertools.cycle(clients)

        def hit(strategy: Any = strategy, keys: Any = keys) -> Any:
            return strategy.hit(item, "per-client", next(keys))

        rows.append((f"limits {name}", per_call_us(hit, calls, rounds)))
    return rows


async def redis_rate_async(decide: Callable[[int], Any], callers: int, total: int) -> float:
    """Decisions per second with ``callers`` concurrent tasks making ``total`` decisions in all."""
    per_caller = total // callers

    async def caller(c: int) -> None:
        for i in range(per_caller):
            await decide(c * per_caller + i)

    start = time.perf_counter()
    await asyncio.gather(*(caller(c) for c in range(callers)))
    return callers * per_caller / (time.perf_counter() - start)


def redis_rate_threads(decide: Callable[[int], Any], callers: int, total: int) -> float:
    per_caller = total // callers

    def caller(c: int) -> None:
        for i in range(per_caller):
            decide(c * per_caller + i)

    threads = [threading.Thread(target=caller, args=(c,)) for c in range(callers)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return callers * per_caller / (time.perf_counter() - start)


async def redis_section() -> dict[str, dict[str, float]]:
    """Decisions per second: {setup: {1: rate, 64: rate}} (median of rounds, interleaved)."""
    prefix = "bench-" + uuid.uuid4().hex
    total = 1_000 if QUICK else 4_000
    rounds = 1 if QUICK else 3
    store = RedisStore(REDIS, key_prefix=prefix)
    await store.start()
    gcra = Limit.build("gcra", HUGE, 1_000_000)
    sliding = Limit.build("sliding_window", HUGE, 1_000_000)
    over = Limit.build("gcra", 1, 3_600_000_000)
    queued = Limit.build("gcra", 1, 1_000_000, max_delay_us=3_600_000_000, queue_limit=1_000_000)

    def bastion_decide(limit: Limit, shadow: bool = False) -> Callable[[int], Any]:
        async def decide(i: int) -> Any:
            return await store.decide([Check(f"c|{i % 1000}", limit, 1, shadow)], "r")

        return decide

    sync_storage = limits.storage.RedisStorage(REDIS)
    async_storage = limits.aio.storage.RedisStorage("async+" + REDIS)
    item = limits.RateLimitItemPerSecond(HUGE)
    sync_fixed = limits.strategies.FixedWindowRateLimiter(sync_storage)
    sync_sliding = limits.strategies.SlidingWindowCounterRateLimiter(sync_storage)
    async_fixed = limits.aio.strategies.FixedWindowRateLimiter(async_storage)
    async_sliding = limits.aio.strategies.SlidingWindowCounterRateLimiter(async_storage)
    tag = prefix

    def sync_decide(strategy: Any) -> Callable[[int], Any]:
        return lambda i: strategy.hit(item, tag, str(i % 1000))

    def async_decide(strategy: Any) -> Callable[[int], Any]:
        async def decide(i: int) -> Any:
            return await strategy.hit(item, tag, str(i % 1000))

        return decide

    setups: dict[str, tuple[str, Callable[[int], Any]]] = {
        "bastion gcra": ("async", bastion_decide(gcra)),
        "bastion sliding window": ("async", bastion_decide(sliding)),
        "bastion gcra over the limit, shadow mode": ("async", bastion_decide(over, shadow=True)),
        "bastion gcra over the limit, throttle (queued)": ("async", bastion_decide(queued)),
        "limits fixed window (sync)": ("sync", sync_decide(sync_fixed)),
        "limits sliding window (sync)": ("sync", sync_decide(sync_sliding)),
        "limits.aio fixed window": ("async", async_decide(async_fixed)),
        "limits.aio sliding window": ("async", async_decide(async_sliding)),
    }
    samples: dict[str, dict[int, list[float]]] = {name: {1: [], 64: []} for name in setups}
    for kind, decide in setups.values():  # warm connections and scripts
        if kind == "async":
            await redis_rate_async(decide, 8, 200)
        else:
            redis_rate_threads(decide, 8, 200)
    for _ in range(rounds):
        for callers in (1, 64):
            for name, (kind, decide) in setups.items():
                n = total if callers == 64 else total // 4
                if kind == "async":
                    rate = await redis_rate_async(decide, callers, n)
                else:
                    rate = await asyncio.to_thread(redis_rate_threads, decide, callers, n)
                samples[name][callers].append(rate)
    await store.close()
    # limits' keys carry the tag; bastion's expire within two seconds on their own.
    import redis

    cleanup = redis.Redis.from_url(REDIS)
    batch = list(cleanup.scan_iter(match=f"*{tag}*", count=1000))
    for i in range(0, len(batch), 500):
        cleanup.delete(*batch[i : i + 500])
    cleanup.close()
    return {name: {c: statistics.median(v) for c, v in by.items()} for name, by in samples.items()}


async def endpoint(request: Request) -> Response:
    return Response(b"ok")


def asgi_apps() -> dict[str, Any]:
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    def starlette() -> Starlette:
        return Starlette(routes=[Route("/items/{id}", endpoint)])

    bare = starlette()
    slow = starlette()
    slow.state.limiter = Limiter(key_func=get_remote_address, default_limits=[f"{HUGE}/second"])
    slow.add_middleware(SlowAPIASGIMiddleware)
    quiet = {"logging": {"access": False}, "metrics": {"enabled": True}, "store": "memory://"}
    no_rules = Bastion(starlette(), quiet, env={}, log_stream=io.BytesIO())
    one_rule = Bastion(
        starlette(),
        {**quiet, "rate_limits": {"rules": [{"name": "per-client", "limit": f"{HUGE}/second"}]}},
        env={},
        log_stream=io.BytesIO(),
    )
    shadow_rule = Bastion(
        starlette(),
        {
            **quiet,
            "rate_limits": {"rules": [{"name": "per-client", "limit": f"{HUGE}/second", "mode": "shadow"}]},
        },
        env={},
        log_stream=io.BytesIO(),
    )
    throttle_rule = Bastion(
        starlette(),
        {
            **quiet,
            "rate_limits": {
                "rules": [
                    {"name": "per-client", "limit": f"{HUGE}/second", "throttle": {"max_delay": "500ms"}}
                ]
            },
        },
        env={},
        log_stream=io.BytesIO(),
    )
    demo_rules = Bastion(
        starlette(),
        {
            **quiet,
            "rate_limits": {
                "rules": [
                    {"name": "global", "key": "global", "limit": f"{HUGE}/second"},
                    {"name": "per-client", "limit": f"{HUGE}/second", "tiers": {"paid": f"{HUGE}/second"}},
                    {"name": "login", "match": "POST /login", "key": "ip", "limit": "5/minute"},
                ]
            },
        },
        env={},
        log_stream=io.BytesIO(),
    )
    return {
        "bare Starlette": bare,
        "slowapi (1 limit)": slow,
        "bastion, no rules": no_rules,
        "bastion, 1 rule": one_rule,
        "bastion, 1 rule in shadow mode": shadow_rule,
        "bastion, 1 rule with throttle (never waits)": throttle_rule,
        "bastion, demo rules (2 match)": demo_rules,
    }


async def compare_cpu(apps: dict[str, Any], requests: int, rounds: int) -> dict[str, float]:
    """Median CPU microseconds per request of each app, the apps interleaved round by round."""
    for app in apps.values():
        for i in range(300):
            assert await call(app, *request(i)) == 200
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for r in range(rounds):
        prepared = [request(r * requests + i) for i in range(requests)]
        for name, app in apps.items():
            start = time.process_time_ns()
            for scope, body in prepared:
                await call(app, scope, body)
            samples[name].append((time.process_time_ns() - start) / requests / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def request(i: int) -> tuple[dict[str, Any], bytes]:
    headers = [(b"host", b"bench"), (b"x-api-key", b"key-%d" % (i % 50))]
    return make_scope("GET", f"/items/{i % 100}", headers), b""


async def main() -> None:
    print("Load was shared with other work on a 2-core machine; compare ratios, not absolutes.\n")
    rows = memory_section()
    base = {name: us for name, us in rows}
    print("## Memory: one decision (median CPU us per call)\n")
    print("| implementation | us per decision | vs bastion gcra |")
    print("|---|---:|---:|")
    for name, us in rows:
        print(f"| {name} | {us:.3f} | {us / base['bastion gcra']:.2f}x |")

    print("\n## Redis: decisions per second (median of interleaved rounds)\n")
    try:
        redis_rows = await redis_section()
    except Exception:  # the section needs a Redis server
        import traceback

        print("skipped:\n" + traceback.format_exc())
    else:
        aio = redis_rows["limits.aio fixed window"]
        print("| implementation | 1 caller | 64 callers | 64 callers vs limits.aio fixed |")
        print("|---|---:|---:|---:|")
        for name, rates in redis_rows.items():
            print(f"| {name} | {rates[1]:,.0f}/s | {rates[64]:,.0f}/s | {rates[64] / aio[64]:.2f}x |")

    print("\n## ASGI: a GET through Starlette (median CPU us per request)\n")
    apps = asgi_apps()
    results = await compare_cpu(apps, requests=500 if QUICK else 2000, rounds=5 if QUICK else 15)
    bare = results["bare Starlette"]
    slowapi_added = results["slowapi (1 limit)"] - bare
    print("| configuration | us per request | added vs bare | added vs slowapi's |")
    print("|---|---:|---:|---:|")
    for name, us in results.items():
        added = us - bare
        ratio = f"{added / slowapi_added:.2f}x" if slowapi_added > 0 and name != "bare Starlette" else ""
        print(f"| {name} | {us:.2f} | {added:+.2f} us | {ratio} |")
    guard_only = results["bastion, 1 rule"] - results["bastion, no rules"]
    print(f"\nthe rate limit guard alone (1 rule minus no rules): {guard_only:+.2f} us per request")


if __name__ == "__main__":
    asyncio.run(main())
