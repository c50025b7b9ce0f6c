"""Validation in shadow mode and with enforce_percent: globally and per operation."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bastion import Bastion, ConfigError
from bastion.asgi import Receive, Scope, Send
from bastion.enforcement import client_bucket
from tests.support import LogCapture

from .helpers import read_body, write_spec


async def headers_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with the request headers and body it received."""
    body = await read_body(receive)
    seen = {
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
        "body": body.decode("latin-1"),
    }
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": orjson.dumps(seen)})


def would_refuse(response: httpx.Response) -> list[str]:
    return [v for k, v in orjson.loads(response.content)["headers"] if k == "bastion-would-refuse"]


ORDER = {
    "type": "object",
    "required": ["quantity"],
    "properties": {"quantity": {"type": "integer", "minimum": 1}},
}


def spec(orders_mode: Any = None, items_mode: Any = None) -> dict[str, Any]:
    orders: dict[str, Any] = {
        "requestBody": {"required": True, "content": {"application/json": {"schema": ORDER}}},
        "responses": {"200": {"description": "ok"}},
    }
    if orders_mode is not None:
        orders["x-bastion-validation"] = orders_mode
    items: dict[str, Any] = {
        "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer"}}],
        "responses": {"200": {"description": "ok"}},
    }
    if items_mode is not None:
        items["x-bastion-validation"] = items_mode
    return {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/orders": {"post": orders}, "/items": {"get": items}},
    }


def build(tmp_path: Path, document: dict[str, Any], **config: Any) -> tuple[Bastion, LogCapture]:
    logs = LogCapture()
    settings: dict[str, Any] = {"store": "memory://", "openapi": str(write_spec(tmp_path, document))}
    settings.update(config)
    return Bastion(headers_app, settings, env={}, log_stream=logs), logs


def client(bastion: Bastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=bastion), base_url="http://test")


def metric(bastion: Bastion, name: str, **labels: str) -> float:
    assert bastion.metrics is not None
    return bastion.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_global_shadow_lets_invalid_requests_through_counted_and_logged(tmp_path: Path) -> None:
    bastion, logs = build(tmp_path, spec(), validation={"mode": "shadow"})
    async with client(bastion) as http:
        invalid = await http.post("/orders", json={"quantity": 0})
        query = await http.get("/items?limit=many")
        valid = await http.post("/orders", json={"quantity": 2})
    assert invalid.status_code == 200
    assert orjson.loads(invalid.content)["body"] == '{"quantity":0}'
    assert would_refuse(invalid) == ["VALIDATION_FAILED"]
    assert would_refuse(query) == ["VALIDATION_FAILED"]
    assert would_refuse(valid) == []
    assert (
        metric(bastion, "bastion_validation_failures_total", operation="POST /orders", code="OUT_OF_RANGE")
        == 1
    )
    refusals = metric(bastion, "bastion_shadow_refusals_total", guard="validation", code="VALIDATION_FAILED")
    assert refusals == 2
    records = [r for r in logs.records() if r.get("event") == "request refused in shadow mode"]
    assert len(records) == 2
    assert records[0]["trace_id"] == invalid.headers["traceparent"].split("-")[1]
    assert records[0]["code"] == "VALIDATION_FAILED"


async def test_enforce_refuses_and_sends_no_header(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec())
    async with client(bastion) as http:
        invalid = await http.post("/orders", json={"quantity": 0})
        valid = await http.post("/orders", json={"quantity": 2})
    assert invalid.status_code == 422
    assert would_refuse(valid) == []
    assert metric(bastion, "bastion_shadow_refusals_total", guard="validation", code="VALIDATION_FAILED") == 0


async def test_operation_shadow_overrides_the_global_mode(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(orders_mode={"mode": "shadow"}))
    async with client(bastion) as http:
        orders = await http.post("/orders", json={"quantity": 0})
        items = await http.get("/items?limit=many")
    assert orders.status_code == 200
    assert would_refuse(orders) == ["VALIDATION_FAILED"]
    assert items.status_code == 422


async def test_operation_enforce_overrides_a_global_shadow(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(items_mode={"mode": "enforce"}), validation={"mode": "shadow"})
    async with client(bastion) as http:
        assert (await http.post("/orders", json={"quantity": 0})).status_code == 200
        assert (await http.get("/items?limit=many")).status_code == 422


async def test_unsupported_content_type_is_shadowed(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(), validation={"mode": "shadow"})
    async with client(bastion) as http:
        response = await http.post("/orders", content=b"quantity=1", headers={"content-type": "text/plain"})
    assert response.status_code == 200
    assert would_refuse(response) == ["UNSUPPORTED_MEDIA_TYPE"]


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b'{"quantity": 1}' * 100, {}, 413, "PAYLOAD_TOO_LARGE"),
        (b'{"quantity": 1, "quantity": 2}', {}, 400, "MALFORMED_BODY"),
        (b'{"quantity": "\xff"}', {}, 400, "MALFORMED_BODY"),
        (
            b'{"quantity": 1}',
            {"content-type": "application/json; charset=latin-1"},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (b'{"quantity": 1}', {"content-encoding": "br"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        (gzip.compress(b"{" * 10 + b"}" * 10)[:-4], {"content-encoding": "gzip"}, 400, "MALFORMED_BODY"),
    ],
)
async def test_security_refusals_stay_enforced_in_shadow(
    tmp_path: Path, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    bastion, _ = build(tmp_path, spec(), validation={"mode": "shadow", "max_body_bytes": 1000})
    async with client(bastion) as http:
        response = await http.post(
            "/orders", content=content, headers={"content-type": "application/json", **headers}
        )
    assert response.status_code == status
    assert orjson.loads(response.content)["code"] == code
    assert metric(bastion, "bastion_shadow_refusals_total", guard="validation", code=code) == 0


async def test_repeated_query_parameter_stays_enforced_in_shadow(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(), validation={"mode": "shadow"})
    async with client(bastion) as http:
        response = await http.get("/items?limit=1&limit=2")
    assert response.status_code == 400
    assert orjson.loads(response.content)["code"] == "AMBIGUOUS_REQUEST"


async def test_forged_header_is_removed(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec(), validation={"mode": "shadow"})
    forged = {"Bastion-Would-Refuse": "RATE_LIMITED"}
    async with client(bastion) as http:
        valid = await http.post("/orders", json={"quantity": 2}, headers=forged)
        invalid = await http.post("/orders", json={"quantity": 0}, headers=forged)
        unknown = await http.get("/unknown", headers=forged)
    assert would_refuse(valid) == []
    assert would_refuse(invalid) == ["VALIDATION_FAILED"]
    assert unknown.status_code == 404


async def test_forged_header_is_removed_when_everything_enforces(tmp_path: Path) -> None:
    bastion, _ = build(tmp_path, spec())
    forged = {"Bastion-Would-Refuse": "RATE_LIMITED"}
    async with client(bastion) as http:
        valid = await http.post("/orders", json={"quantity": 2}, headers=forged)
    assert valid.status_code == 200
    assert would_refuse(valid) == []


async def test_both_guards_name_their_codes_in_one_header(tmp_path: Path) -> None:
    rule = {"name": "watch", "limit": "1/minute", "mode": "shadow"}
    bastion, _ = build(tmp_path, spec(), validation={"mode": "shadow"}, rate_limits={"rules": [rule]})
    async with client(bastion) as http:
        await http.post("/orders", json={"quantity": 2})
        response = await http.post("/orders", json={"quantity": 0}, headers={"Bastion-Would-Refuse": "X"})
    assert would_refuse(response) == ["RATE_LIMITED,VALIDATION_FAILED"]


async def test_enforce_percent_refuses_a_stable_share_of_clients(tmp_path: Path) -> None:
    bastion, _ = build(
        tmp_path,
        spec(),
        validation={"enforce_percent": 40},
        clients={"trusted_proxies": ["127.0.0.1/32"]},
    )
    ips = [f"192.0.2.{i}" for i in range(60)]
    expected = {ip: 422 if client_bucket("ip:" + ip) < 40 else 200 for ip in ips}
    assert 10 < list(expected.values()).count(422) < 40
    async with client(bastion) as http:
        for _ in range(2):
            for ip in ips:
                response = await http.post("/orders", json={"quantity": 0}, headers={"X-Forwarded-For": ip})
                assert response.status_code == expected[ip]


@pytest.mark.parametrize(
    "value",
    [{"enforce_percent": 101}, {"mode": "shadow", "enforce_percent": 5}, {"mode": "watch"}, "shadow"],
)
def test_bad_operation_mode_is_a_config_error_naming_where(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match=r"paths\./orders\.post\.x-bastion-validation"):
        build(tmp_path, spec(orders_mode=value))


@pytest.mark.parametrize("settings", [{"enforce_percent": 101}, {"mode": "shadow", "enforce_percent": 5}])
def test_bad_global_mode_is_a_config_error_naming_the_key(tmp_path: Path, settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="enforce_percent"):
        build(tmp_path, spec(), validation=settings)
