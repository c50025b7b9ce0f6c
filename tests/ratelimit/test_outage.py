"""A Redis server of the test's own, killed mid-run and restarted: open, closed, and recovery."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from .conftest import RedisServer
from .helpers import client, make, metric

pytestmark = [pytest.mark.redis, pytest.mark.e2e]


def config(url: str, policy: str) -> dict[str, Any]:
    return {
        "rate_limits": {
            "store": url,
            "key_prefix": "outage-" + uuid.uuid4().hex,
            "on_store_error": policy,
            "breaker_failures": 2,
            "breaker_cooldown": "300ms",
            "rules": [{"name": "three", "key": "client", "limit": "3/minute", "algorithm": "fixed_window"}],
        }
    }


async def wait_for_enforcement(http: Any, deadline_s: float) -> list[int]:
    """Requests until one is limited again (the breaker's probe reaches the restarted Redis)."""
    statuses: list[int] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and len(statuses) < 200:
        statuses.append((await http.get("/")).status_code)
        if statuses[-1] == 429:
            break
        await asyncio.sleep(0.05)
    return statuses


async def test_open_keeps_serving_closed_answers_503_and_both_recover(redis_server: RedisServer) -> None:
    open_ = make(config(redis_server.url, "open"))
    closed = make(config(redis_server.url, "closed"))
    async with client(open_) as open_http, client(closed) as closed_http:
        # Redis up: limits enforced by both.
        assert [(await open_http.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert [(await closed_http.get("/")).status_code for _ in range(4)] == [200, 200, 200, 429]

        redis_server.kill()
        started = time.monotonic()
        open_statuses = [(await open_http.get("/")).status_code for _ in range(20)]
        closed_responses = [await closed_http.get("/") for _ in range(20)]
        elapsed = time.monotonic() - started
        assert open_statuses == [200] * 20
        assert [r.status_code for r in closed_responses] == [503] * 20
        assert closed_responses[0].json()["code"] == "DEPENDENCY_UNAVAILABLE"
        assert int(closed_responses[0].headers["retry-after"]) >= 1
        assert "ratelimit" not in closed_responses[0].headers
        errors = metric(open_, "bastion_store_errors_total", store="redis", operation="decide")
        assert errors >= 2
        # The breaker spares most requests the timeout: 40 requests took far less than 40 x 50 ms.
        assert errors < 20
        assert elapsed < 1.5

        redis_server.start()
        open_after = await wait_for_enforcement(open_http, 10)
        closed_after = await wait_for_enforcement(closed_http, 10)
    assert open_after[-1] == 429
    assert closed_after[-1] == 429
    # Once back, the closed instance answers requests again before the limit bites.
    assert 200 in closed_after
    await open_.shutdown()
    await closed.shutdown()
