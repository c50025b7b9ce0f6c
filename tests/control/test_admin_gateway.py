"""The admin API in front of ``bastion gateway --workers 4``, under load.

A change made through any worker's admin listener reaches every worker (each proven by
the connection it answers on), fails no request, and leaves the rate limit counters as
they were: a key never gets more than its limit across the reloads a change makes.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest
import redis

from bastion import Bastion
from bastion.control.change_stores import STORES
from bastion.control.changes import CONSUMER, Change
from tests.conftest import POSTGRES_URL, free_port, require_service
from tests.control.conftest import (
    children,
    hammer,
    load,
    one_connection_per_worker,
    relay,
    reloads_by_worker,
    until,
    wait_for_reloads,
    worker_of,
)
from tests.control.test_admin import hello
from tests.gateway.conftest import Server, start_gateway, start_upstream

pytestmark = [pytest.mark.e2e, pytest.mark.redis]

WORKERS = 4
ACME_KEY = "acme-key"
ACME = hashlib.sha256(ACME_KEY.encode()).hexdigest()
GLOBEX = hashlib.sha256(b"globex-key").hexdigest()
#: How long after the admin API answered the last worker must answer under the new limit.
APPLIED_WITHIN_S = 1.0


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.stop()


@pytest.fixture
def prefix(redis_url: str) -> Iterator[str]:
    """A key prefix of this test's own; its Redis keys are deleted afterwards."""
    name = f"bastion-test-admin-gw-{uuid.uuid4().hex[:8]}"
    yield name
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{{{name}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["redis", pytest.param("postgres", marks=pytest.mark.postgres)])
def admin_store(request: pytest.FixtureRequest, redis_url: str) -> Iterator[str | None]:
    """Where the admin changes are kept: ``None`` for the top-level store (Redis), or a
    PostgreSQL schema of this test's own (rate limits cannot be kept there)."""
    if request.param == "redis":
        yield None
        return
    require_service("postgres", POSTGRES_URL, 5432)
    schema = f"bastion_test_admin_gw_{uuid.uuid4().hex[:8]}"

    async def run(statement: str) -> None:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    try:
        # asyncpg hands query parameters it does not know to the server as settings; the
        # application name tells the gateway's connections apart.
        yield f"{POSTGRES_URL}?search_path={schema}&application_name={schema}"
    finally:
        asyncio.run(run(f"DROP SCHEMA {schema} CASCADE"))


def gateway_config(
    upstream: Server, redis_url: str, prefix: str, rules: list[dict[str, Any]], admin_store: str | None = None
) -> dict[str, Any]:
    """Rate limits and idempotency on Redis, two known consumers and the admin API on loopback."""
    admin: dict[str, Any] = {"listen": f"127.0.0.1:{free_port()}", "key_prefix": f"{prefix}-admin"}
    if admin_store is not None:
        admin["store"] = admin_store
    return {
        "upstream": upstream.base,
        "store": redis_url,
        "clients": {
            "keys": [
                {"sha256": ACME, "name": "acme", "tier": "free"},
                {"sha256": GLOBEX, "name": "globex", "tier": "free"},
            ]
        },
        "rate_limits": {"key_prefix": prefix, "timeout": "2s", "rules": rules},
        "idempotency": {"key_prefix": f"{prefix}-idem"},
        "admin": admin,
        # The connections pinned to the workers wait while the others are found.
        "gateway": {"client_keepalive_timeout": "60s"},
    }


async def store_connections(url: str) -> int:
    """How many connections to PostgreSQL carry the application name in ``url``."""
    name = url.rsplit("application_name=", 1)[1]
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        query = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1"
        return int(await conn.fetchval(query, name))
    finally:
        await conn.close()


async def acme_paid(url: str, key_prefix: str) -> None:
    """Write the change that puts acme on the paid tier to the admin store at ``url``."""
    store = STORES.open(url, key_prefix, key="admin.store")
    await store.start()
    try:
        change = Change(CONSUMER, ACME, "patch", {"tier": "paid"}, "ops", time.time())
        assert await store.write(change, expected=0) == 1
    finally:
        await store.close()


def policy(response: httpx.Response) -> str:
    """The ``RateLimit-Policy`` of ``response`` without its window: ``"api";q=N``."""
    return response.headers.get("ratelimit-policy", "").split(";w=")[0]


def test_a_raised_quota_reaches_every_worker_within_a_second_under_load(
    upstream: Server, redis_url: str, prefix: str, admin_store: str | None, tmp_path: Path
) -> None:
    rules = [
        {
            "name": "api",
            "match": "GET /count",
            "limit": "100000/hour",
            "tiers": {"free": "100000/hour", "paid": "200000/hour"},
        }
    ]
    config = gateway_config(upstream, redis_url, prefix, rules, admin_store)
    gateway = start_gateway(tmp_path, config, workers=WORKERS)
    headers = {"X-API-Key": ACME_KEY}
    try:
        before = reloads_by_worker(gateway)

        async def run() -> tuple[list[int], list[str], dict[int, float], float]:
            async with one_connection_per_worker(gateway, headers, WORKERS) as pinned:
                for client in pinned.values():
                    assert policy(await client.get("/count", params={"name": "before"})) == '"api";q=100000'
                done = asyncio.Event()
                sent: list[int] = []
                traffic = asyncio.create_task(
                    load(gateway.base, done, headers=headers, most=5000, statuses=sent)
                )
                try:
                    # The load runs a while before the change, and on after every worker applied it.
                    await until(lambda: len(sent) >= 100, "100 requests before the change")
                    async with httpx.AsyncClient(base_url=f"http://{config['admin']['listen']}") as admin:
                        changed = await admin.patch(
                            f"/v1/consumers/{ACME}", json={"tier": "paid"}, timeout=10
                        )
                    answered, answered_at = time.monotonic(), time.time()
                    assert changed.status_code == 200, changed.text
                    assert changed.json()["entry"]["tier"] == "paid"
                    applied: dict[int, float] = {}
                    for _ in range(500):
                        for pid, client in pinned.items():
                            if pid in applied:
                                continue
                            response = await client.get("/count", params={"name": "probe"})
                            assert worker_of(response, gateway.port, set(pinned)) == pid
                            if policy(response) == '"api";q=200000':
                                applied[pid] = time.monotonic() - answered
                        if len(applied) == WORKERS:
                            break
                        await asyncio.sleep(0.02)
                    count = len(sent)
                    await until(lambda: len(sent) >= count + 100, "100 requests after the change")
                finally:
                    done.set()
                    statuses, errors = await traffic
            return statuses, errors, applied, answered_at

        statuses, errors, applied, answered_at = asyncio.run(run())
        # Each of the four processes answered under the new limit, and is still the one serving.
        assert len(applied) == WORKERS and set(applied) <= children(gateway.process.pid), applied
        # Every worker says it reloaded, once: the change alone, no restart.
        wait_for_reloads(gateway, before, WORKERS)
        after = reloads_by_worker(gateway)
        assert {pid: count - before.get(pid, 0) for pid, count in after.items()} == dict.fromkeys(applied, 1)
        logged = {
            line["pid"]: round(line["ts"] - answered_at, 3)
            for line in gateway.log_lines()
            if str(line.get("event", "")).startswith("configuration reloaded")
        }
        print(f"applied after the admin answer (s), by worker: seen {applied}, logged {logged}")
        assert max(applied.values()) <= APPLIED_WITHIN_S, applied
        assert not errors, errors[:5]
        assert len(statuses) > 100 and set(statuses) == {200}, sorted(set(statuses))
    finally:
        gateway.stop()


@pytest.mark.parametrize(("algorithm", "period"), [("sliding_log", "hour"), ("gcra", "day")])
def test_no_request_over_the_limit_across_admin_changes_under_load(
    upstream: Server, redis_url: str, prefix: str, tmp_path: Path, algorithm: str, period: str
) -> None:
    # Exact within the test's span: a sliding log counts every admission of the last hour,
    # and GCRA with a burst of L per day gives one more only after 86400 / L seconds.
    limit = 1000
    rules = [
        {"name": "api", "match": "GET /count", "limit": f"{limit}/{period}", "algorithm": algorithm},
        {"name": "other", "match": "GET /limited", "limit": "1000/hour"},
    ]
    config = gateway_config(upstream, redis_url, prefix, rules)
    # Without access lines the log holds what the test reads: reloads and audit lines.
    config["logging"] = {"access": False}
    config["admin"]["poll_interval"] = "200ms"
    gateway = start_gateway(tmp_path, config, workers=WORKERS)
    headers = {"X-API-Key": ACME_KEY}
    # An unrelated rule (its limit and mode, then back), a new rule, another consumer and another
    # tier of the rule that counts: each change reloads every worker while the key's counter
    # must carry on as it was.
    changes: list[tuple[str, str, dict[str, Any] | None]] = [
        ("PATCH", "/v1/rules/other", {"limit": "500/hour", "mode": "shadow"}),
        ("PATCH", f"/v1/consumers/{GLOBEX}", {"tier": "paid"}),
        ("PATCH", "/v1/rules/api", {"tiers": {"paid": f"{limit * 10}/{period}"}}),
        ("PUT", "/v1/rules/extra", {"match": "GET /limited", "limit": "5/minute"}),
        ("DELETE", "/v1/rules/other/override", None),
        ("DELETE", f"/v1/consumers/{GLOBEX}/override", None),
    ]
    try:

        async def run() -> tuple[list[int], list[str], list[int]]:
            loaded: list[int] = []
            errors: list[str] = []
            admitted_at_change: list[int] = []
            async with (
                one_connection_per_worker(gateway, headers, WORKERS) as pinned,
                httpx.AsyncClient(base_url=f"http://{config['admin']['listen']}", timeout=10) as admin,
            ):
                per_worker: dict[int, list[int]] = {pid: [] for pid in pinned}
                done = asyncio.Event()
                traffic = asyncio.create_task(
                    load(gateway.base, done, headers=headers, most=20_000, statuses=loaded)
                )
                workers = [
                    asyncio.create_task(hammer(client, done, per_worker[pid], errors))
                    for pid, client in pinned.items()
                ]

                async def change(method: str, path: str, body: dict[str, Any] | None) -> None:
                    before = reloads_by_worker(gateway)
                    answer = await admin.request(method, path, json=body)
                    assert answer.status_code == 200, answer.text
                    await asyncio.to_thread(wait_for_reloads, gateway, before, WORKERS)
                    admitted_at_change.append(every_status().count(200))

                def every_status() -> list[int]:
                    return [*loaded, *(s for seen in per_worker.values() for s in seen)]

                try:
                    for method, path, body in changes[:3]:
                        await change(method, path, body)
                    # The key is spent on every worker before the last changes.
                    await until(
                        lambda: all(429 in seen for seen in per_worker.values()), "a 429 on every worker"
                    )
                    for method, path, body in changes[3:]:
                        await change(method, path, body)
                    sent = {pid: len(seen) for pid, seen in per_worker.items()}
                    await until(
                        lambda: all(len(seen) >= sent[pid] + 20 for pid, seen in per_worker.items()),
                        "20 requests on every worker after the last change",
                    )
                finally:
                    done.set()
                    _, load_errors = await traffic
                    await asyncio.gather(*workers)
            return every_status(), errors + load_errors, admitted_at_change

        statuses, errors, admitted_at_change = asyncio.run(run())
        print(
            f"{algorithm}: {len(statuses)} requests; admitted when each change was in force "
            f"everywhere: {admitted_at_change} (limit {limit})"
        )
        assert not errors, errors[:5]
        assert set(statuses) == {200, 429}, sorted(set(statuses))
        assert statuses.count(200) == limit
    finally:
        gateway.stop()


def test_workers_that_start_without_the_admin_store_apply_its_changes_once_it_answers(
    upstream: Server, redis_url: str, prefix: str, admin_store: str | None, tmp_path: Path
) -> None:
    rules = [{"name": "api", "match": "GET /count", "limit": "100000/hour", "tiers": {"paid": "200000/hour"}}]
    # The workers know the store by a port that answers only once the relay to it starts.
    store = urlsplit(admin_store or redis_url)
    assert store.hostname is not None and store.port is not None
    store_port = free_port()
    netloc = store.netloc.replace(f"{store.hostname}:{store.port}", f"127.0.0.1:{store_port}")
    config = gateway_config(upstream, redis_url, prefix, rules, store._replace(netloc=netloc).geturl())
    config["logging"] = {"access": False}

    # A change made before the workers start, kept where they cannot reach it yet.
    asyncio.run(acme_paid(admin_store or redis_url, config["admin"]["key_prefix"]))
    gateway = start_gateway(tmp_path, config, workers=WORKERS)
    headers = {"X-API-Key": ACME_KEY}
    try:

        async def run() -> tuple[list[int], list[str], dict[int, float], int]:
            opened = 0
            async with one_connection_per_worker(gateway, headers, WORKERS) as pinned:
                for client in pinned.values():
                    # The file's configuration applies, and the worker says it is not ready.
                    assert policy(await client.get("/count", params={"name": "x"})) == '"api";q=100000'
                    ready = await client.get("/_bastion/ready")
                    assert ready.status_code == 503 and "admin" in ready.json()["unreachable"], ready.text
                async with httpx.AsyncClient(base_url=f"http://{config['admin']['listen']}") as admin:
                    refused = await admin.patch(f"/v1/consumers/{ACME}", json={"tier": "free"}, timeout=10)
                # A change cannot be kept meanwhile: the store's 503, not an internal error.
                assert refused.status_code == 503, refused.text
                assert refused.json()["code"] == "DEPENDENCY_UNAVAILABLE"
                assert refused.headers["retry-after"] == "5"
                assert "nothing was changed" in refused.json()["detail"]
                done = asyncio.Event()
                sent: list[int] = []
                traffic = asyncio.create_task(
                    load(gateway.base, done, headers=headers, most=5000, statuses=sent)
                )
                applied: dict[int, float] = {}
                try:
                    await until(lambda: len(sent) >= 100, "100 requests before the store answers")
                    async with relay(store_port, (store.hostname, store.port)):
                        reachable = time.monotonic()
                        # Readiness checks as the store comes back, each on a connection of its
                        # own, while the workers poll it: each worker opens the store once.
                        probes = [httpx.AsyncClient(base_url=gateway.base, timeout=10) for _ in range(16)]
                        try:
                            await asyncio.gather(*(probe.get("/_bastion/ready") for probe in probes))
                        finally:
                            await asyncio.gather(*(probe.aclose() for probe in probes))

                        async def every_worker_applied() -> bool:
                            for pid, client in pinned.items():
                                if pid not in applied:
                                    response = await client.get("/count", params={"name": "probe"})
                                    if policy(response) == '"api";q=200000':
                                        applied[pid] = time.monotonic() - reachable
                            return len(applied) == WORKERS

                        for _ in range(500):
                            if await every_worker_applied():
                                break
                            await asyncio.sleep(0.02)
                        for client in pinned.values():
                            assert (await client.get("/_bastion/ready")).status_code == 200
                        async with httpx.AsyncClient(base_url=f"http://{config['admin']['listen']}") as admin:
                            version = (await admin.get("/v1/config", timeout=10)).json()["admin_version"]
                        assert version == 1, "the refused change was kept"
                        if admin_store is not None:
                            opened = await store_connections(admin_store)
                        count = len(sent)
                        await until(lambda: len(sent) >= count + 100, "100 requests after")
                finally:
                    done.set()
                    statuses, errors = await traffic
            return statuses, errors, applied, opened

        statuses, errors, applied, opened = asyncio.run(run())
        print(f"applied after the store answered (s), by worker: {applied}")
        # At most the pool's two connections per worker (PostgreSQL; Redis is not counted).
        print("connections to the admin store:", opened)
        assert opened <= 2 * WORKERS, f"{opened} connections to the admin store"
        assert len(applied) == WORKERS, applied
        unreachable = [
            line
            for line in gateway.log_lines()
            if line["event"].startswith("admin store unreachable at start")
        ]
        assert len(unreachable) == WORKERS, unreachable
        assert not errors, errors[:5]
        assert statuses and set(statuses) == {200}, sorted(set(statuses))
    finally:
        gateway.stop()


def test_workers_start_under_the_changes_already_made(
    upstream: Server, redis_url: str, prefix: str, tmp_path: Path
) -> None:
    rules = [{"name": "api", "match": "GET /count", "limit": "100000/hour", "tiers": {"paid": "200000/hour"}}]
    config = gateway_config(upstream, redis_url, prefix, rules)
    # Polls as often as allowed, so that one may fall due while a worker is still starting
    # (the start below that is slower than the poll makes sure of it).
    config["admin"]["poll_interval"] = "50ms"
    config["logging"] = {"access": False}
    asyncio.run(acme_paid(redis_url, config["admin"]["key_prefix"]))
    gateway = start_gateway(tmp_path, config, workers=WORKERS)
    try:

        async def run() -> set[str]:
            async with one_connection_per_worker(gateway, {"X-API-Key": ACME_KEY}, WORKERS) as pinned:
                return {policy(await c.get("/count", params={"name": "x"})) for c in pinned.values()}

        assert asyncio.run(run()) == {'"api";q=200000'}
    finally:
        gateway.stop()


class SlowResource:
    """A resource that takes longer to open than the admin poll interval (an upstream pool, say)."""

    name = "slow"

    async def start(self) -> None:
        """Open, slowly."""
        await asyncio.sleep(0.3)

    async def close(self) -> None:
        """Nothing to close."""

    async def ping(self) -> bool:
        """Always answers."""
        return True


async def test_a_start_slower_than_the_poll_applies_the_changes_already_made(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/admin.db"
    await acme_paid(store, "unused")
    config = {
        "store": "memory://",
        "clients": {"keys": [{"sha256": ACME, "name": "acme", "tier": "free"}]},
        "rate_limits": {"rules": [{"name": "api", "limit": "5/minute", "tiers": {"paid": "100/minute"}}]},
        "metrics": {"enabled": False},
        "admin": {"store": store, "poll_interval": "50ms", "listen": f"127.0.0.1:{free_port()}"},
    }
    bastion = Bastion(hello, config, env={})
    # Opened after the admin layer, so a poll falls due while start-up still holds its lock.
    bastion.add_resource(SlowResource())
    try:
        await asyncio.wait_for(bastion.startup(), 10)
        assert bastion.config.clients.known_keys()[0].tier == "paid"
        async with httpx.AsyncClient(base_url=f"http://{config['admin']['listen']}", timeout=10) as admin:
            assert (await admin.get(f"/v1/consumers/{ACME}")).json()["layers"]["tier"] == "admin"
    finally:
        await bastion.shutdown()
