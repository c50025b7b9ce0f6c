"""Every guard in front of a real upstream (Starlette, and Express where node is installed).

The gateway runs as ``bastion gateway``; the upstream counts how often each
handler ran, so each test sees whether a request was stopped before it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Server, start_gateway

pytestmark = pytest.mark.e2e

SPEC = Path(__file__).parent / "orders-openapi.yaml"


def guarded_config(upstream: str) -> dict[str, Any]:
    return {
        "upstream": upstream,
        "openapi": str(SPEC),
        "store": "memory://",
        "errors": {"normalize_upstream": "all", "type_base": "https://errors.example/"},
        "clients": {"identify": ["header:X-API-Key", "ip"]},
        "rate_limits": {
            "rules": [{"name": "limited", "match": "GET /limited", "key": "client", "limit": "3/minute"}]
        },
        "idempotency": {"require": ["POST /orders"]},
        "gateway": {"keepalive_timeout": "4s", "read_timeout": "10s"},
    }


@pytest.fixture(scope="module", params=["starlette", "express"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Server, Server]]:
    upstream: Server = request.getfixturevalue("upstream" if request.param == "starlette" else "express")
    gateway = start_gateway(
        tmp_path_factory.mktemp("guards"), guarded_config(upstream.base), name=request.param
    )
    yield gateway, upstream
    gateway.stop()


def upstream_count(upstream: Server, name: str) -> int:
    return int(httpx.get(upstream.base + "/count", params={"name": name}, timeout=5).json()["count"])


def test_invalid_body_is_rejected_before_the_upstream(stack: tuple[Server, Server]) -> None:
    gateway, upstream = stack
    key = uuid.uuid4().hex
    response = httpx.post(
        gateway.base + "/orders",
        json={"item": "", "quantity": 0, "admin": True},
        headers={"Idempotency-Key": key},
        timeout=10,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert {e["pointer"] for e in body["errors"]} >= {"/item", "/quantity"}
    assert upstream_count(upstream, "orders:" + key) == 0


def test_malformed_json_is_a_400_problem(stack: tuple[Server, Server]) -> None:
    gateway, upstream = stack
    key = uuid.uuid4().hex
    response = httpx.post(
        gateway.base + "/orders",
        content=b'{"item": "book",',
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["code"] == "MALFORMED_BODY"
    assert upstream_count(upstream, "orders:" + key) == 0


def test_idempotent_retry_replays_and_runs_the_upstream_once(stack: tuple[Server, Server]) -> None:
    gateway, upstream = stack
    key = uuid.uuid4().hex
    order = {"item": "book", "quantity": 2}
    first = httpx.post(gateway.base + "/orders", json=order, headers={"Idempotency-Key": key}, timeout=10)
    second = httpx.post(gateway.base + "/orders", json=order, headers={"Idempotency-Key": key}, timeout=10)
    assert first.status_code == 201, first.text
    assert second.status_code == 201
    assert second.json() == first.json()
    assert second.headers.get("idempotent-replayed") == "true"
    assert upstream_count(upstream, "orders:" + key) == 1
    reused = httpx.post(
        gateway.base + "/orders",
        json={"item": "pen", "quantity": 1},
        headers={"Idempotency-Key": key},
        timeout=10,
    )
    assert reused.status_code == 409
    assert reused.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


def test_missing_idempotency_key_is_a_400_problem(stack: tuple[Server, Server]) -> None:
    gateway, _ = stack
    response = httpx.post(gateway.base + "/orders", json={"item": "book", "quantity": 1}, timeout=10)
    assert response.status_code == 400
    assert response.json()["code"] == "IDEMPOTENCY_KEY_MISSING"


def test_rate_limit_rejects_the_fourth_request(stack: tuple[Server, Server]) -> None:
    gateway, upstream = stack
    api_key = "key-" + uuid.uuid4().hex
    before = upstream_count(upstream, "limited")
    statuses = []
    for _ in range(5):
        response = httpx.get(gateway.base + "/limited", headers={"X-API-Key": api_key}, timeout=10)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 200, 429, 429]
    assert response.json()["code"] == "RATE_LIMITED"
    assert int(response.headers["retry-after"]) >= 1
    assert "ratelimit-policy" in response.headers
    assert upstream_count(upstream, "limited") - before == 3


def test_upstream_crash_page_becomes_a_problem(stack: tuple[Server, Server]) -> None:
    gateway, _ = stack
    response = httpx.get(gateway.base + "/boom", timeout=10)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "INTERNAL_ERROR"
    assert body["type"] == "https://errors.example/internal-error"
    assert body["trace_id"] == response.headers["x-request-id"]
    for leaked in ("hunter2", "secret-token-123", "<html", "Error:", "Traceback", " at "):
        assert leaked not in response.text
    deadline = time.monotonic() + 5
    logged: list[dict[str, Any]] = []
    while not logged and time.monotonic() < deadline:
        logged = [
            r for r in gateway.log_lines() if r.get("trace_id") == body["trace_id"] and "upstream_body" in r
        ]
        time.sleep(0.05)
    assert logged and "secret-token-123" in str(logged[0]["upstream_body"])


def test_upstream_not_found_page_becomes_a_problem(stack: tuple[Server, Server]) -> None:
    gateway, _ = stack
    response = httpx.get(gateway.base + "/orders/7", timeout=10)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"
    assert "Cannot GET" not in response.text


def test_unknown_route_never_reaches_the_upstream(stack: tuple[Server, Server]) -> None:
    gateway, _ = stack
    response = httpx.get(gateway.base + "/admin/secrets", timeout=10)
    assert response.status_code == 404
    assert response.json()["code"] == "NOT_FOUND"


def test_server_sent_events_arrive_as_the_upstream_writes_them(
    stack: tuple[Server, Server], request: pytest.FixtureRequest
) -> None:
    gateway, upstream = stack
    express = "express" in request.node.callspec.id
    started = time.monotonic()
    with httpx.stream("GET", gateway.base + "/events", params={"ms": "3000"}, timeout=15) as response:
        assert response.status_code == 200
        received = b""
        chunks = response.iter_raw()
        while b"data: one\n\n" not in received:
            received += next(chunks)
        first_after = time.monotonic() - started
        assert b"second" not in received
        if not express:
            # The Starlette upstream holds the stream until it is released.
            httpx.post(upstream.base + "/release", timeout=5)
        for chunk in chunks:
            received += chunk
    assert b"data: two" in received
    if express:
        # Express writes the second event 3 s after the first.
        assert first_after < 2.5, f"the first event took {first_after:.1f} s"
        assert time.monotonic() - started >= 2.9


def test_a_body_too_large_to_buffer_is_a_413_before_the_upstream(stack: tuple[Server, Server]) -> None:
    gateway, upstream = stack
    key = uuid.uuid4().hex
    # validation.max_body_bytes is 1 MiB by default; the guards that read the body stop past it.
    huge = b'{"item": "' + b"x" * (2 * 1024 * 1024) + b'", "quantity": 1}'
    response = httpx.post(
        gateway.base + "/orders",
        content=huge,
        headers={"Idempotency-Key": key, "Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert upstream_count(upstream, "orders:" + key) == 0
