"""The admin API: rules and consumers changed live, kept in the shared store, seen by every instance."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import redis

from bastion import Bastion
from bastion.config import ConfigError, load_config
from tests.conftest import free_port
from tests.control.conftest import write_config

TOKEN = "t" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ACME = hashlib.sha256(b"acme-key").hexdigest()
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


async def hello(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """A one-line app."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture(params=["sqlite", "redis", "postgres"])
def admin_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh admin store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/admin.db"
    if request.param == "redis":
        return "redis://127.0.0.1:6379/0"

    async def drop() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute("DROP TABLE IF EXISTS bastion_admin_changes, bastion_admin_version")
        finally:
            await conn.close()

    asyncio.run(drop())
    return POSTGRES


def settings(tmp_path: Path, store: str, *, listen: bool = True) -> dict[str, Any]:
    """A configuration with one rule, one known key and (with ``listen``) the admin API."""
    (tmp_path / "tokens").write_text(f"ops {TOKEN}\n")
    prefix = f"bastion-test-admin-{uuid.uuid4().hex[:8]}"
    config: dict[str, Any] = {
        "store": "memory://",
        "clients": {"keys": [{"sha256": ACME, "name": "acme", "tier": "free"}]},
        "rate_limits": {"rules": [{"name": "api", "limit": "5/minute", "tiers": {"paid": "100/minute"}}]},
        "metrics": {"enabled": False},
        "admin": {"store": store, "poll_interval": "100ms", "token_file": "tokens", "key_prefix": prefix},
    }
    if listen:
        config["admin"]["listen"] = f"127.0.0.1:{free_port()}"
    return config


@contextlib.asynccontextmanager
async def running(path: Path, log: io.BytesIO | None = None) -> AsyncIterator[Bastion]:
    """A started :class:`Bastion` over ``hello`` for the configuration file at ``path``."""
    bastion = Bastion(hello, path, env={}, log_stream=log)
    await bastion.startup()
    try:
        yield bastion
    finally:
        await bastion.shutdown()


def admin_client(bastion: Bastion, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    """A client for the instance's admin listener."""
    listen = bastion.config.admin.listen
    assert listen is not None
    return httpx.AsyncClient(
        base_url=f"http://{listen}", headers=AUTH if headers is None else headers, timeout=10
    )


async def statuses(bastion: Bastion, count: int, key: str | None = None) -> list[int]:
    """The statuses of ``count`` requests to the app through the guards."""
    transport = httpx.ASGITransport(app=bastion)  # type: ignore[arg-type]
    headers = {"X-API-Key": key} if key else {}
    async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
        return [(await client.get("/", headers=headers)).status_code for _ in range(count)]


async def until(predicate: Callable[[], Any], seconds: float = 5.0) -> None:
    """Wait (bounded) until ``predicate()`` is true."""
    for _ in range(int(seconds / 0.02)):
        if await predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the condition did not hold in time")


async def test_rule_change_applies_and_shows_its_layers(tmp_path: Path, admin_store: str) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, admin_store))
    log = io.BytesIO()
    async with running(path, log) as bastion, admin_client(bastion) as admin:
        rule = (await admin.get("/v1/rules/api")).json()
        assert rule["entry"]["limit"] == "5/minute"
        assert rule["layers"]["limit"] == "file" and rule["layers"]["algorithm"] == "default"

        changed = await admin.patch("/v1/rules/api", json={"limit": "2/minute"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["layers"]["limit"] == "admin"
        assert changed.json()["layers"]["tiers"] == "file"
        assert changed.json()["change"]["actor"] == "ops"
        assert await statuses(bastion, 3) == [200, 200, 429]

        forgotten = await admin.delete("/v1/rules/api/override")
        assert forgotten.json()["entry"]["limit"] == "5/minute"
        assert forgotten.json()["layers"]["limit"] == "file"
    audit = [orjson.loads(line) for line in log.getvalue().splitlines() if b"admin change" in line]
    assert [(a["actor"], a["op"], a["name"]) for a in audit] == [
        ("ops", "patch", "api"),
        ("ops", "forget", "api"),
    ]
    assert audit[0]["fields"] == {"limit": "2/minute"}


async def test_create_and_delete_rules(tmp_path: Path, admin_store: str) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, admin_store))
    async with running(path) as bastion, admin_client(bastion) as admin:
        created = await admin.put("/v1/rules/burst", json={"limit": "1/minute", "key": "global"})
        assert created.status_code == 200, created.text
        assert {r["entry"]["name"] for r in (await admin.get("/v1/rules")).json()["rules"]} == {
            "api",
            "burst",
        }
        assert await statuses(bastion, 2) == [200, 429]

        assert (await admin.delete("/v1/rules/api")).status_code == 200
        assert (await admin.delete("/v1/rules/burst")).status_code == 200
        assert (await admin.get("/v1/rules")).json()["rules"] == []
        assert await statuses(bastion, 8) == [200] * 8
        # The file's rule was deleted by the admin layer; forgetting that brings it back.
        assert (await admin.delete("/v1/rules/api/override")).status_code == 200
        assert (await admin.get("/v1/rules/api")).status_code == 200


async def test_consumer_tier_and_validation_relaxation(tmp_path: Path, admin_store: str) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, admin_store))
    async with running(path) as bastion, admin_client(bastion) as admin:
        assert await statuses(bastion, 6, "acme-key") == [200] * 5 + [429]
        raised = await admin.patch(f"/v1/consumers/{ACME}", json={"tier": "paid"})
        assert raised.status_code == 200, raised.text
        assert raised.json()["layers"] == {"sha256": "file", "name": "file", "tier": "admin"} | {
            k: v for k, v in raised.json()["layers"].items() if k not in ("sha256", "name", "tier")
        }
        assert await statuses(bastion, 6, "acme-key") == [200] * 6

        other = hashlib.sha256(b"globex-key").hexdigest()
        relaxed = await admin.put(
            f"/v1/consumers/{other}",
            json={"name": "globex", "validation": {"relax": "shadow", "until": "2999-01-01"}},
        )
        assert relaxed.status_code == 200, relaxed.text
        assert relaxed.json()["entry"]["validation"]["relax"] == "shadow"
        entries = bastion.config.validation.relax
        assert entries[0].match.client == "globex" and entries[0].relax == "shadow"


async def test_bad_changes_are_refused_and_change_nothing(tmp_path: Path, admin_store: str) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, admin_store))
    async with running(path) as bastion, admin_client(bastion) as admin:
        # The description refuses what is not a rule field (bastion validates its own API).
        unknown = await admin.patch("/v1/rules/api", json={"limitt": "2/minute"})
        assert unknown.status_code == 422 and unknown.json()["code"] == "VALIDATION_FAILED"
        # The configuration model refuses what cannot run, naming the key.
        bad = await admin.patch("/v1/rules/api", json={"cost": 500})
        assert bad.status_code == 422 and bad.json()["code"] == "CONFIG_REJECTED"
        assert any("rate_limits.rules.0" in e["key"] for e in bad.json()["errors"])
        assert (await admin.patch("/v1/rules/nope", json={"limit": "1/s"})).status_code == 404
        assert (await admin.get("/v1/config")).json()["admin_version"] == 0
        assert bastion.config.rate_limits.rules[0].limit.limit == 5


async def test_a_token_is_required(tmp_path: Path, admin_store: str) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, admin_store))
    async with running(path) as bastion:
        for headers in ({}, {"Authorization": "Bearer " + "x" * 40}, {"Authorization": f"Basic {TOKEN}"}):
            async with admin_client(bastion, headers) as admin:
                refused = await admin.patch("/v1/rules/api", json={"limit": "1/minute"})
                assert refused.status_code == 401
                assert refused.headers["www-authenticate"] == "Bearer"
                assert refused.headers["content-type"] == "application/problem+json"
        assert bastion.config.rate_limits.rules[0].limit.limit == 5


async def test_every_instance_sees_a_change_within_a_second_and_after_a_restart(
    tmp_path: Path, admin_store: str
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    config = settings(first, admin_store)
    write_config(first / "bastion.yaml", config)
    follower = dict(config, admin={k: v for k, v in config["admin"].items() if k != "listen"})
    (second / "tokens").write_text(f"ops {TOKEN}\n")
    write_config(second / "bastion.yaml", follower)
    async with running(first / "bastion.yaml") as leader, running(second / "bastion.yaml") as other:
        async with admin_client(leader) as admin:
            changed = await admin.patch("/v1/rules/api", json={"limit": "1/minute"})
            assert changed.status_code == 200
        started = asyncio.get_running_loop().time()

        async def applied() -> bool:
            return other.config.rate_limits.rules[0].limit.limit == 1

        await until(applied)
        assert asyncio.get_running_loop().time() - started < 1.0
    async with running(second / "bastion.yaml") as restarted:
        assert restarted.config.rate_limits.rules[0].limit.limit == 1
        assert await statuses(restarted, 2) == [200, 429]
    if admin_store.startswith("redis"):
        redis.Redis.from_url(admin_store).delete(
            *(f"{{{config['admin']['key_prefix']}}}:{k}" for k in ("version", "entries"))
        )


async def test_a_file_reload_keeps_the_admin_changes(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    config = settings(tmp_path, f"sqlite:///{tmp_path}/admin.db")
    write_config(path, config)
    async with running(path) as bastion, admin_client(bastion) as admin:
        await admin.patch("/v1/rules/api", json={"limit": "1/minute"})
        config["rate_limits"]["rules"].append({"name": "second", "limit": "50/minute"})
        write_config(path, config)
        assert await bastion.reload()
        assert [(r.name, r.limit.limit) for r in bastion.config.rate_limits.rules] == [
            ("api", 1),
            ("second", 50),
        ]


def test_settings_refused_at_load(tmp_path: Path) -> None:
    (tmp_path / "tokens").write_text("short\n")
    cases = [
        ({"admin": {"listen": "0.0.0.0:9181"}}, "admin: listen"),
        ({"store": "memory://", "admin": {"listen": "9181"}}, "admin.store"),
        ({"admin": {"listen": "9181", "store": "memory://"}}, "admin.store"),
        ({"admin": {"listen": "9181", "token_file": str(tmp_path / "tokens")}}, "32 characters"),
        ({"admin": {"listen": "99999"}}, "admin.listen"),
    ]
    for config, expected in cases:
        with pytest.raises(ConfigError) as caught:
            load_config(config, env={})
        assert expected in str(caught.value), (config, str(caught.value))
    loaded = load_config({"admin": {"listen": "9181"}}, env={})
    assert loaded.admin.listen == "9181"


async def test_an_admin_change_reuses_the_compiled_description(tmp_path: Path) -> None:
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
    (tmp_path / "openapi.yaml").write_text(orjson.dumps(spec).decode())
    config = settings(tmp_path, f"sqlite:///{tmp_path}/admin.db")
    config["openapi"] = "openapi.yaml"
    path = tmp_path / "bastion.yaml"
    write_config(path, config)
    log = io.BytesIO()

    def compiled() -> int:
        lines = [orjson.loads(line) for line in log.getvalue().splitlines()]
        return sum(1 for line in lines if line["event"] == "openapi description compiled")

    async with running(path, log) as bastion, admin_client(bastion) as admin:
        assert await statuses(bastion, 1) == [200]
        before = compiled()
        assert (await admin.patch("/v1/rules/api", json={"limit": "1/minute"})).status_code == 200
        assert await statuses(bastion, 2) == [200, 429]
        assert compiled() == before
        # A reload of the file compiles it again (the description may have changed with it).
        assert await bastion.reload()
        assert await statuses(bastion, 1) == [429]
        assert compiled() == before + 1


async def test_a_consumer_gets_its_own_limit(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, f"sqlite:///{tmp_path}/admin.db"))
    async with running(path) as bastion, admin_client(bastion) as admin:
        own = await admin.patch(f"/v1/consumers/{ACME}", json={"limits": {"api": "2/minute"}})
        assert own.status_code == 200, own.text
        assert own.json()["layers"]["limits"] == "admin"
        assert await statuses(bastion, 3, "acme-key") == [200, 200, 429]
        # Other clients keep the rule's limit.
        assert await statuses(bastion, 3) == [200, 200, 200]
        unknown = await admin.patch(f"/v1/consumers/{ACME}", json={"limits": {"nope": "2/minute"}})
        assert unknown.status_code == 422 and unknown.json()["code"] == "CONFIG_REJECTED"
        assert any("limits" in e["key"] for e in unknown.json()["errors"])


async def test_hostile_admin_requests_change_nothing(tmp_path: Path) -> None:
    path = tmp_path / "bastion.yaml"
    write_config(path, settings(tmp_path, f"sqlite:///{tmp_path}/admin.db"))
    async with running(path) as bastion, admin_client(bastion) as admin:
        # Duplicate members: read two ways by two parsers, so refused before the app reads one.
        twice = await admin.patch(
            "/v1/rules/api",
            content=b'{"limit": "1000/minute", "limit": "1/minute"}',
            headers={"Content-Type": "application/json"},
        )
        assert twice.status_code == 400 and twice.json()["code"] == "MALFORMED_BODY"
        # A flood of members, and a body past the admin API's size limit.
        many = {f"t{i}": "1/minute" for i in range(300)}
        assert (await admin.patch("/v1/rules/api", json={"tiers": many})).status_code == 422
        huge = await admin.patch("/v1/rules/api", json={"match": ["GET /" + "x" * 1000] * 300})
        assert huge.status_code in (413, 422)
        # Path variants and odd names find no other rule, and create none.
        for target in ("/v1/rules/api/", "/v1/rules/api%2F..", "/v1/rules/%E2%80%AEipa", "/v1/rules/API"):
            response = await admin.patch(target, json={"limit": "1/minute"})
            assert response.status_code in (400, 404, 405), (target, response.status_code)
        # Credentials in odd charsets are refused, not crashed on.
        for value in (b"Bearer \xff\xfe" + b"t" * 40, b"Bearer " + TOKEN.encode() + b"\xc3\xa9", b"bearer"):
            async with httpx.AsyncClient(base_url=admin.base_url, timeout=10) as raw:
                refused = await raw.patch(
                    "/v1/rules/api", json={"limit": "1/minute"}, headers={"Authorization": value}
                )
                assert refused.status_code in (400, 401), (value, refused.status_code)
        assert (await admin.get("/v1/config")).json()["admin_version"] == 0
        assert [(r.name, r.limit.limit) for r in bastion.config.rate_limits.rules] == [("api", 5)]
        # An empty segment is the canonical path's: the request validated and the one applied
        # address the same rule (bastion's one spelling of a path), not another.
        same = await admin.patch("/v1//rules/api", json={"limit": "1/minute"})
        assert same.status_code == 200 and same.json()["entry"]["name"] == "api"


async def test_fault_warnings_come_when_a_configuration_goes_into_force(tmp_path: Path) -> None:
    config = settings(tmp_path, f"sqlite:///{tmp_path}/admin.db")
    config["faults"] = {"rules": [{"match": "GET /slow", "delay": "1ms"}]}
    path = tmp_path / "bastion.yaml"
    write_config(path, config)
    log = io.BytesIO()

    def said() -> int:
        return log.getvalue().count(b"fault injection is on")

    bastion = Bastion(hello, path, env={}, log_stream=log)
    assert said() == 0  # built, not yet in force
    await bastion.startup()
    try:
        assert said() == 1
        async with admin_client(bastion) as admin:
            # A change is checked by building a chain that never goes into force: no warning for it.
            refused = await admin.patch("/v1/rules/api", json={"cost": 500})
            assert refused.status_code == 422
            assert said() == 1
            assert (await admin.patch("/v1/rules/api", json={"limit": "1/minute"})).status_code == 200
            assert said() == 2  # the new configuration went into force
    finally:
        await bastion.shutdown()
