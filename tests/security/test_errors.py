"""Problems leak nothing and echo nothing unbounded: error bodies, instance, errors[], labels."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from bastion import NotFound, ValidationFailed
from bastion.asgi import Message, Receive, Scope, Send
from bastion.gateway.server import build_gateway
from tests.gateway.conftest import Server, start_upstream
from tests.support import LogCapture, client, wrap
from tests.validation.helpers import CHECKOUT, behind_bastion

LEAKS = ("Traceback", "hunter2", "postgresql://admin", "secret-token-123", "<html", "orders.py")
CRASH_PAGE = (
    "<html><body><h1>Internal Server Error</h1><pre>Traceback (most recent call last):\n"
    '  File "/srv/app/orders.py", line 42\n'
    "    db.connect('postgresql://admin:hunter2@db.internal/orders')  # password hunter2\n"
    "RuntimeError: secret-token-123</pre></body></html>"
)


@pytest.fixture(scope="module")
def upstream_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The gateway tests' Starlette upstream (its /html-error is an HTML 500 with a traceback)."""
    server = start_upstream(tmp_path_factory.mktemp("errors-upstream"))
    yield server
    server.stop()


def originals(logs: LogCapture, trace_id: str) -> list[dict[str, Any]]:
    return [r for r in logs.records() if r.get("trace_id") == trace_id and "upstream_body" in r]


def assert_replaced(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert body["trace_id"] == response.headers["traceparent"].split("-")[1]
    for leaked in LEAKS:
        assert leaked not in response.text, leaked
    return body


# -- 5xx bodies are replaced by default ---------------------------------------------------


async def test_gateway_replaces_an_upstream_stack_trace_by_default(upstream_server: Server) -> None:
    logs = LogCapture()
    app = build_gateway({"upstream": upstream_server.base, "store": "memory://"}, env={}, log_stream=logs)
    try:
        async with client(app) as http:
            response = await http.get("/html-error")
    finally:
        await app.bastion.shutdown()
    body = assert_replaced(response, 500, "INTERNAL_ERROR")
    logged = originals(logs, body["trace_id"])
    assert logged and "hunter2" in logged[0]["upstream_body"]
    assert logged[0]["upstream_status"] == 500


async def crashing_asgi_app(scope: Scope, receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/html; charset=utf-8"), (b"retry-after", b"30")]
    await send({"type": "http.response.start", "status": 500, "headers": headers})
    half = len(CRASH_PAGE) // 2
    await send({"type": "http.response.body", "body": CRASH_PAGE[:half].encode(), "more_body": True})
    await send({"type": "http.response.body", "body": CRASH_PAGE[half:].encode()})


async def crash_page(request: Request) -> HTMLResponse:
    return HTMLResponse(CRASH_PAGE, status_code=int(request.path_params["status"]))


STARLETTE_APP = Starlette(routes=[Route("/crash/{status:int}", crash_page)])


@pytest.mark.parametrize(
    ("app", "path", "status", "code"),
    [
        (crashing_asgi_app, "/anything", 500, "INTERNAL_ERROR"),
        (STARLETTE_APP, "/crash/500", 500, "INTERNAL_ERROR"),
        (STARLETTE_APP, "/crash/502", 502, "UPSTREAM_UNAVAILABLE"),
        (STARLETTE_APP, "/crash/503", 503, "DEPENDENCY_UNAVAILABLE"),
        (STARLETTE_APP, "/crash/504", 504, "UPSTREAM_TIMEOUT"),
        (STARLETTE_APP, "/crash/507", 507, "INTERNAL_ERROR"),
    ],
)
async def test_middleware_replaces_an_applications_own_5xx_page(
    app: Any, path: str, status: int, code: str
) -> None:
    bastion, logs = wrap(app)
    async with client(bastion) as http:
        response = await http.get(path)
    body = assert_replaced(response, status, code)
    logged = originals(logs, body["trace_id"])
    assert logged and "hunter2" in logged[0]["upstream_body"]
    assert logged[0]["upstream_body_truncated"] is False
    if app is crashing_asgi_app:
        assert logged[0]["upstream_body"] == CRASH_PAGE
        assert response.headers["retry-after"] == "30"


async def test_middleware_4xx_pages_are_replaced_only_with_all() -> None:
    default, _ = wrap(STARLETTE_APP)
    everything, logs = wrap(STARLETTE_APP, {"errors": {"normalize_upstream": "all"}})
    async with client(default) as http:
        kept = await http.get("/crash/418")
    async with client(everything) as http:
        replaced = await http.get("/crash/418")
    assert kept.status_code == 418 and kept.text == CRASH_PAGE
    body = assert_replaced(replaced, 418, "CLIENT_ERROR")
    assert originals(logs, body["trace_id"])


async def test_middleware_keeps_5xx_pages_with_normalization_off() -> None:
    app, _ = wrap(STARLETTE_APP, {"errors": {"normalize_upstream": False}})
    async with client(app) as http:
        response = await http.get("/crash/500")
    assert response.status_code == 500 and response.text == CRASH_PAGE


async def test_an_applications_problem_shaped_json_5xx_passes() -> None:
    problem = {"type": "https://api.example/errors/busy", "title": "Busy", "status": 503}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(problem)})

    bastion, _ = wrap(app)
    async with client(bastion) as http:
        response = await http.get("/")
    assert response.status_code == 503 and response.json() == problem


async def test_a_huge_5xx_body_is_held_bounded_and_logged_cut() -> None:
    chunk = b"x" * 65_536

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]}
        )
        for _ in range(64):  # 4 MiB
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    bastion, logs = wrap(app)
    async with client(bastion) as http:
        response = await http.get("/")
    body = assert_replaced(response, 500, "INTERNAL_ERROR")
    logged = originals(logs, body["trace_id"])
    assert logged[0]["upstream_body_truncated"] is True
    assert len(logged[0]["upstream_body"]) <= 65_536


# -- reflection ---------------------------------------------------------------------------


async def raw_request(app: Any, raw_path: bytes, path: str) -> tuple[int, bytes]:
    """One request straight through ASGI, with a raw path no HTTP client would send."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": raw_path,
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 1234),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
    raise NotFound()


async def test_instance_is_the_raw_path_with_control_characters_encoded() -> None:
    app, _ = wrap(not_found)
    status, body = await raw_request(
        app, b"/a%0D%0ASet-Cookie:x/<script>\x7f\xff", "/a\r\nSet-Cookie:x/<script>"
    )
    # Control characters have no canonical path: 400, and the instance still escaped.
    assert status == 400
    instance = orjson.loads(body)["instance"]
    assert instance == "/a%0D%0ASet-Cookie:x/%3Cscript%3E%7F%FF"
    assert b"\r" not in body and b"\\r" not in body and b"<script>" not in body


async def test_instance_is_bounded() -> None:
    app, _ = wrap(not_found)
    _, body = await raw_request(app, b"/" + b"%0A" * 20_000, "/" + "\n" * 20_000)
    instance = orjson.loads(body)["instance"]
    assert len(instance) <= 1024 and instance.startswith("/%0A%0A")
    assert "%" not in instance[-2:]


async def test_a_30000_character_unknown_field_is_not_echoed_whole_by_validation() -> None:
    app, _ = behind_bastion(CHECKOUT)
    name = "k" * 30_000
    async with client(app) as http:
        response = await http.post("/users", json={name: 1, "email": "a@b.example", "name": "x", "age": 30})
    assert response.status_code == 422
    assert len(response.content) < 2048
    assert all(
        len(e.get("field", "")) <= 128 and len(e.get("pointer", "")) <= 128 for e in response.json()["errors"]
    )


async def test_long_unknown_field_names_are_cut_in_the_problem() -> None:
    name = "k" * 30_000

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        entry = {
            "code": "NOT_ALLOWED",
            "in": "body",
            "pointer": "/" + name,
            "field": name,
            "detail": "unknown",
        }
        raise ValidationFailed("1 problem in the request body", errors=[entry])

    bastion, _ = wrap(app)
    async with client(bastion) as http:
        response = await http.post("/orders", json={name: 1})
    assert response.status_code == 422
    assert len(response.content) < 1024
    entry = response.json()["errors"][0]
    assert len(entry["field"]) == 128 and len(entry["pointer"]) == 128


async def test_a_long_5xx_let_through_is_streamed_not_held_whole() -> None:
    chunk = b"y" * 40_000
    sent: list[Message] = []
    seen_while_running: list[int] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"text/plain")]}
        )
        for _ in range(3):
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        seen_while_running.append(len(sent))
        await send({"type": "http.response.body", "body": b""})

    bastion, _ = wrap(app, {"errors": {"normalize_upstream": False}})
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [],
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await bastion(scope, receive, send)
    # Past 64 KiB the held start and chunks went out while the application still ran.
    assert seen_while_running == [4]  # the start and three chunks
    assert sent[0]["status"] == 500
    assert b"".join(m.get("body", b"") for m in sent[1:]) == chunk * 3
