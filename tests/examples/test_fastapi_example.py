"""The FastAPI example of docs/fastapi.md: every guard, FastAPI's own description, its handlers kept."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from bastion import Bastion

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fastapi"
ORDER = {"item": "book", "quantity": 1}


def _orders() -> ModuleType:
    name = "bastion_example_fastapi_orders"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE / "orders.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


async def _client(app: Bastion) -> AsyncIterator[httpx.AsyncClient]:
    await app.startup()
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            yield http
    finally:
        await app.shutdown()


@pytest.fixture
async def example() -> AsyncIterator[httpx.AsyncClient]:
    """The example as main.py builds it, on the memory store."""
    app = Bastion(_orders().api, EXAMPLE / "bastion.yaml", env={"BASTION_STORE": "memory://"})
    async for http in _client(app):
        yield http


@pytest.fixture
async def bare() -> AsyncIterator[httpx.AsyncClient]:
    """The example's API behind bastion without any description: FastAPI's own checks answer."""
    app = Bastion(_orders().api, {"store": "memory://"}, env={})
    async for http in _client(app):
        yield http


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def test_openapi_json_is_fastapis_current_description() -> None:
    exported = json.loads((EXAMPLE / "openapi.json").read_text())
    assert exported == _orders().api.openapi(), "run: cd examples/fastapi && python export_openapi.py"


async def test_every_guard_around_fastapi(example: httpx.AsyncClient) -> None:
    first = await example.post("/orders", json=ORDER, headers={"Idempotency-Key": "o-1"})
    again = await example.post("/orders", json=ORDER, headers={"Idempotency-Key": "o-1"})
    assert first.status_code == 201 and again.headers["idempotent-replayed"] == "true"
    assert (await example.get("/orders")).json()["charges"] == 1
    _problem(await example.post("/orders", json=ORDER), 400, "IDEMPOTENCY_KEY_MISSING")
    invalid = await example.post(
        "/orders", json={"item": "", "quantity": "many"}, headers={"Idempotency-Key": "o-2"}
    )
    _problem(invalid, 422, "VALIDATION_FAILED")
    crashed = await example.get("/reports/daily")
    _problem(crashed, 500, "INTERNAL_ERROR")
    assert "s3cret" not in crashed.text


async def test_handlers_raise_problems_and_keep_their_own(example: httpx.AsyncClient) -> None:
    created = await example.post("/orders", json=ORDER, headers={"Idempotency-Key": "o-3"})
    order_id = created.json()["id"]
    paid_twice = await example.post(f"/orders/{order_id}/pay")
    problem = _problem(paid_twice, 409, "ORDER_ALREADY_PAID")
    assert problem["detail"] == f"order {order_id} is paid already"
    # The application's own handler for its own exception is untouched.
    missing = await example.get("/orders/999")
    assert missing.status_code == 404
    assert missing.json() == {"error": "no such order", "id": 999}


async def test_a_mapping_detail_keeps_its_code_and_text(example: httpx.AsyncClient) -> None:
    refused = await example.post(
        "/orders", json={"item": "discontinued", "quantity": 1}, headers={"Idempotency-Key": "o-4"}
    )
    problem = _problem(refused, 422, "OUT_OF_STOCK")
    assert problem["detail"] == "this item is no longer sold"


async def test_malformed_json_without_a_description_is_400_with_line_and_column(
    bare: httpx.AsyncClient,
) -> None:
    response = await bare.post(
        "/orders", content=b'{"item": "book",\n "quantity": }', headers={"content-type": "application/json"}
    )
    problem = _problem(response, 400, "MALFORMED_BODY")
    assert "line 2, column 14" in problem["detail"]


async def test_fastapi_messages_never_echo_the_submitted_value(bare: httpx.AsyncClient) -> None:
    response = await bare.post("/orders", json={"item": "x", "quantity": "hunter2-secret"})
    _problem(response, 422, "VALIDATION_FAILED")
    assert "hunter2-secret" not in response.text


async def test_the_applications_own_http_exception_handler_wins() -> None:
    api = FastAPI()

    @api.exception_handler(HTTPException)
    async def mine(request: Any, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"mine": exc.status_code}, status_code=exc.status_code)

    @api.get("/teapot")
    def teapot() -> None:
        raise HTTPException(418)

    app = Bastion(api, {"store": "memory://"}, env={})
    async for http in _client(app):
        response = await http.get("/teapot")
        assert response.status_code == 418
        assert response.json() == {"mine": 418}


async def test_a_custom_validator_message_with_the_value_is_not_echoed() -> None:
    from pydantic import field_validator

    class Coupon(BaseModel):
        code: str

        @field_validator("code")
        @classmethod
        def known(cls, value: str) -> str:
            raise ValueError(f"{value} is not a known coupon")

    api = FastAPI()

    @api.post("/coupons")
    def redeem(coupon: Coupon) -> None:
        return None

    app = Bastion(api, {"store": "memory://"}, env={})
    async for http in _client(app):
        response = await http.post("/coupons", json={"code": "SECRET-COUPON-123"})
        _problem(response, 422, "VALIDATION_FAILED")
        assert "SECRET-COUPON-123" not in response.text


async def test_a_5xx_http_exception_keeps_nothing_of_its_detail() -> None:
    api = FastAPI()

    @api.get("/boom")
    def boom() -> None:
        raise HTTPException(503, detail="redis at 10.0.0.5:6379 refused the connection")

    app = Bastion(api, {"store": "memory://"}, env={})
    async for http in _client(app):
        response = await http.get("/boom")
        assert response.status_code == 503
        assert "10.0.0.5" not in response.text


async def test_fastapis_documentation_pages_are_never_hidden(example: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        response = await example.get(path)
        assert response.status_code == 200, (path, response.text[:200])
    assert (await example.get("/openapi.json")).json()["info"]["title"] == "orders API (FastAPI example)"
    # Only the documentation pages: another path outside the description is still refused.
    _problem(await example.get("/docs-but-not"), 404, "NOT_FOUND")
    _problem(await example.post("/docs"), 404, "NOT_FOUND")
