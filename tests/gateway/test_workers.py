"""Several gateway processes and one Redis: limits and idempotency hold exactly across them.

Gateway A runs two worker processes on one port, gateway B one more on another
port; every request is split between A and B.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.conftest import Server, start_gateway

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture(scope="module")
def gateways(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    from tests.conftest import REDIS_URL, require_service

    require_service("redis", REDIS_URL, 6379)
    run = uuid.uuid4().hex[:12]
    config: dict[str, Any] = {
        "upstream": upstream.base,
        "store": REDIS_URL,
        "rate_limits": {
            "key_prefix": f"bastion-test-gw-{run}",
            "on_store_error": "closed",
            # Exactness is under test, not the store deadline: a loaded machine must not turn
            # a slow Redis answer into a 503.
            "timeout": "2s",
            "rules": [{"name": "global", "key": "global", "match": "GET /limited", "limit": "20/hour"}],
        },
        "idempotency": {"key_prefix": f"bastion-test-gw-idem-{run}"},
    }
    workdir = tmp_path_factory.mktemp("workers")
    admin_port = free_port()
    first = start_gateway(workdir, config, workers=2, admin_port=admin_port, name="a")
    first.extra["admin"] = f"http://127.0.0.1:{admin_port}"
    try:
        second = start_gateway(workdir, config, name="b")
    except BaseException:
        first.stop()
        raise
    yield first, second
    first.stop()
    second.stop()


def children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        found.extend(int(p) for p in text)
    return found


async def split(bases: list[str], count: int, send: Any) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        return list(await asyncio.gather(*(send(client, bases[i % len(bases)]) for i in range(count))))


def test_gateway_runs_the_requested_worker_processes(gateways: tuple[Server, Server]) -> None:
    first, _ = gateways
    # uvicorn's supervisor, its two workers, and the multiprocessing resource tracker.
    assert len(children(first.process.pid)) >= 2


def test_one_global_limit_is_exact_across_processes(
    gateways: tuple[Server, Server], upstream: Server
) -> None:
    first, second = gateways
    before = httpx.get(upstream.base + "/count", params={"name": "limited"}, timeout=5).json()["count"]

    async def send(client: httpx.AsyncClient, base: str) -> httpx.Response:
        return await client.get(base + "/limited")

    responses = asyncio.run(split([first.base, second.base], 60, send))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 20, statuses
    assert statuses.count(429) == 40
    after = httpx.get(upstream.base + "/count", params={"name": "limited"}, timeout=5).json()["count"]
    assert after - before == 20


def test_concurrent_duplicates_run_the_upstream_once(
    gateways: tuple[Server, Server], upstream: Server
) -> None:
    first, second = gateways
    key = "dup-" + uuid.uuid4().hex

    async def send(client: httpx.AsyncClient, base: str) -> httpx.Response:
        return await client.post(base + "/orders", json={"item": "book"}, headers={"Idempotency-Key": key})

    responses = asyncio.run(split([first.base, second.base], 100, send))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {201, 409}, statuses
    created = [r.json() for r in responses if r.status_code == 201]
    assert created and all(body == created[0] for body in created)
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    count = httpx.get(upstream.base + "/count", params={"name": "orders:" + key}, timeout=5).json()["count"]
    assert count == 1


def test_admin_port_is_shared_by_the_workers(gateways: tuple[Server, Server]) -> None:
    first, _ = gateways
    for _ in range(10):
        httpx.get(first.base + "/echo/metrics", timeout=5)
    metrics = httpx.get(first.extra["admin"] + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "http_server_request_duration_seconds" in metrics.text
