"""An unreachable store: 503 with on_store_error closed, an unprotected run with open."""

from __future__ import annotations

import asyncio
import subprocess
from typing import Any

import pytest

from bastion import Bastion
from tests.conftest import free_port
from tests.idempotency.apps import OrdersApp
from tests.idempotency.conftest import OwnRedis
from tests.support import LogCapture, client

ORDER = {"item": "book"}


def dead_store(kind: str) -> str:
    port = free_port()
    if kind == "redis":
        return f"redis://127.0.0.1:{port}/0"
    if kind == "postgres":
        return f"postgresql://postgres@127.0.0.1:{port}/test"
    return "sqlite:////proc/no-such-dir/idempotency.db"


@pytest.mark.parametrize("kind", ["sqlite", "redis", "postgres"])
@pytest.mark.parametrize("policy", ["closed", "open"])
async def test_unreachable_store(kind: str, policy: str) -> None:
    app = OrdersApp()
    logs = LogCapture()
    config = {
        "store": "memory://",
        "idempotency": {"store": dead_store(kind), "on_store_error": policy, "require": ["POST /orders"]},
    }
    bastion = Bastion(app, config, env={}, log_stream=logs)
    async with client(bastion) as http:
        responses = [
            await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "k"}) for _ in range(2)
        ]
        metrics = (await http.get("/metrics")).text
    await bastion.shutdown()
    if policy == "closed":
        assert [r.status_code for r in responses] == [503, 503]
        assert responses[0].json()["code"] == "DEPENDENCY_UNAVAILABLE"
        assert responses[0].headers["retry-after"] == "1"
        assert app.executions == 0
    else:
        assert [r.status_code for r in responses] == [201, 201]
        assert app.executions == 2
        access = [r for r in logs.records() if r.get("event") == "request" and r["path"] == "/orders"]
        assert [r["idempotency"] for r in access] == ["unprotected", "unprotected"]
    assert 'bastion_idempotency_events_total{event="store_error"} 2.0' in metrics
    assert f'bastion_store_errors_total{{operation="idempotency_claim",store="{kind}"}} 2.0' in metrics
    warnings = [r for r in logs.records() if r.get("event") == "idempotency store error"]
    assert len(warnings) == 2


async def test_redis_going_away_and_coming_back(own_redis: OwnRedis) -> None:
    port, start_again = own_redis.port, own_redis.start
    app = OrdersApp()
    # A short breaker cool-down: the failed attempts while the server restarts open it.
    idempotency = {"store": f"redis://127.0.0.1:{port}/0", "lease": "5s", "breaker_cooldown": "50ms"}
    config = {"store": "memory://", "idempotency": idempotency}
    bastion = Bastion(app, config, env={}, log_stream=LogCapture())

    async def post(value: str) -> Any:
        async with client(bastion) as http:
            return await http.post("/orders", json=ORDER, headers={"Idempotency-Key": value})

    for _ in range(50):
        if (await post("warm")).status_code == 201:
            break
        await asyncio.sleep(0.05)
    assert (await post("k1")).status_code == 201
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], check=False, capture_output=True)
    await asyncio.sleep(0.2)
    down = await post("k2")
    assert down.status_code == 503
    start_again()
    recovered = None
    for _ in range(50):
        recovered = await post("k3")
        if recovered.status_code == 201:
            break
        await asyncio.sleep(0.05)
    assert recovered is not None and recovered.status_code == 201
    # The new server is empty and has no scripts: EVALSHA gets NOSCRIPT and falls back to EVAL.
    again = await post("k3")
    assert again.headers["idempotent-replayed"] == "true"
    await bastion.shutdown()
