"""Spellings of a path must not dodge rate limit rules or idempotency requirements.

Each variant below names ``/login`` or ``/orders`` to a server that normalises
paths, so it must be limited, or need its key, exactly as the plain path; and what
reaches the application (middleware) or the upstream (gateway) is the canonical
path the guards checked. Requests are sent as raw bytes: HTTP clients would tidy
the paths up first.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import orjson
import pytest

from bastion.asgi import Message, Receive, Scope, Send
from bastion.config import load_config
from bastion.gateway.server import build_gateway
from tests.gateway.conftest import Server
from tests.security.recording import RecordingUpstream, raw_request, recorded_gateway
from tests.support import wrap

#: (variant of /login, variant of /orders, its canonical form): spellings a normalising
#: server reads as the plain path. Case and a trailing slash stay: only matching ignores them.
VARIANTS = [
    ("//login", "//orders", "/orders"),
    ("/./login", "/./orders", "/orders"),
    ("/x/../login", "/x/../orders", "/orders"),
    ("/login/", "/orders/", "/orders/"),
    ("/LOGIN", "/ORDERS", "/ORDERS"),
    ("/%6Cogin", "/%6Frders", "/orders"),
    ("/x/%2e%2e/login", "/x/%2E%2E/orders", "/orders"),
]
#: Spellings refused outright: they have no single reading.
REFUSED = [
    "/login;x",
    "/orders;x",
    "/x/%2e%2e%2flogin",
    "/..%2flogin",
    "/../login",
    "/login%00",
    "/x\\..\\login",
]

CONFIG: dict[str, Any] = {
    "store": "memory://",
    "rate_limits": {
        "rules": [{"name": "login", "match": "POST /login", "key": "header:X-Case", "limit": "1/minute"}]
    },
    "idempotency": {"require": ["POST /orders"]},
}


class Recorder:
    """The application behind bastion: records the path it was given, answers 200."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        self.seen.append((scope["path"], scope["raw_path"]))
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": b"ok"})


async def call(app: Any, method: str, target: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """Send one request to ``app`` with the raw target as uvicorn passes it on."""
    raw = target.encode("latin-1")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(target),
        "raw_path": raw,
        "query_string": b"",
        "root_path": "",
        "headers": [(k.lower().encode(), v.encode()) for k, v in {"host": "api", **headers}.items()],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 80),
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], (orjson.loads(body) if body.startswith(b"{") else {})


@pytest.mark.parametrize(("login", "orders", "canonical"), VARIANTS)
async def test_middleware_variants_are_limited_and_need_a_key(
    login: str, orders: str, canonical: str
) -> None:
    recorder = Recorder()
    app, _ = wrap(recorder, CONFIG)
    assert (await call(app, "POST", "/login", {"x-case": login}))[0] == 200
    status, problem = await call(app, "POST", login, {"x-case": login})
    assert (status, problem["code"]) == (429, "RATE_LIMITED")
    status, problem = await call(app, "POST", orders, {})
    assert (status, problem["code"]) == (400, "IDEMPOTENCY_KEY_MISSING")
    status, _ = await call(app, "POST", orders, {"idempotency-key": "k-" + orders})
    assert status == 200
    # Only the plain /login and the keyed order reached the app, the order in canonical form.
    assert [path for path, _ in recorder.seen] == ["/login", canonical]
    assert [raw for _, raw in recorder.seen] == [b"/login", canonical.encode()]


@pytest.mark.parametrize("target", REFUSED)
async def test_middleware_refuses_paths_without_one_reading(target: str) -> None:
    recorder = Recorder()
    app, _ = wrap(recorder, CONFIG)
    status, problem = await call(app, "POST", target, {"idempotency-key": "k"})
    assert (status, problem["code"]) == (400, "BAD_REQUEST")
    assert recorder.seen == []


async def test_case_and_slashes_count_when_configured_strict() -> None:
    app, _ = wrap(Recorder(), {**CONFIG, "routing": {"case_sensitive": True, "strict_slashes": True}})
    assert (await call(app, "POST", "/ORDERS", {}))[0] == 200
    assert (await call(app, "POST", "/orders/", {}))[0] == 200
    # Dot segments and doubled slashes are resolved whatever the setting.
    assert (await call(app, "POST", "/x/..//orders", {}))[1]["code"] == "IDEMPOTENCY_KEY_MISSING"


# -- a real gateway in front of a recording upstream --------------------------------------


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with recorded_gateway(tmp_path_factory.mktemp("paths"), CONFIG) as server:
        yield server


@pytest.fixture
def recording(gateway: Server) -> RecordingUpstream:
    upstream: RecordingUpstream = gateway.extra["recording"]
    return upstream


@pytest.mark.parametrize(("login", "orders", "canonical"), VARIANTS)
def test_gateway_variants_are_limited_need_a_key_and_go_upstream_canonical(
    gateway: Server, recording: RecordingUpstream, login: str, orders: str, canonical: str
) -> None:
    recording.seen.clear()
    head = "POST {} HTTP/1.1\r\nContent-Type: application/json\r\nX-Case: " + login
    assert raw_request(gateway.port, head.format("/login"), b"{}")[0] == 200
    status, answer = raw_request(gateway.port, head.format(login), b"{}")
    assert status == 429, answer
    status, answer = raw_request(
        gateway.port, f"POST {orders} HTTP/1.1\r\nContent-Type: application/json", b"{}"
    )
    assert status == 400 and b"IDEMPOTENCY_KEY_MISSING" in answer, answer
    keyed = f"POST {orders} HTTP/1.1\r\nContent-Type: application/json\r\nIdempotency-Key: gw-{orders}"
    assert raw_request(gateway.port, keyed, b"{}")[0] == 200
    assert recording.seen == [("POST", "/login"), ("POST", canonical)]


@pytest.mark.parametrize("target", REFUSED)
def test_gateway_refuses_paths_without_one_reading(
    gateway: Server, recording: RecordingUpstream, target: str
) -> None:
    recording.seen.clear()
    status, answer = raw_request(gateway.port, f"POST {target} HTTP/1.1\r\nIdempotency-Key: r", b"{}")
    assert status == 400, answer
    assert recording.seen == []


def test_gateway_forwards_escapes_in_canonical_form(gateway: Server, recording: RecordingUpstream) -> None:
    recording.seen.clear()
    status, _ = raw_request(gateway.port, "GET /a/./b//caf%c3%a9/%7e%3a?q=%2F..%2F HTTP/1.1")
    assert status == 200
    assert recording.seen == [("GET", "/a/b/caf%C3%A9/~%3A?q=%2F..%2F")]


@pytest.mark.parametrize("target", ["/metrics", "//metrics", "/x/../metrics", "/%6Detrics"])
async def test_metrics_hidden_from_the_main_port_in_every_spelling(target: str) -> None:
    config = {"store": "memory://", "upstream": "http://127.0.0.1:9", "gateway": {"admin_port": 9}}
    app = build_gateway(load_config(config, env={}), env={})
    try:
        status, problem = await call(app, "GET", target, {})
    finally:
        await app.bastion.shutdown()
    assert (status, problem.get("code")) == (404, "NOT_FOUND")


async def test_a_route_keyed_rule_counts_every_spelling_under_one_key() -> None:
    rule = {"name": "per-route", "match": "POST /login", "key": "route", "limit": "1/minute"}
    app, _ = wrap(Recorder(), {"store": "memory://", "rate_limits": {"rules": [rule]}})
    assert (await call(app, "POST", "/login", {}))[0] == 200
    for variant in ("/LOGIN/", "/Login", "//login/"):
        assert (await call(app, "POST", variant, {}))[0] == 429
