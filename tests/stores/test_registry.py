"""The store registry: every scheme for every capability, and every refusal, one way."""

from __future__ import annotations

import sys
from typing import Any

import pytest

from bastion.config import Config, ConfigError
from bastion.config.idempotency import IdempotencyConfig
from bastion.idempotency.stores import STORES as IDEMPOTENCY
from bastion.idempotency.stores import open_store as open_idempotency_store
from bastion.ratelimit.stores import STORES as RATE_LIMITS
from bastion.ratelimit.stores import Opening
from bastion.ratelimit.stores import open_store as open_rate_limit_store
from bastion.stores import parse_store_url
from bastion.stores.registry import Capability, registered

URLS = {
    "memory://": "memory",
    "sqlite:///./registry-test.db": "sqlite",
    "redis://127.0.0.1:6379/0": "redis",
    "rediss://127.0.0.1:6380/0": "redis",
    "unix:///tmp/no-such-redis.sock": "redis",
    "postgresql://postgres@127.0.0.1/test": "postgres",
    "postgres://postgres@127.0.0.1/test": "postgres",
}
EXTRA = "needs the {extra} extra: pip install 'bastion-guards[{extra}]'"


class Logger:
    """Records what is logged, as structlog-style calls."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.records.append((event, fields))


def test_every_kind_is_registered_for_both_capabilities() -> None:
    kinds = ("memory", "postgres", "redis", "sqlite")
    assert {pair for pair in registered() if pair[0] in ("idempotency", "rate_limits")} == {
        (capability, kind) for capability in ("idempotency", "rate_limits") for kind in kinds
    }
    assert all(IDEMPOTENCY.supports(k) and RATE_LIMITS.supports(k) for k in kinds)


@pytest.mark.parametrize("url", URLS)
async def test_idempotency_opens_the_store_each_scheme_names(url: str) -> None:
    store = open_idempotency_store(parse_store_url(url), IdempotencyConfig.model_validate({"store": url}))
    assert store.kind == URLS[url]
    if store.kind == "redis":
        await store.close()


@pytest.mark.parametrize("url", URLS)
async def test_rate_limits_open_the_store_each_scheme_names(url: str) -> None:
    logger = Logger()
    store = open_rate_limit_store(Config.model_validate({"store": url}), logger)
    kind = URLS[url]
    if kind in ("sqlite", "postgres"):
        # Not a rate limit store: rate limits stay in this process, and the log says why.
        assert store.name == "memory"
        assert logger.records == [
            (
                "rate limits use the memory store",
                {"reason": f"{kind} is not a rate limit store; set rate_limits.store to redis:// to share"},
            )
        ]
    else:
        assert store.name == kind
        assert logger.records == []
    if store.name == "redis":
        await store.close()


def test_an_unknown_scheme_names_the_key() -> None:
    section = Config().rate_limits
    with pytest.raises(ConfigError) as caught:
        RATE_LIMITS.open("mongodb://127.0.0.1/x", Opening(section, Logger()), key="rate_limits.store")
    assert caught.value.problems == [
        ("rate_limits.store", "unknown store scheme 'mongodb'; use memory, sqlite, redis or postgresql")
    ]


def test_a_kind_the_capability_has_no_store_for_names_the_key() -> None:
    only_memory: Capability[None, str] = Capability("registry-test", "test records")
    only_memory.register("memory")(lambda url, context: url.kind)
    assert only_memory.open("memory://", None, key="test.store") == "memory"
    with pytest.raises(ConfigError) as caught:
        only_memory.open("redis://127.0.0.1/0", None, key="test.store")
    assert caught.value.problems == [("test.store", "redis cannot hold test records")]


def forget(monkeypatch: pytest.MonkeyPatch, driver: str, *users: str) -> None:
    """Make ``driver`` unimportable, and the bastion modules that import it (``users``) not yet imported."""
    for name in list(sys.modules):
        if name == driver or name.startswith(driver + ".") or name in users:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)


REDIS_USERS = ("bastion.stores.redis", "bastion.idempotency.stores.redis", "bastion.ratelimit.stores.redis")


@pytest.mark.parametrize("key", ["store", "idempotency.store"])
def test_missing_redis_extra_for_idempotency(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    forget(monkeypatch, "redis", *REDIS_USERS)
    config = IdempotencyConfig.model_validate({"store": "redis://h/0"} if key == "idempotency.store" else {})
    with pytest.raises(ConfigError) as caught:
        open_idempotency_store(parse_store_url("redis://h/0"), config)
    assert caught.value.problems == [(key, "Redis " + EXTRA.format(extra="redis"))]


@pytest.mark.parametrize("key", ["store", "rate_limits.store"])
def test_missing_redis_extra_for_rate_limits(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    forget(monkeypatch, "redis", *REDIS_USERS)
    settings: dict[str, Any] = {"store": "redis://h/0"}
    if key == "rate_limits.store":
        settings = {"store": "memory://", "rate_limits": {"store": "redis://h/0"}}
    with pytest.raises(ConfigError) as caught:
        open_rate_limit_store(Config.model_validate(settings), Logger())
    assert caught.value.problems == [(key, "Redis " + EXTRA.format(extra="redis"))]


def test_missing_postgres_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    forget(monkeypatch, "asyncpg", "bastion.idempotency.stores.postgres")
    url = "postgresql://postgres@127.0.0.1/test"
    with pytest.raises(ConfigError) as caught:
        open_idempotency_store(parse_store_url(url), IdempotencyConfig())
    assert caught.value.problems == [("store", "PostgreSQL " + EXTRA.format(extra="postgres"))]


def test_another_missing_module_is_not_mistaken_for_the_extra() -> None:
    def broken(url: Any, context: Any) -> str:
        import bastion_no_such_module  # type: ignore[import-not-found]  # noqa: F401

        return "unreachable"

    capability: Capability[None, str] = Capability("registry-test-broken", "test records")
    capability.register("redis")(broken)
    with pytest.raises(ModuleNotFoundError):
        capability.open("redis://127.0.0.1/0", None, key="store")
