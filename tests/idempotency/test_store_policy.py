"""The store failure policy (timeout, circuit breaker, open/closed) with a frozen Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import pytest

from bastion import Bastion
from bastion.stores import CircuitBreaker, StorePolicy
from tests.idempotency.apps import OrdersApp
from tests.idempotency.conftest import OwnRedis
from tests.support import LogCapture, client

ORDER = {"item": "book"}
TIMEOUT_S = 0.25


def frozen_redis_bastion(server: OwnRedis, policy: str) -> tuple[Bastion, OrdersApp, LogCapture]:
    app = OrdersApp()
    logs = LogCapture()
    idempotency = {
        "store": server.url,
        "on_store_error": policy,
        "timeout": "250ms",
        "breaker_failures": 2,
        "breaker_cooldown": "1s",
    }
    return (
        Bastion(app, {"store": "memory://", "idempotency": idempotency}, env={}, log_stream=logs),
        app,
        logs,
    )


async def timed_post(http: httpx.AsyncClient, key: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": key})
    return response, time.monotonic() - started


async def until_created(http: httpx.AsyncClient, key: str) -> httpx.Response:
    """Post ``key`` until it is created (the store is back), for at most 10 s."""
    deadline = time.monotonic() + 10
    response = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": key})
    while response.status_code != 201 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        response = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": key})
    return response


async def test_a_frozen_redis_costs_the_timeout_then_the_breaker_answers_at_once(own_redis: OwnRedis) -> None:
    bastion, app, logs = frozen_redis_bastion(own_redis, "closed")
    async with client(bastion) as http:
        assert (await until_created(http, "warm")).status_code == 201
        own_redis.freeze()
        try:
            first, first_s = await timed_post(http, "f1")
            second, second_s = await timed_post(http, "f2")
            # Two failures opened the breaker: the store is not asked again during the cool-down.
            third, third_s = await timed_post(http, "f3")
        finally:
            own_redis.thaw()
        recovered = await until_created(http, "after")
        replay = await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "after"})
        metrics = (await http.get("/metrics")).text
    await bastion.shutdown()
    assert [first.status_code, second.status_code, third.status_code] == [503, 503, 503]
    assert first.json()["code"] == "DEPENDENCY_UNAVAILABLE"
    # The timeout, not redis-py's 5 s socket timeout, and not much more.
    assert TIMEOUT_S * 0.8 <= first_s < TIMEOUT_S + 0.5
    assert TIMEOUT_S * 0.8 <= second_s < TIMEOUT_S + 0.5
    assert third_s < 0.15  # no store call at all
    assert third.headers["retry-after"] == "1"  # the cool-down left, rounded up
    assert recovered.status_code == 201
    assert replay.headers["idempotent-replayed"] == "true"
    assert app.executions == 2  # "warm" and "after": nothing ran while the store was frozen
    assert 'bastion_store_errors_total{operation="idempotency_claim",store="redis"} 2.0' in metrics
    assert len([r for r in logs.records() if r.get("event") == "idempotency store error"]) == 2


async def test_a_frozen_redis_with_the_open_policy_runs_requests_unprotected(own_redis: OwnRedis) -> None:
    bastion, app, _ = frozen_redis_bastion(own_redis, "open")
    async with client(bastion) as http:
        assert (await until_created(http, "warm")).status_code == 201
        own_redis.freeze()
        try:
            answers = [await timed_post(http, f"o{i}") for i in range(3)]
        finally:
            own_redis.thaw()
    await bastion.shutdown()
    assert [r.status_code for r, _ in answers] == [201, 201, 201]
    assert [s < TIMEOUT_S + 0.5 for _, s in answers] == [True, True, True]
    assert answers[2][1] < 0.15
    assert app.executions == 4


async def test_a_response_the_store_could_not_keep_is_logged_and_counted(own_redis: OwnRedis) -> None:
    bastion, app, logs = frozen_redis_bastion(own_redis, "closed")
    app.gate = asyncio.Event()
    async with client(bastion) as http:
        assert (await until_created(http, "warm")).status_code == 201
        slow = asyncio.ensure_future(
            http.post("/orders", json=ORDER, headers={"Idempotency-Key": "slow", "X-Mode": "slow"})
        )
        while app.executions < 2:  # the handler has started: its claim is made
            await asyncio.sleep(0.01)
        own_redis.freeze()
        try:
            app.gate.set()
            response = await slow
        finally:
            own_redis.thaw()
        metrics = (await http.get("/metrics")).text
    await bastion.shutdown()
    assert response.status_code == 201  # the client gets its answer all the same
    assert 'bastion_idempotency_events_total{event="not_stored"} 1.0' in metrics
    errors = [r for r in logs.records() if r.get("level") == "error"]
    assert any("not stored" in r["event"] for r in errors)


def test_the_rate_limits_and_idempotency_share_one_breaker_class() -> None:
    from bastion.ratelimit.stores import CircuitBreaker as RateLimitBreaker

    assert RateLimitBreaker is CircuitBreaker


@pytest.mark.parametrize("failures", [1, 3])
async def test_the_policy_opens_after_consecutive_failures_and_closes_on_success(failures: int) -> None:
    now = [0.0]
    policy = StorePolicy(
        timeout_s=0.25, fail_closed=True, breaker=CircuitBreaker(failures, 5.0, lambda: now[0])
    )

    async def fail() -> Any:
        raise ConnectionError("down")

    async def succeed() -> int:
        return 7

    for _ in range(failures):
        assert policy.allow()
        with pytest.raises(ConnectionError):
            await policy.call(fail())
    assert not policy.allow()
    assert policy.retry_after() == "5"
    now[0] = 5.0
    assert policy.allow()  # the probe
    assert await policy.call(succeed()) == 7
    assert policy.allow()
