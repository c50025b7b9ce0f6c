"""The idempotency behaviour suite through Bastion, over every store."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bastion import Bastion
from tests.idempotency.apps import OrdersApp
from tests.support import LogCapture, client

ORDER = {"item": "book", "amount": 1200}


def guarded(app: Any, settings: dict[str, Any], **extra: Any) -> tuple[Bastion, LogCapture]:
    idempotency = {"require": ["POST /orders"], "lease": "2s", "ttl": "1h", **settings, **extra}
    logs = LogCapture()
    config = {"store": "memory://", "idempotency": idempotency}
    return Bastion(app, config, env={}, log_stream=logs), logs


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value}


async def test_retry_is_replayed_byte_for_byte_and_runs_once(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, logs = guarded(app, store_settings)
    async with client(bastion) as http:
        first = await http.post("/orders", json=ORDER, headers=key("order-1"))
        second = await http.post("/orders", json=ORDER, headers=key("order-1"))
        third = await http.post("/orders", json=ORDER, headers=key('"order-1"'))
    await bastion.shutdown()
    assert app.executions == 1
    assert first.status_code == second.status_code == third.status_code == 201
    assert second.content == first.content == third.content
    assert second.headers["location"] == first.headers["location"]
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    events = [r.get("idempotency") for r in logs.records() if r.get("event") == "request"]
    assert events == ["claimed", "replayed", "replayed"]


async def test_same_key_different_body_is_rejected(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        await http.post("/orders", json=ORDER, headers=key("order-1"))
        other = await http.post("/orders", json={**ORDER, "amount": 9900}, headers=key("order-1"))
        query = await http.post("/orders?coupon=x", json=ORDER, headers=key("order-1"))
    await bastion.shutdown()
    assert other.status_code == 409
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert query.status_code == 409
    assert app.executions == 1


async def test_mismatch_status_can_be_422(store_settings: dict[str, Any]) -> None:
    bastion, _ = guarded(OrdersApp(), store_settings, on_mismatch=422)
    async with client(bastion) as http:
        await http.post("/orders", json=ORDER, headers=key("order-1"))
        other = await http.post("/orders", json={"item": "pen"}, headers=key("order-1"))
    await bastion.shutdown()
    assert other.status_code == 422
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_missing_key_on_a_required_operation(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        missing = await http.post("/orders", json=ORDER)
        optional = await http.post("/payments", json=ORDER)
    assert missing.status_code == 400
    assert missing.json()["code"] == "IDEMPOTENCY_KEY_MISSING"
    assert optional.status_code == 201
    assert app.executions == 1


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
@pytest.mark.parametrize(
    "value",
    ["", '""', "a" * 256, '"' + "a" * 256 + '"', "bad key", "caf\xe9", '"unterminated', '"a"b', '"a\\x"'],
)
async def test_invalid_keys(store_settings: dict[str, Any], value: str) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        response = await http.post(
            "/orders", content=orjson.dumps(ORDER), headers=[("Idempotency-Key", value.encode("latin-1"))]
        )
    assert response.status_code == 400
    assert response.json()["code"] == "IDEMPOTENCY_KEY_INVALID"
    assert app.executions == 0


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_longest_key_and_quoted_spaces_are_accepted(store_settings: dict[str, Any]) -> None:
    bastion, _ = guarded(OrdersApp(), store_settings)
    async with client(bastion) as http:
        longest = await http.post("/orders", json=ORDER, headers=key("k" * 255))
        spaced = await http.post("/orders", json=ORDER, headers=key('"a key \\"quoted\\""'))
    assert longest.status_code == spaced.status_code == 201


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_key_sent_twice_is_invalid(store_settings: dict[str, Any]) -> None:
    bastion, _ = guarded(OrdersApp(), store_settings)
    async with client(bastion) as http:
        response = await http.post(
            "/orders", json=ORDER, headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")]
        )
    assert response.json()["code"] == "IDEMPOTENCY_KEY_INVALID"


async def test_keys_are_scoped_per_client(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        alice = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-API-Key": "alice"})
        bob = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-API-Key": "bob"})
        bob_other = await http.post("/orders", json={"x": 1}, headers={**key("k1"), "X-API-Key": "carol"})
        alice_again = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-API-Key": "alice"})
    await bastion.shutdown()
    assert app.executions == 3
    assert "idempotent-replayed" not in bob.headers
    assert bob.json()["order"] != alice.json()["order"]
    assert bob_other.status_code == 201
    assert alice_again.content == alice.content and alice_again.headers["idempotent-replayed"] == "true"


async def test_keys_are_scoped_per_operation(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        await http.post("/orders", json=ORDER, headers=key("k1"))
        payment = await http.post("/payments", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert payment.status_code == 201 and "idempotent-replayed" not in payment.headers
    assert app.executions == 2


async def test_record_expires_after_ttl(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings, ttl="600ms")
    async with client(bastion) as http:
        await http.post("/orders", json=ORDER, headers=key("k1"))
        replay = await http.post("/orders", json=ORDER, headers=key("k1"))
        await asyncio.sleep(0.75)
        after = await http.post("/orders", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert replay.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in after.headers
    assert app.executions == 2


async def test_5xx_and_exceptions_release_the_claim(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, logs = guarded(app, store_settings)
    async with client(bastion) as http:
        failed = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "fail"})
        raised = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "raise"})
        retried = await http.post("/orders", json=ORDER, headers=key("k1"))
        replay = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "fail"})
    await bastion.shutdown()
    assert failed.status_code == 500
    assert raised.status_code == 500 and raised.json()["code"] == "INTERNAL_ERROR"
    assert retried.status_code == 201
    assert replay.status_code == 201 and replay.content == retried.content
    assert app.executions == 3


async def test_client_error_raised_by_the_handler_is_stored(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        first = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "conflict"})
        second = await http.post("/orders", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert first.status_code == second.status_code == 409
    assert first.json()["code"] == "ORDER_CONFLICT"
    assert second.content == first.content
    assert second.headers["idempotent-replayed"] == "true"
    assert app.executions == 1


async def test_in_progress_duplicate_gets_409_with_retry_after(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    app.gate = asyncio.Event()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        first = asyncio.create_task(http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "slow"}))
        for _ in range(200):
            if app.executions:
                break
            await asyncio.sleep(0.01)
        duplicate = await http.post("/orders", json=ORDER, headers=key("k1"))
        other = await http.post("/orders", json={"item": "pen"}, headers=key("k1"))
        app.gate.set()
        done = await first
    await bastion.shutdown()
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    assert duplicate.headers["retry-after"] == "1"
    assert other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert done.status_code == 201
    assert app.executions == 1


async def test_wait_replays_the_first_result(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    app.gate = asyncio.Event()
    bastion, _ = guarded(app, store_settings, wait="5s")
    async with client(bastion) as http:
        first = asyncio.create_task(http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "slow"}))
        for _ in range(200):
            if app.executions:
                break
            await asyncio.sleep(0.01)
        duplicate = asyncio.create_task(http.post("/orders", json=ORDER, headers=key("k1")))
        await asyncio.sleep(0.1)
        assert not duplicate.done()
        app.gate.set()
        original, waited = await first, await duplicate
    await bastion.shutdown()
    assert waited.status_code == 201
    assert waited.content == original.content
    assert waited.headers["idempotent-replayed"] == "true"
    assert app.executions == 1


@pytest.mark.parametrize("store_settings", ["memory", "sqlite"], indirect=True)
async def test_set_cookie_and_date_are_not_replayed(store_settings: dict[str, Any]) -> None:
    bastion, _ = guarded(OrdersApp(), store_settings)
    async with client(bastion) as http:
        first = await http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "cookie"})
        # A retry that never saw the first response has no cookie from it either (a Cookie
        # header is part of the key's scope: with it, this would be another caller).
        http.cookies.clear()
        second = await http.post("/orders", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert first.headers["set-cookie"] == "session=secret"
    assert "set-cookie" not in second.headers
    assert second.content == first.content


async def test_unsafe_methods_without_key_and_safe_methods_pass(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings, require=[])
    async with client(bastion) as http:
        no_key = [await http.post("/orders", json=ORDER) for _ in range(2)]
        gets = [await http.get("/orders", headers=key("k1")) for _ in range(2)]
    await bastion.shutdown()
    assert [r.status_code for r in no_key + gets] == [201, 201, 201, 201]
    assert app.executions == 4


async def test_large_response_is_not_kept_but_never_rerun(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, logs = guarded(app, store_settings, max_stored_bytes=16)
    async with client(bastion) as http:
        first = await http.post("/orders", json=ORDER, headers=key("k1"))
        replay = await http.post("/orders", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert len(first.content) > 16
    assert app.executions == 1
    assert replay.status_code == 201
    assert replay.content == b""
    assert replay.headers["idempotent-body-omitted"] == "true"
    assert replay.headers["location"] == first.headers["location"]
    assert "content-type" not in replay.headers


@pytest.mark.parametrize("store_settings", ["memory", "redis"], indirect=True)
async def test_metrics_count_events(store_settings: dict[str, Any]) -> None:
    bastion, _ = guarded(OrdersApp(), store_settings)
    async with client(bastion) as http:
        await http.post("/orders", json=ORDER, headers=key("k1"))
        await http.post("/orders", json=ORDER, headers=key("k1"))
        await http.post("/orders", json={"x": 2}, headers=key("k1"))
        text = (await http.get("/metrics")).text
    await bastion.shutdown()
    assert 'bastion_idempotency_events_total{event="claimed"} 1.0' in text
    assert 'bastion_idempotency_events_total{event="replayed"} 1.0' in text
    assert 'bastion_idempotency_events_total{event="mismatch"} 1.0' in text


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_streaming_first_byte_reaches_the_client_before_the_handler_ends(
    store_settings: dict[str, Any],
) -> None:
    release = asyncio.Event()
    runs = 0

    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        nonlocal runs
        runs += 1
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"first,", "more_body": True})
        await release.wait()
        await send({"type": "http.response.body", "body": b"second", "more_body": False})

    bastion, _ = guarded(streaming, store_settings)
    first_chunk = asyncio.Event()
    received: list[bytes] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            received.append(message.get("body", b""))
            first_chunk.set()

    async def receive() -> Any:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/stream",
        "raw_path": b"/stream",
        "query_string": b"",
        "headers": [(b"idempotency-key", b"s1"), (b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1234),
        "server": ("127.0.0.1", 80),
        "scheme": "http",
        "http_version": "1.1",
        "asgi": {"version": "3.0"},
    }
    call = asyncio.create_task(bastion(dict(scope), receive, send))
    await asyncio.wait_for(first_chunk.wait(), timeout=5)
    assert received == [b"first,"]
    assert not call.done()
    release.set()
    await asyncio.wait_for(call, timeout=5)
    assert b"".join(received) == b"first,second"

    async with client(bastion) as http:
        replay = await http.post(
            "/stream", content=b"{}", headers={"Idempotency-Key": "s1", "Content-Type": "application/json"}
        )
    await bastion.shutdown()
    assert replay.content == b"first,second"
    assert replay.headers["idempotent-replayed"] == "true"
    assert runs == 1


SPEC = """
openapi: 3.1.0
info: {title: t, version: "1"}
paths:
  /orders/{id}/pay:
    post:
      operationId: payOrder
      x-bastion-idempotency: required
      parameters:
        - {name: id, in: path, required: true, schema: {type: string}}
        - {name: Idempotency-Key, in: header, required: true, schema: {type: string}}
      requestBody:
        content:
          application/json:
            schema: {type: object}
      responses: {"201": {description: ok}}
  /notes:
    post:
      x-bastion-idempotency: "off"
      requestBody:
        content:
          application/json:
            schema: {type: object}
      responses: {"201": {description: ok}}
"""


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_openapi_extension_requires_or_disables_keys(
    store_settings: dict[str, Any], tmp_path: Any
) -> None:
    spec = tmp_path / "openapi.yaml"
    spec.write_text(SPEC)
    app = OrdersApp()
    config = {"store": "memory://", "openapi": str(spec), "idempotency": store_settings}
    bastion = Bastion(app, config, env={}, log_stream=LogCapture())
    async with client(bastion) as http:
        missing = await http.post("/orders/7/pay", json={})
        first = await http.post("/orders/7/pay", json={}, headers=key("p1"))
        replay = await http.post("/orders/7/pay", json={}, headers=key("p1"))
        other_order = await http.post("/orders/8/pay", json={}, headers=key("p1"))
        notes = [await http.post("/notes", json={}, headers=key("n1")) for _ in range(2)]
    assert missing.status_code == 400 and missing.json()["code"] == "IDEMPOTENCY_KEY_MISSING"
    assert first.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    # One key names one operation on one resource: the same key on another order is a reuse.
    assert other_order.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert [n.status_code for n in notes] == [201, 201]
    assert "idempotent-replayed" not in notes[1].headers
    assert app.executions == 3


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_body_over_the_limit_is_413_before_any_claim(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    logs = LogCapture()
    bastion = Bastion(
        app,
        {"store": "memory://", "validation": {"max_body_bytes": 64}, "idempotency": store_settings},
        env={},
        log_stream=logs,
    )
    async with client(bastion) as http:
        response = await http.post("/orders", content=b"x" * 200, headers=key("k1"))
    assert response.status_code == 413
    assert app.executions == 0


async def test_a_live_handler_keeps_its_claim_past_the_lease(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    app.gate = asyncio.Event()
    bastion, _ = guarded(app, store_settings, lease="400ms")
    async with client(bastion) as http:
        first = asyncio.create_task(http.post("/orders", json=ORDER, headers={**key("k1"), "X-Mode": "slow"}))
        for _ in range(200):
            if app.executions:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.9)  # more than two leases: only renewal keeps the claim
        duplicate = await http.post("/orders", json=ORDER, headers=key("k1"))
        app.gate.set()
        done = await first
        replay = await http.post("/orders", json=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS"
    assert done.status_code == 201 and "idempotency" not in done.headers
    assert replay.content == done.content
    assert app.executions == 1


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_only_the_configured_methods_are_protected(store_settings: dict[str, Any]) -> None:
    # The chain skips the guard for the methods it never handles; the configured one
    # still goes through it.
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings, require=[], methods=["PUT"])
    async with client(bastion) as http:
        puts = [await http.put("/orders", json=ORDER, headers=key("put-1")) for _ in range(2)]
        assert app.executions == 1
        posts = [await http.post("/orders", json=ORDER, headers=key("post-1")) for _ in range(2)]
    await bastion.shutdown()
    assert app.executions == 3
    assert [r.headers.get("idempotent-replayed") for r in puts + posts] == [None, "true", None, None]
