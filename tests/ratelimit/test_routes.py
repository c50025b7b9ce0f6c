"""Rules matched by route template, and limits declared per operation in the OpenAPI description."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from bastion import ConfigError
from bastion.asgi import SCOPE_KEY, RequestContext
from bastion.config.ratelimit import RuleConfig
from bastion.problems import RateLimited
from bastion.ratelimit.guard import RateLimitGuard
from bastion.ratelimit.rules import compile_rule, operation_extensions, operation_rule
from bastion.ratelimit.stores.memory import MemoryStore

from .helpers import make, ok_app
from .test_guard import guard_of

SPEC = {
    "openapi": "3.0.3",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/orders/{id}": {
            "get": {"x-bastion-rate-limit": "2/minute", "responses": {"200": {"description": "ok"}}},
            "delete": {"responses": {"200": {"description": "ok"}}},
        },
        "/reports": {
            "x-bastion-rate-limit": "1/minute",
            "get": {"responses": {"200": {"description": "ok"}}},
            "post": {"x-bastion-rate-limit": "2/minute", "responses": {"200": {"description": "ok"}}},
        },
        "/login": {
            "post": {
                "x-bastion-rate-limit": {"limit": "1/minute", "key": "ip"},
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}


def write_spec(tmp_path: Path, spec: dict[str, Any] = SPEC) -> str:
    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


async def call(
    guard: RateLimitGuard, method: str, path: str, route: str | None, operation: Any = None
) -> int:
    ctx = RequestContext("t" * 32, "s" * 16, "r", route=route, operation=operation, client_id="c1")
    ctx.client_ip = "127.0.0.1"
    scope = {"type": "http", "method": method, "path": path, "headers": [], SCOPE_KEY: ctx}
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    try:
        await guard(scope, receive, send)
    except RateLimited:
        return 429
    return int(sent[0]["status"])


def guard_with(rules: list[dict[str, Any]], spec_path: str | None = None) -> RateLimitGuard:
    from bastion.validation.openapi import load_description

    declared = operation_extensions(load_description(spec_path).document if spec_path else None)
    return RateLimitGuard(
        ok_app,
        [compile_rule(RuleConfig.model_validate(r)) for r in rules],
        MemoryStore(),
        operation_rules={k: operation_rule(k[0], k[1], v) for k, v in declared.items()},
    )


async def test_match_uses_the_route_template() -> None:
    guard = guard_with([{"name": "one-order", "match": "GET /orders/{id}", "limit": "1/minute"}])
    assert await call(guard, "GET", "/orders/1", "/orders/{id}") == 200
    # Another id, same template: the same rule and key.
    assert await call(guard, "GET", "/orders/2", "/orders/{id}") == 429
    assert await call(guard, "DELETE", "/orders/2", "/orders/{id}") == 200


async def test_without_a_route_the_literal_path_is_compared() -> None:
    rule = {
        "name": "health",
        "match": ["GET /health", "* /ping"],
        "key": ["client", "route"],
        "limit": "1/minute",
    }
    guard = guard_with([rule])
    assert await call(guard, "GET", "/health", None) == 200
    assert await call(guard, "GET", "/health", None) == 429
    assert await call(guard, "POST", "/ping", None) == 200
    assert await call(guard, "POST", "/ping", None) == 429
    # "*" matches any method; the route key part counts each method separately.
    assert await call(guard, "GET", "/ping", None) == 200
    assert await call(guard, "GET", "/other", None) == 200
    assert await call(guard, "GET", "/other", None) == 200


async def test_operation_extension_from_the_description_file(tmp_path: Path) -> None:
    guard = guard_with([], write_spec(tmp_path))
    statuses = [await call(guard, "GET", f"/orders/{i}", "/orders/{id}") for i in range(3)]
    assert statuses == [200, 200, 429]
    assert await call(guard, "DELETE", "/orders/1", "/orders/{id}") == 200
    assert [await call(guard, "POST", "/login", "/login") for _ in range(2)] == [200, 429]
    # A path item's limit applies to its operations; an operation's own limit wins.
    assert [await call(guard, "GET", "/reports", "/reports") for _ in range(2)] == [200, 429]
    assert [await call(guard, "POST", "/reports", "/reports") for _ in range(3)] == [200, 200, 429]


async def test_operation_extension_from_the_compiled_operation() -> None:
    guard = guard_with([])
    operation = SimpleNamespace(extensions={"x-bastion-rate-limit": "1/minute"})
    assert await call(guard, "PUT", "/items/1", "/items/{id}", operation) == 200
    assert await call(guard, "PUT", "/items/2", "/items/{id}", operation) == 429
    # An operation object without extensions is fine too.
    assert await call(guard, "GET", "/things", "/things", SimpleNamespace()) == 200


def test_a_description_with_only_operation_limits_gets_a_guard(tmp_path: Path) -> None:
    assert guard_of(make({"openapi": write_spec(tmp_path)})) is not None


def test_a_bad_operation_limit_is_a_configuration_error(tmp_path: Path) -> None:
    spec = {
        **SPEC,
        "paths": {
            "/x": {"get": {"x-bastion-rate-limit": "often", "responses": {"200": {"description": "ok"}}}}
        },
    }
    with pytest.raises(ConfigError, match="x-bastion-rate-limit"):
        make({"openapi": write_spec(tmp_path, spec)})


async def test_through_bastion_with_an_openapi_description(tmp_path: Path) -> None:
    from .helpers import client

    rules = [
        {"name": "orders", "match": "DELETE /orders/{id}", "limit": "1/minute", "algorithm": "fixed_window"}
    ]
    bastion = make({"openapi": write_spec(tmp_path), "rate_limits": {"rules": rules}})
    async with client(bastion) as http:
        reads = [(await http.get(f"/orders/{i}")).status_code for i in range(3)]
        deletes = [(await http.delete(f"/orders/{i}")).status_code for i in range(2)]
        limited = await http.get("/orders/9")
    assert reads == [200, 200, 429]
    assert deletes == [200, 429]
    assert limited.json()["policies"] == ["GET /orders/{id}"]
    assert limited.headers["ratelimit-policy"] == '"GET /orders/{id}";q=2;w=60'
