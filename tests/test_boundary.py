"""The outermost guard: trace ids, problems for every error, metrics and logs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from bastion import Conflict, NotFound
from bastion.asgi import Message, Receive, Scope, Send
from bastion.boundary import ResponseAborted
from tests.support import client, wrap

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def trace_of(response: Any) -> str:
    return str(response.headers["traceparent"].split("-")[1])


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


async def leaky(scope: Scope, receive: Receive, send: Send) -> None:
    raise ValueError("db password hunter2")


async def test_unhandled_exception_is_a_problem_without_internals() -> None:
    app, logs = wrap(leaky)
    async with client(app) as http:
        response = await http.post("/orders", json={"a": 1})
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "INTERNAL_ERROR"
    assert body["status"] == 500
    assert body["trace_id"] == trace_of(response)
    for secret in ("hunter2", "ValueError", "Traceback", "boundary.py"):
        assert secret not in response.text
    errors = [r for r in logs.records() if r["level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["trace_id"] == body["trace_id"]
    for secret in ("hunter2", "ValueError", "Traceback"):
        assert secret in errors[0]["exception"]


async def test_trace_headers_on_every_response() -> None:
    app, _ = wrap(hello)
    async with client(app) as http:
        response = await http.get("/")
    assert response.text == "hello"
    trace_id = trace_of(response)
    assert len(trace_id) == 32
    assert response.headers["x-request-id"] == trace_id


async def test_incoming_traceparent_is_continued_with_a_new_span() -> None:
    app, logs = wrap(leaky)
    async with client(app) as http:
        response = await http.get("/", headers={"traceparent": TRACEPARENT})
    version, trace_id, span_id, flags = response.headers["traceparent"].split("-")
    assert trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert span_id != "00f067aa0ba902b7"
    assert response.json()["trace_id"] == trace_id
    assert all(r["trace_id"] == trace_id for r in logs.records())


@pytest.mark.parametrize(
    "bad",
    [
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        "nonsense",
    ],
)
async def test_bad_traceparent_starts_a_new_trace(bad: str) -> None:
    app, _ = wrap(hello)
    async with client(app) as http:
        response = await http.get("/", headers={"traceparent": bad})
    assert trace_of(response) not in bad
    assert trace_of(response) != "0" * 32


async def test_valid_request_id_is_echoed_and_bad_one_replaced() -> None:
    app, logs = wrap(leaky)
    async with client(app) as http:
        good = await http.get("/", headers={"x-request-id": "req-42"})
        bad = await http.get("/", headers={"x-request-id": "<script>alert(1)</script>"})
    assert good.headers["x-request-id"] == "req-42"
    assert bad.headers["x-request-id"] == trace_of(bad)
    assert "script" not in str(logs.getvalue())


async def test_problems_raised_by_the_app_keep_their_status_and_code() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise Conflict(code="ORDER_ALREADY_PAID", detail="paid at 10:02")

    bastion_app, logs = wrap(app, {"errors": {"type_base": "https://docs.example.com/errors/"}})
    async with client(bastion_app) as http:
        response = await http.post("/orders/1/pay")
    assert response.status_code == 409
    assert response.json() == {
        "type": "https://docs.example.com/errors/order-already-paid",
        "title": "Conflict",
        "status": 409,
        "detail": "paid at 10:02",
        "instance": "/orders/1/pay",
        "code": "ORDER_ALREADY_PAID",
        "trace_id": trace_of(response),
    }
    # A 4xx problem is not an error of the server: no error line.
    assert [r["level"] for r in logs.records()] == ["info"]


async def test_exception_after_the_response_started_is_logged_and_the_connection_dropped() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"partial", "more_body": True})
        raise RuntimeError("mid-stream failure")

    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    bastion_app, logs = wrap(app)
    scope = {"type": "http", "method": "GET", "path": "/stream", "headers": [], "query_string": b""}
    # The server is told to drop the connection: ending the response normally would
    # pass the cut-off body for a whole one.
    with pytest.raises(ResponseAborted, match="trace_id"):
        await bastion_app(scope, receive, send)
    assert [m.get("more_body") for m in sent if m["type"] == "http.response.body"] == [True]
    messages = [r["event"] for r in logs.records()]
    assert "unhandled exception" in messages
    assert "response aborted after it started" in messages


def starlette_app() -> Starlette:
    async def crash(request: Request) -> PlainTextResponse:
        raise ValueError("db password hunter2")

    async def missing(request: Request) -> PlainTextResponse:
        raise NotFound(detail="order 7 does not exist")

    async def deliberate_503(request: Request) -> PlainTextResponse:
        return PlainTextResponse("maintenance", status_code=503)

    async def stream(request: Request) -> StreamingResponse:
        async def chunks() -> Any:
            yield b"a"
            yield b"b"

        return StreamingResponse(chunks())

    return Starlette(
        routes=[
            Route("/crash", crash),
            Route("/missing", missing),
            Route("/maintenance", deliberate_503),
            Route("/stream", stream),
            Route("/items/{id:int}", lambda r: JSONResponse({"id": r.path_params["id"]})),
        ]
    )


async def test_starlette_crash_becomes_a_problem_not_its_plain_500() -> None:
    app, logs = wrap(starlette_app())
    async with client(app) as http:
        response = await http.get("/crash")
    assert response.status_code == 500
    assert response.json()["code"] == "INTERNAL_ERROR"
    assert "hunter2" not in response.text
    assert len([r for r in logs.records() if r["level"] == "error"]) == 1


async def test_starlette_problem_and_http_exception_are_rendered_by_bastion() -> None:
    app, _ = wrap(starlette_app())
    async with client(app) as http:
        missing = await http.get("/missing")
        unknown = await http.get("/no-such-route")
        wrong_method = await http.delete("/crash")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "order 7 does not exist"
    assert missing.json()["trace_id"] == trace_of(missing)
    assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
    assert unknown.json()["trace_id"] == trace_of(unknown)
    assert wrong_method.status_code == 405
    assert wrong_method.json()["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong_method.headers["allow"]


async def test_a_deliberate_5xx_response_passes_unchanged_without_normalization() -> None:
    app, _ = wrap(starlette_app(), {"errors": {"normalize_upstream": False}})
    async with client(app) as http:
        response = await http.get("/maintenance")
    assert response.status_code == 503
    assert response.text == "maintenance"


async def test_route_templates_label_metrics_not_raw_paths() -> None:
    app, _ = wrap(starlette_app())
    async with client(app) as http:
        for i in range(5):
            await http.get(f"/items/{i}")
        await http.get("/random/path/123")
        metrics = (await http.get("/metrics")).text
    assert 'http_route="/items/{id:int}"' in metrics
    assert "/items/3" not in metrics
    assert "/random/path" not in metrics
    assert 'http_route="_unmatched"' in metrics
    assert 'bastion_problems_total{code="NOT_FOUND",status="404"} 1.0' in metrics


class User(BaseModel):
    email: str = Field(pattern=r"^[^@]+@[^@]+$")
    age: int = Field(ge=18, le=120)
    password: str = Field(min_length=12)


def fastapi_app() -> FastAPI:
    api = FastAPI()

    @api.post("/users")
    async def create_user(user: User) -> dict[str, str]:
        return {"email": user.email}

    @api.get("/teapot")
    async def teapot() -> None:
        raise HTTPException(status_code=418, detail="short and stout")

    @api.get("/secret")
    async def secret() -> None:
        raise HTTPException(status_code=403, detail="no", headers={"X-Reason": "policy"})

    return api


async def test_fastapi_validation_errors_map_to_errors_without_input_values() -> None:
    app, _ = wrap(fastapi_app())
    async with client(app) as http:
        response = await http.post(
            "/users", json={"email": "nope", "age": 12, "password": "hunter2", "extra": 1}
        )
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    by_field = {e["field"]: e for e in body["errors"]}
    assert by_field["email"]["code"] == "PATTERN_MISMATCH"
    assert by_field["age"]["code"] == "OUT_OF_RANGE"
    assert by_field["password"]["code"] == "TOO_SHORT"
    assert by_field["age"]["pointer"] == "/age" and by_field["age"]["in"] == "body"
    for value in ("nope", "hunter2"):
        assert value not in response.text
    assert "input" not in response.text


async def test_fastapi_http_exception_keeps_status_detail_and_headers() -> None:
    app, _ = wrap(fastapi_app())
    async with client(app) as http:
        teapot = await http.get("/teapot")
        secret = await http.get("/secret")
    assert teapot.status_code == 418
    assert teapot.json()["code"] == "CLIENT_ERROR"
    assert teapot.json()["detail"] == "short and stout"
    assert secret.status_code == 403 and secret.json()["code"] == "FORBIDDEN"
    assert secret.headers["x-reason"] == "policy"


async def test_metrics_can_move_or_be_switched_off() -> None:
    moved, _ = wrap(hello, {"metrics": {"path": "/_ops/metrics"}})
    off, _ = wrap(hello, {"metrics": {"enabled": False}})
    async with client(moved) as http:
        assert "http_server_request_duration_seconds" in (await http.get("/_ops/metrics")).text
        assert (await http.get("/metrics")).text == "hello"
    async with client(off) as http:
        assert (await http.get("/metrics")).text == "hello"


async def test_access_log_line_per_request() -> None:
    app, logs = wrap(hello)
    async with client(app) as http:
        response = await http.get("/x", headers={"X-API-Key": "k1"})
    (line,) = logs.records()
    assert line["event"] == "request"
    assert line["method"] == "GET" and line["status"] == 200 and line["path"] == "/x"
    assert line["trace_id"] == trace_of(response)
    assert line["duration_ms"] >= 0
    assert line["client"].startswith("key:") and "k1" not in line["client"]


async def test_websocket_scopes_pass_through_untouched() -> None:
    seen: list[Scope] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)
        await send({"type": "websocket.close"})

    bastion_app, _ = wrap(app)
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/ws", "headers": []}
    await bastion_app(scope, receive, send)
    assert seen == [scope] and "bastion" not in seen[0]
    assert sent == [{"type": "websocket.close"}]


class FakeResource:
    def __init__(self, events: list[str], fail: bool = False) -> None:
        self.name = "fake"
        self.events = events
        self.fail = fail

    async def start(self) -> None:
        if self.fail:
            raise OSError("cannot connect")
        self.events.append("start")

    async def close(self) -> None:
        self.events.append("close")

    async def ping(self) -> bool:
        return True


async def run_lifespan(app: Any, inner_messages: list[str]) -> list[dict[str, Any]]:
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: Any) -> None:
        sent.append(message)

    await app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)
    return sent


async def test_lifespan_passes_through_and_manages_resources() -> None:
    events: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            message = await receive()
            events.append("app " + message["type"])
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    bastion_app, _ = wrap(app)
    bastion_app.add_resource(FakeResource(events))
    sent = await run_lifespan(bastion_app, events)
    assert events == ["start", "app lifespan.startup", "close", "app lifespan.shutdown"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_lifespan_for_apps_that_do_not_speak_it() -> None:
    events: list[str] = []
    bastion_app, _ = wrap(hello_http_only)
    bastion_app.add_resource(FakeResource(events))
    sent = await run_lifespan(bastion_app, events)
    assert events == ["start", "close"]
    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]


async def test_failing_resource_fails_startup() -> None:
    bastion_app, _ = wrap(hello_http_only)
    bastion_app.add_resource(FakeResource([], fail=True))
    sent = await run_lifespan(bastion_app, [])
    assert sent[0]["type"] == "lifespan.startup.failed"
    assert "cannot connect" in sent[0]["message"]


async def test_resources_start_on_first_request_without_lifespan() -> None:
    events: list[str] = []
    bastion_app, _ = wrap(hello)
    bastion_app.add_resource(FakeResource(events))
    async with client(bastion_app) as http:
        await http.get("/")
        await http.get("/")
    assert events == ["start"]
    await bastion_app.shutdown()
    assert events == ["start", "close"]


async def hello_http_only(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise RuntimeError("only http")
    await hello(scope, receive, send)


async def test_guards_that_can_admit_a_request_synchronously_are_not_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bastion.idempotency.guard import IdempotencyGuard
    from bastion.ratelimit.guard import RateLimitGuard
    from bastion.routing import RouteGuard
    from bastion.validation.guard import ValidationGuard

    awaited: list[str] = []
    for kind in (RouteGuard, RateLimitGuard, ValidationGuard, IdempotencyGuard):
        original = kind.__call__

        async def counted(self: Any, scope: Scope, receive: Receive, send: Send, _o: Any = original) -> None:
            awaited.append(type(self).__name__)
            await _o(self, scope, receive, send)

        monkeypatch.setattr(kind, "__call__", counted)
    config = {
        "openapi": str(Path(__file__).parent / "gateway" / "orders-openapi.yaml"),
        "rate_limits": {"rules": [{"name": "per-client", "key": "client", "limit": "3/minute"}]},
    }
    app, _ = wrap(hello, config)
    async with client(app) as http:
        ok = await http.get("/orders/7")
        invalid = await http.get("/orders/0")
        unknown = await http.get("/nowhere")
        assert awaited == []
        # A body to read: validation's own call, which runs idempotency's in turn.
        order = {"item": "a", "quantity": 1}
        posted = await http.post("/orders", json=order, headers={"Idempotency-Key": "k-1"})
        assert awaited == ["ValidationGuard", "IdempotencyGuard"]
        limited = await http.get("/orders/8")
    assert ok.status_code == 200 and ok.headers["ratelimit"].startswith('"per-client";r=2;')
    assert invalid.status_code == 422 and invalid.json()["code"] == "VALIDATION_FAILED"
    assert unknown.status_code == 404
    assert posted.status_code == 200 and posted.headers["ratelimit"].startswith('"per-client";r=0;')
    assert limited.status_code == 429 and limited.json()["code"] == "RATE_LIMITED"
    assert awaited == ["ValidationGuard", "IdempotencyGuard"]


async def test_an_application_with_an_admit_method_of_its_own_is_called_as_an_app() -> None:
    class Admissions:
        """An app whose own ``admit`` means something else entirely."""

        def __init__(self) -> None:
            self.admitted: list[Any] = []

        def admit(self, *args: Any) -> bool:
            self.admitted.append(args)
            return True

        async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
            await hello(scope, receive, send)

    inner = Admissions()
    app, _ = wrap(inner)
    async with client(app) as http:
        response = await http.get("/")
    assert response.text == "hello"
    assert inner.admitted == []


@pytest.mark.parametrize("length", ["9" * 5000, "\u00b2".encode().decode("latin-1"), "12x"])
async def test_a_content_length_no_int_reads_is_never_a_500(length: str) -> None:
    """The access log's request size never converts a hostile Content-Length header."""
    sent: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded, _ = wrap(app)
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "raw_path": b"/",
        "query_string": b"",
        "headers": [(b"content-length", length.encode("latin-1"))],
        "client": ("127.0.0.1", 1),
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await guarded(scope, receive, send)
    assert sent[0]["status"] == 204
