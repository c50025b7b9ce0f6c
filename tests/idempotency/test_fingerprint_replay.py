"""Fingerprints through the middleware and the gateway: a retry that spells its JSON another
way is a replay, restricted fingerprints read only their fields, stored 5xx are replayed."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion import Bastion
from bastion.config import ConfigError, load_config
from bastion.config.idempotency import IdempotencyConfig
from bastion.gateway.server import build_gateway
from bastion.idempotency.fingerprints import raw_fingerprint
from tests.gateway.conftest import Server, upstream  # noqa: F401 - the session fixture
from tests.idempotency.apps import OrdersApp
from tests.support import LogCapture, client

ORDER = b'{"item": "book", "amount": 1200, "lines": [{"sku": "A-1", "qty": 2}], "note": "caf\\u00e9"}'
#: The same order: other key order, other whitespace, other number and string spellings.
SAME_ORDER = '{"note":"café","lines":[{"qty":2.0,"sku":"A-1"}],"amount":12e2,"item":"book"}'.encode()
JSON = {"Content-Type": "application/json"}


def guarded(app: Any, settings: dict[str, Any], **top: Any) -> tuple[Bastion, LogCapture]:
    idempotency = {"require": ["POST /orders"], "lease": "2s", "ttl": "1h", **settings}
    logs = LogCapture()
    config = {"store": "memory://", "idempotency": idempotency, **top}
    return Bastion(app, config, env={}, log_stream=logs), logs


def key(value: str) -> dict[str, str]:
    return {"Idempotency-Key": value, **JSON}


@pytest.mark.parametrize("store_settings", ["memory", "sqlite", "postgres"], indirect=True)
async def test_the_same_order_with_its_keys_in_another_order_is_a_replay(
    store_settings: dict[str, Any],
) -> None:
    app = OrdersApp()
    bastion, logs = guarded(app, store_settings)
    async with client(bastion) as http:
        first = await http.post("/orders", content=ORDER, headers=key("order-1"))
        retry = await http.post("/orders", content=SAME_ORDER, headers=key("order-1"))
        changed = SAME_ORDER.replace(b"12e2", b"12e3")
        other = await http.post("/orders", content=changed, headers=key("order-1"))
    await bastion.shutdown()
    assert first.status_code == retry.status_code == 201
    assert retry.headers["idempotent-replayed"] == "true"
    assert retry.content == first.content
    assert other.status_code == 409 and other.json()["code"] == "IDEMPOTENCY_KEY_REUSED"
    assert app.executions == 1
    events = [r.get("idempotency") for r in logs.records() if r.get("event") == "request"]
    assert events == ["claimed", "replayed", "mismatch"]


async def test_a_record_stored_with_the_raw_fingerprint_is_still_replayed(tmp_path: Path) -> None:
    # A record written before JSON bodies were read canonically holds the fingerprint of the
    # body's bytes: the same bytes are still the same request; other bytes are not.
    database = tmp_path / "idempotency.db"
    app = OrdersApp()
    settings = {"store": f"sqlite:///{database}", "table": "idem_legacy"}
    bastion, _ = guarded(app, settings)
    async with client(bastion) as http:
        first = await http.post("/orders", content=ORDER, headers=key("order-1"))
        with sqlite3.connect(database) as conn:
            legacy = raw_fingerprint("POST", "/orders", b"", b"application/json", ORDER)
            assert conn.execute("UPDATE idem_legacy SET fingerprint = ?", (legacy,)).rowcount == 1
        same_bytes = await http.post("/orders", content=ORDER, headers=key("order-1"))
        respelled = await http.post("/orders", content=SAME_ORDER, headers=key("order-1"))
    await bastion.shutdown()
    assert same_bytes.status_code == 201 and same_bytes.headers["idempotent-replayed"] == "true"
    assert same_bytes.content == first.content
    assert respelled.status_code == 409
    assert app.executions == 1


async def test_a_lost_claim_stored_with_the_raw_fingerprint_is_taken_over(tmp_path: Path) -> None:
    database = tmp_path / "idempotency.db"
    app = OrdersApp()
    bastion, logs = guarded(app, {"store": f"sqlite:///{database}", "table": "idem_lost"})
    async with client(bastion) as http:
        await http.post("/orders", content=ORDER, headers=key("order-1"))
        with sqlite3.connect(database) as conn:
            # As a process of the earlier version leaves a claim when it dies mid-request.
            legacy = raw_fingerprint("POST", "/orders", b"", b"application/json", ORDER)
            lost = "state = 0, owner = 'gone', lease_until = 0, status = NULL"
            conn.execute(f"UPDATE idem_lost SET fingerprint = ?, {lost}", (legacy,))
        retry = await http.post("/orders", content=ORDER, headers=key("order-1"))
        replay = await http.post("/orders", content=ORDER, headers=key("order-1"))
    await bastion.shutdown()
    assert retry.status_code == 201 and "idempotent-replayed" not in retry.headers
    assert replay.headers["idempotent-replayed"] == "true" and replay.content == retry.content
    assert app.executions == 2
    events = [r.get("idempotency") for r in logs.records() if r.get("event") == "request"]
    assert events == ["claimed", "lease_expired", "replayed"]


async def test_repeated_member_names_are_compared_byte_for_byte() -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, {})
    async with client(bastion) as http:
        await http.post("/orders", content=b'{"amount": 1, "amount": 2}', headers=key("k"))
        last = await http.post("/orders", content=b'{"amount": 2}', headers=key("k"))
        first = await http.post("/orders", content=b'{"amount": 1}', headers=key("k"))
        swapped = await http.post("/orders", content=b'{"amount": 2, "amount": 1}', headers=key("k"))
        same = await http.post("/orders", content=b'{"amount": 1, "amount": 2}', headers=key("k"))
    await bastion.shutdown()
    assert [r.status_code for r in (last, first, swapped)] == [409, 409, 409]
    assert same.headers["idempotent-replayed"] == "true"


# -- x-bastion-idempotency-fingerprint --------------------------------------------------------

DESCRIPTION = """
openapi: 3.1.0
info: {title: orders, version: "1"}
paths:
  /orders:
    post:
      x-bastion-idempotency: required
      x-bastion-idempotency-fingerprint: %s
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              additionalProperties: true
      responses:
        "201": {description: created}
"""


def described(tmp_path: Path, fields: str) -> str:
    path = tmp_path / "openapi.yaml"
    path.write_text(DESCRIPTION % fields)
    return str(path)


async def test_the_extension_restricts_the_fingerprint_to_its_fields(tmp_path: Path) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, {}, openapi=described(tmp_path, "[/amount, /items]"))
    async with client(bastion) as http:
        first = await http.post(
            "/orders", content=b'{"amount": 1200, "items": ["a"], "note": "x"}', headers=key("k")
        )
        retry = await http.post(
            "/orders", content=b'{"note": "another", "items": ["a"], "amount": 1200.0}', headers=key("k")
        )
        other = await http.post("/orders", content=b'{"amount": 1300, "items": ["a"]}', headers=key("k"))
        absent = await http.post("/orders", content=b'{"amount": 1200}', headers=key("k2"))
        null = await http.post("/orders", content=b'{"amount": 1200, "items": null}', headers=key("k2"))
    await bastion.shutdown()
    assert first.status_code == 201
    assert retry.status_code == 201 and retry.headers["idempotent-replayed"] == "true"
    assert other.status_code == 409
    assert absent.status_code == 201
    assert null.status_code == 409  # a missing field is not null
    assert app.executions == 2


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ("/amount", "must be a non-empty list of JSON pointers"),
        ("[]", "must be a non-empty list of JSON pointers"),
        ("[amount]", "'amount' is not a JSON pointer"),
        ("[/a~2]", "'~' must be followed by 0 or 1"),
        ("[1]", "1 is not a JSON pointer"),
    ],
)
def test_a_wrong_extension_stops_start_up_naming_the_operation(
    tmp_path: Path, fields: str, reason: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        guarded(OrdersApp(), {}, openapi=described(tmp_path, fields))
    [(where, said)] = caught.value.problems
    assert where == "paths./orders.post.x-bastion-idempotency-fingerprint"
    assert reason in said


# -- stored server errors ---------------------------------------------------------------------


def test_store_statuses_take_5xx_and_codes_up_to_599() -> None:
    assert IdempotencyConfig(store_statuses=["2xx", "5xx", "503"]).store_statuses == ["2xx", "5xx", "503"]
    assert IdempotencyConfig().store_statuses == ["2xx", "4xx"]
    for bad in ("6xx", "600", "199", "1xx"):
        with pytest.raises(ValueError, match="not a storable status"):
            IdempotencyConfig(store_statuses=[bad])


@pytest.mark.parametrize("store_settings", ["memory", "postgres"], indirect=True)
@pytest.mark.parametrize("statuses", [["2xx", "4xx", "5xx"], ["201", "500"]])
async def test_a_stored_500_is_replayed(store_settings: dict[str, Any], statuses: list[str]) -> None:
    app = OrdersApp()
    settings = {**store_settings, "store_statuses": statuses}
    bastion, _ = guarded(app, settings, errors={"normalize_upstream": False})
    async with client(bastion) as http:
        failed = await http.post("/orders", content=ORDER, headers={**key("k1"), "X-Mode": "fail"})
        retry = await http.post("/orders", content=SAME_ORDER, headers=key("k1"))
        raised = await http.post("/orders", content=ORDER, headers={**key("k2"), "X-Mode": "raise"})
        rerun = await http.post("/orders", content=ORDER, headers=key("k2"))
    await bastion.shutdown()
    assert failed.status_code == retry.status_code == 500
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == failed.content
    # An exception is not a response: it releases the key whatever store_statuses says.
    assert raised.status_code == 500 and rerun.status_code == 201
    assert "idempotent-replayed" not in rerun.headers
    assert app.executions == 3


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_a_replayed_500_made_a_problem_still_says_it_is_a_replay(
    store_settings: dict[str, Any],
) -> None:
    # errors.normalize_upstream (on by default) turns each 5xx body into a problem with the
    # request's own trace id; the replay header survives it.
    app = OrdersApp()
    bastion, _ = guarded(app, {**store_settings, "store_statuses": ["2xx", "4xx", "5xx"]})
    async with client(bastion) as http:
        failed = await http.post("/orders", content=ORDER, headers={**key("k1"), "X-Mode": "fail"})
        retry = await http.post("/orders", content=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert failed.status_code == retry.status_code == 500
    assert failed.json()["code"] == retry.json()["code"] == "INTERNAL_ERROR"
    assert "idempotent-replayed" not in failed.headers
    assert retry.headers["idempotent-replayed"] == "true"
    assert app.executions == 1


@pytest.mark.parametrize("store_settings", ["memory"], indirect=True)
async def test_by_default_a_500_releases_the_key(store_settings: dict[str, Any]) -> None:
    app = OrdersApp()
    bastion, _ = guarded(app, store_settings)
    async with client(bastion) as http:
        failed = await http.post("/orders", content=ORDER, headers={**key("k1"), "X-Mode": "fail"})
        retry = await http.post("/orders", content=ORDER, headers=key("k1"))
    await bastion.shutdown()
    assert failed.status_code == 500 and retry.status_code == 201
    assert app.executions == 2


# -- through the gateway ----------------------------------------------------------------------


async def test_the_gateway_replays_a_reordered_retry_and_calls_the_upstream_once(
    upstream: Server,  # noqa: F811
) -> None:
    order_key = uuid.uuid4().hex
    settings = {"upstream": upstream.base, "store": "memory://", "idempotency": {"require": ["POST /orders"]}}
    app = build_gateway(load_config(settings, env={}), env={}, log_stream=LogCapture())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as http:
            first = await http.post("/orders", content=ORDER, headers=key(order_key))
            retry = await http.post("/orders", content=SAME_ORDER, headers=key(order_key))
            other = ORDER.replace(b"1200", b"1300")
            changed = await http.post("/orders", content=other, headers=key(order_key))
    finally:
        await app.bastion.shutdown()
    assert first.status_code == retry.status_code == 201, first.text
    assert retry.headers["idempotent-replayed"] == "true" and retry.content == first.content
    assert changed.status_code == 409
    count = httpx.get(f"{upstream.base}/count", params={"name": "orders:" + order_key}, timeout=10)
    assert count.json() == {"count": 1}
