"""The Redis stores on a Redis Cluster of three masters, shared by two gateway workers:
exact rate limits, exactly-once idempotency, script calls routed by slot, and where the
keys land (read back from the servers with ``CLUSTER KEYSLOT``)."""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
import redis

from bastion import Bastion
from bastion.stores import parse_store_url
from bastion.stores.redis import RedisResource, Script, ScriptCall
from tests.idempotency.apps import OrdersApp
from tests.ratelimit.helpers import make, ok_app
from tests.stores.cluster import RedisCluster
from tests.support import client

pytestmark = pytest.mark.redis

# Writes ARGV[1] to its key and says which node's memory it is in.
SET = Script("redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]")
ORDER = {"item": "book", "amount": 1200}


def set_call(key: str, value: str) -> ScriptCall:
    return SET.call((key,), (value,))


def node_of(cluster: RedisCluster) -> dict[int, int]:
    """The port of the master that owns each slot."""
    owner: dict[int, int] = {}
    with redis.Redis(port=cluster.ports[0]) as admin:
        for start, end, master, *_ in admin.execute_command("CLUSTER", "SLOTS"):
            for slot in range(int(start), int(end) + 1):
                owner[slot] = int(master[1])
    return owner


def keys_by_slot(cluster: RedisCluster, match: str) -> dict[str, tuple[int, int]]:
    """Every key matching ``match`` on every master: its slot (``CLUSTER KEYSLOT``) and the
    master that holds it; each slot is checked to hold keys (``CLUSTER COUNTKEYSINSLOT``)."""
    found: dict[str, tuple[int, int]] = {}
    for port in cluster.ports:
        with redis.Redis(port=port) as node:
            for raw in node.scan_iter(match=match, count=1000):
                key = raw.decode()
                slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
                assert int(node.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)) >= 1
                found[key] = (slot, port)
    return found


def test_a_cluster_url_is_a_redis_store_url() -> None:
    assert parse_store_url("redis+cluster://127.0.0.1:7000").kind == "redis"
    assert parse_store_url("rediss+cluster://u:secret@h:7000").redacted == "rediss+cluster://u:***@h:7000"
    with pytest.raises(ValueError, match="database 0 only"):
        parse_store_url("redis+cluster://127.0.0.1:7000/3")


async def test_each_call_of_one_batch_runs_on_the_master_of_its_slot(redis_cluster: RedisCluster) -> None:
    resource = RedisResource(redis_cluster.url, timeout_s=2.0)
    tag = uuid.uuid4().hex
    keys = [f"t:{{{tag}-{i}}}" for i in range(24)]
    try:
        replies = await resource.run([set_call(key, str(i)) for i, key in enumerate(keys)])
    finally:
        await resource.close()
    assert replies == [str(i).encode() for i in range(len(keys))]
    owner = node_of(redis_cluster)
    stored = keys_by_slot(redis_cluster, f"t:{{{tag}-*")
    assert set(stored) == set(keys)
    for key, (slot, port) in stored.items():
        assert owner[slot] == port, key
    # The batch covered every master, so it was really split by node.
    assert {port for _, port in stored.values()} == set(redis_cluster.ports)


async def test_a_flushed_script_cache_is_refilled_on_every_node(redis_cluster: RedisCluster) -> None:
    resource = RedisResource(redis_cluster.url, timeout_s=2.0)
    tag = uuid.uuid4().hex
    try:
        await resource.run([set_call(f"f:{{{tag}-{i}}}", "a") for i in range(12)])
        for port in redis_cluster.ports:
            redis_cluster.cli(port, "SCRIPT", "FLUSH")
        replies = await resource.run([set_call(f"f:{{{tag}-{i}}}", "b") for i in range(12)])
    finally:
        await resource.close()
    assert replies == [b"b"] * 12


async def test_a_moved_slot_is_followed(redis_cluster: RedisCluster) -> None:
    resource = RedisResource(redis_cluster.url, timeout_s=2.0)
    key = f"m:{{{uuid.uuid4().hex}}}"
    try:
        assert await resource.run([set_call(key, "before")]) == [b"before"]
        with redis.Redis(port=redis_cluster.ports[0]) as admin:
            slot = int(admin.execute_command("CLUSTER", "KEYSLOT", key))
        old = node_of(redis_cluster)[slot]
        new = next(port for port in redis_cluster.ports if port != old)
        new_id = redis_cluster.cli(new, "CLUSTER", "MYID").strip()
        # Empty the slot first: a slot with keys cannot change owner without migrating them.
        redis_cluster.cli(old, "DEL", key)
        for port in (new, old, *(p for p in redis_cluster.ports if p not in (new, old))):
            redis_cluster.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", new_id)
        # The client still maps the slot to the old master: its MOVED reply redirects the call.
        assert await resource.run([set_call(key, "after")]) == [b"after"]
        assert "errorstat_MOVED:count=1" in redis_cluster.cli(old, "INFO", "errorstats")
    finally:
        await resource.close()
    assert keys_by_slot(redis_cluster, key) == {key: (slot, new)}


async def test_a_slot_being_migrated_is_followed_with_asking(redis_cluster: RedisCluster) -> None:
    resource = RedisResource(redis_cluster.url, timeout_s=2.0)
    key = f"a:{{{uuid.uuid4().hex}}}"
    try:
        assert await resource.run([set_call(f"a:{{{uuid.uuid4().hex}}}", "warm")]) == [b"warm"]
        with redis.Redis(port=redis_cluster.ports[0]) as admin:
            slot = int(admin.execute_command("CLUSTER", "KEYSLOT", key))
        old = node_of(redis_cluster)[slot]
        new = next(port for port in redis_cluster.ports if port != old)
        old_id, new_id = (redis_cluster.cli(p, "CLUSTER", "MYID").strip() for p in (old, new))
        redis_cluster.cli(new, "CLUSTER", "SETSLOT", str(slot), "IMPORTING", old_id)
        redis_cluster.cli(old, "CLUSTER", "SETSLOT", str(slot), "MIGRATING", new_id)
        # The key is not on the migrating master: it answers ASK, and the call goes to
        # the importing one, after ASKING.
        assert await resource.run([set_call(key, "moving")]) == [b"moving"]
        assert "errorstat_ASK:count=1" in redis_cluster.cli(old, "INFO", "errorstats")
        for port in (new, old, *(p for p in redis_cluster.ports if p not in (new, old))):
            redis_cluster.cli(port, "CLUSTER", "SETSLOT", str(slot), "NODE", new_id)
    finally:
        await resource.close()
    assert keys_by_slot(redis_cluster, key) == {key: (slot, new)}


def gateway(app: Any, cluster: RedisCluster, rate_limits: dict[str, Any] | None, prefix: str) -> Bastion:
    """One gateway worker: its own Bastion, stores and connections, on the cluster."""
    config: dict[str, Any] = {
        "idempotency": {
            "store": cluster.url,
            "key_prefix": f"{prefix}:idem",
            "require": ["POST /orders"],
            "lease": "10s",
            "wait": "10s",
        }
    }
    if rate_limits is not None:
        config = {"idempotency": {"enabled": False}, "rate_limits": {"store": cluster.url, **rate_limits}}
    return make(config, app)


async def test_rate_limits_are_exact_across_two_workers(redis_cluster: RedisCluster) -> None:
    prefix = f"rl-{uuid.uuid4().hex}"
    limits = {
        "key_prefix": prefix,
        "timeout": "2s",
        "rules": [
            {"name": "global", "key": "global", "limit": "100000/hour"},
            {"name": "per-client", "key": "header:x-client", "limit": "20/hour"},
        ],
    }
    workers = [gateway(ok_app, redis_cluster, limits, prefix) for _ in range(2)]
    clients = [client(worker) for worker in workers]
    try:
        statuses = await asyncio.gather(
            *(clients[i % 2].get("/", headers={"x-client": "alice"}) for i in range(60))
        )
        # Other clients, for where their keys land.
        for n in range(30):
            await clients[n % 2].get("/", headers={"x-client": f"client-{n}"})
    finally:
        for http in clients:
            await http.aclose()
        for worker in workers:
            await worker.shutdown()
    assert sorted(r.status_code for r in statuses) == [200] * 20 + [429] * 40
    stored = keys_by_slot(redis_cluster, f"{{{prefix}}}:*")
    assert f"{{{prefix}}}:0:global|*" in stored
    assert sum("per-client|" in key for key in stored) == 31
    # Every key carries the prefix as its hash tag: all of a request's rules (and every
    # request of a batch) are decided by one script call on one master. The price: all
    # of one prefix's rate limit keys are on that master (docs/rate-limits.md).
    assert len({slot for slot, _ in stored.values()}) == 1


async def test_idempotency_runs_concurrent_duplicates_once_across_two_workers(
    redis_cluster: RedisCluster,
) -> None:
    prefix = f"idem-{uuid.uuid4().hex}"
    app = OrdersApp()
    workers = [gateway(app, redis_cluster, None, prefix) for _ in range(2)]
    clients = [client(worker) for worker in workers]
    keys = [f"order-{i}" for i in range(24)]
    try:
        responses: list[httpx.Response] = await asyncio.gather(
            *(
                clients[(i + copy) % 2].post("/orders", json=ORDER, headers={"Idempotency-Key": key})
                for copy in range(3)
                for i, key in enumerate(keys)
            )
        )
    finally:
        for http in clients:
            await http.aclose()
        for worker in workers:
            await worker.shutdown()
    assert app.executions == len(keys)
    by_key: dict[str, set[bytes]] = defaultdict(set)
    for response in responses:
        assert response.status_code == 201, response.text
        by_key[response.request.headers["idempotency-key"]].add(response.content)
    # Each key ran once: its three copies got one and the same response.
    assert all(len(bodies) == 1 for bodies in by_key.values())
    stored = keys_by_slot(redis_cluster, f"{prefix}:idem:*")
    assert len(stored) == len(keys)
    for key in stored:
        # One key per call, its own hash tag: ``prefix:{digest}``.
        assert key.count("{") == 1 and key.endswith("}")
    # The tag is the key's digest, so records spread over the masters.
    assert len({port for _, port in stored.values()}) > 1


async def test_admin_changes_on_the_cluster(redis_cluster: Any) -> None:
    from bastion.control.change_stores import STORES
    from bastion.control.changes import RULE, Change

    store = STORES.open(redis_cluster.url, "bastion-test-admin-cluster", key="admin.store")
    await store.start()
    try:
        version = await store.version()
        change = Change(RULE, "api", "patch", {"limit": "5/minute"}, "ops", 1.0)
        written = await store.write(change, expected=version)
        assert written == version + 1
        assert await store.write(change, expected=version) is None  # another write came first
        read_version, changes = await store.read()
        assert read_version == written and changes[(RULE, "api")].fields == {"limit": "5/minute"}
    finally:
        await store.close()
