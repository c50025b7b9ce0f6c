"""The proxy in-process (httpx ASGI transport), in front of the Starlette upstream.

What is the proxy's own behaviour (headers rewritten and forwarded, errors and slow
answers turned into problems, normalization, metrics) is tested with the upstream
app called in process (:class:`~bastion.gateway.inprocess.AsgiTransport`); what needs
sockets or aiohttp's client (automatic headers, compression, cookies, credentials,
connection failures, readiness) against the real upstream server.
"""

from __future__ import annotations

import gzip
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from bastion.config.gateway import GatewayConfig
from bastion.gateway.inprocess import AsgiTransport
from bastion.gateway.seam import UpstreamTransport
from bastion.gateway.server import GatewayApp, build_gateway
from tests.conftest import free_port
from tests.gateway.conftest import Server
from tests.gateway.upstream_app import app as upstream_app
from tests.support import LogCapture

#: The upstream URL of the in-process upstream (never connected to).
IN_PROCESS = "http://upstream.test"


def gateway(
    upstream: str, *, transport: UpstreamTransport | None = None, **config: Any
) -> tuple[GatewayApp, LogCapture]:
    logs = LogCapture()
    settings: dict[str, Any] = {"upstream": upstream, "store": "memory://"}
    settings.update(config)
    return build_gateway(settings, env={}, log_stream=logs, transport=transport), logs


def in_process(**config: Any) -> tuple[GatewayApp, LogCapture]:
    """The gateway in front of the test upstream app, called in this process (no sockets)."""
    transport = AsgiTransport(upstream_app, GatewayConfig(**config.get("gateway", {})))
    return gateway(IN_PROCESS, transport=transport, **config)


@asynccontextmanager
async def client(app: GatewayApp) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as http:
            yield http
    finally:
        await app.bastion.shutdown()


def headers_of(echo: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for key, value in echo["headers"]:
        found.setdefault(key, []).append(value)
    return found


async def test_method_raw_path_query_and_body_reach_the_upstream() -> None:
    app, _ = in_process()
    async with client(app) as http:
        response = await http.request("PATCH", "/echo/a%3Ab/caf%c3%a9?x=1&y=%20z&x=2", content=b"hello body")
    assert response.status_code == 200
    echo = response.json()
    assert echo["method"] == "PATCH"
    # The canonical path: escapes other than unreserved characters kept, in upper case.
    assert echo["raw_path"] == "/echo/a%3Ab/caf%C3%A9"
    assert echo["query"] == "x=1&y=%20z&x=2"
    assert echo["body_size"] == len(b"hello body")


async def test_headers_forwarded_hop_by_hop_dropped_and_trace_passed() -> None:
    app, _ = in_process()
    async with client(app) as http:
        response = await http.get(
            "/echo/h",
            headers={
                "Connection": "keep-alive, X-Secret-Hop",
                "X-Secret-Hop": "dropped",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Authorization": "Basic c2VjcmV0",
                "X-Custom": "kept",
                "X-Request-ID": "req-123",
                "User-Agent": "test-agent/1",
                "Accept-Encoding": "identity",
            },
        )
    echo = response.json()
    got = headers_of(echo)
    for gone in ("connection", "x-secret-hop", "keep-alive", "te", "proxy-authorization"):
        assert gone not in got, gone
    assert got["x-custom"] == ["kept"]
    assert got["user-agent"] == ["test-agent/1"]
    assert got["accept-encoding"] == ["identity"]
    assert got["x-request-id"] == ["req-123"]
    assert response.headers["x-request-id"] == "req-123"
    trace_id = response.headers["traceparent"].split("-")[1]
    upstream_parent = got["traceparent"][0].split("-")
    assert upstream_parent[1] == trace_id
    assert got["x-forwarded-for"] == ["203.0.113.7"]
    assert got["x-forwarded-proto"] == ["http"]
    assert got["x-forwarded-host"] == ["api.example.com"]
    assert got["forwarded"] == ["for=203.0.113.7;proto=http;host=api.example.com"]
    assert got["host"] == ["upstream.test"]


async def test_repeated_headers_reach_the_upstream_in_order_after_host(upstream: Server) -> None:
    app, _ = gateway(upstream.base)
    async with client(app) as http:
        response = await http.get(
            "/echo/order", headers=[("X-B", "1"), ("X-A", "2"), ("X-B", "3"), ("x-b", "4")]
        )
    names = [k for k, _ in response.json()["headers"]]
    assert names[0] == "host"
    sent = [(k, v) for k, v in response.json()["headers"] if k in ("x-a", "x-b")]
    assert sent == [("x-b", "1"), ("x-a", "2"), ("x-b", "3"), ("x-b", "4")]


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_the_upstream_gets_no_header_the_client_did_not_send(upstream: Server, method: str) -> None:
    app, _ = gateway(upstream.base)
    async with client(app) as http:
        for name in ("accept", "accept-encoding", "user-agent", "connection"):
            del http.headers[name]
        body = b"raw bytes, no type" if method == "POST" else None
        response = await http.request(method, "/echo/bare", content=body)
    got = headers_of(response.json())
    expected = {"host", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "forwarded"}
    expected |= {"traceparent", "x-request-id"} | ({"content-length"} if method == "POST" else set())
    assert set(got) == expected
    assert response.json()["body_size"] == (len(body) if body else 0)


async def test_forwarding_headers_from_an_untrusted_peer_are_replaced() -> None:
    app, _ = in_process()
    async with client(app) as http:
        response = await http.get(
            "/echo/h",
            headers={"X-Forwarded-For": "1.2.3.4", "Forwarded": "for=1.2.3.4", "X-Forwarded-Host": "evil"},
        )
    got = headers_of(response.json())
    assert got["x-forwarded-for"] == ["203.0.113.7"]
    assert got["forwarded"] == ["for=203.0.113.7;proto=http;host=api.example.com"]
    assert got["x-forwarded-host"] == ["api.example.com"]


async def test_forwarding_headers_from_a_trusted_proxy_are_extended() -> None:
    app, _ = in_process(clients={"trusted_proxies": ["203.0.113.0/24"]})
    async with client(app) as http:
        response = await http.get(
            "/echo/h",
            headers={
                "X-Forwarded-For": "198.51.100.9",
                "X-Forwarded-Proto": "https",
                "X-Forwarded-Host": "shop.example",
                "Forwarded": "for=198.51.100.9;proto=https",
            },
        )
    got = headers_of(response.json())
    assert got["x-forwarded-for"] == ["198.51.100.9, 203.0.113.7"]
    assert got["x-forwarded-proto"] == ["https"]
    assert got["x-forwarded-host"] == ["shop.example"]
    assert got["forwarded"] == [
        "for=198.51.100.9;proto=https, for=203.0.113.7;proto=http;host=api.example.com"
    ]


async def test_preserve_host_sends_the_client_host(upstream: Server) -> None:
    app, _ = gateway(upstream.base, gateway={"preserve_host": True})
    async with client(app) as http:
        response = await http.get("/echo/h")
    assert headers_of(response.json())["host"] == ["api.example.com"]


async def test_compressed_bodies_pass_through_untouched(upstream: Server) -> None:
    app, _ = gateway(upstream.base)
    # httpx decodes gzip itself; read the raw bytes to see what crossed the gateway.
    async with (
        client(app) as http,
        http.stream("GET", "/compressed", headers={"Accept-Encoding": "gzip"}) as response,
    ):
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(raw) == b"hello " * 1000


async def test_cookies_are_never_shared_between_clients(upstream: Server) -> None:
    app, _ = gateway(upstream.base)
    async with client(app) as http:
        response = await http.get("/cookie")
        assert "session=abc" in response.headers["set-cookie"]
        # A fresh client (no cookie of its own) must not get the first one's.
        http.cookies.clear()
        assert (await http.get("/cookie")).text == "(none)"


async def test_credentials_in_the_upstream_url_replace_the_clients_and_are_never_shown(
    upstream: Server,
) -> None:
    with_credentials = upstream.base.replace("http://", "http://gateway:s3cret@")
    app, _ = gateway(with_credentials)
    async with client(app) as http:
        response = await http.get("/echo/auth", headers={"Authorization": "Bearer client-token"})
    assert response.status_code == 200
    assert headers_of(response.json())["authorization"] == ["Basic Z2F0ZXdheTpzM2NyZXQ="]

    # An upstream that never accepts: its backlog is full, so connecting times out, and the
    # timeout is logged with its cause (aiohttp's error names the URL it was connecting to).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(8):  # until the backlog is full: a connection attempt that hangs
            filler = socket.socket()
            filler.settimeout(0.3)
            fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        try:
            app, logs = gateway(
                f"http://gateway:s3cret@127.0.0.1:{port}", gateway={"connect_timeout": "300ms"}
            )
            async with client(app) as http:
                response = await http.get("/anything")
        finally:
            for filler in fillers:
                filler.close()
    assert response.status_code == 504
    assert "300ms" in response.json()["detail"]
    assert "s3cret" not in response.text
    assert logs.records() and "s3cret" not in str(logs.records())


async def test_upstream_not_listening_is_a_502_problem() -> None:
    app, logs = gateway(f"http://127.0.0.1:{free_port()}")
    async with client(app) as http:
        response = await http.get("/anything")
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "UPSTREAM_UNAVAILABLE"
    assert body["trace_id"] == response.headers["traceparent"].split("-")[1]
    assert any(r.get("trace_id") == body["trace_id"] for r in logs.records())


@pytest.mark.parametrize("pool", [False, True], ids=["in-process", "pool"])
async def test_slow_upstream_is_a_504_problem(upstream: Server, pool: bool) -> None:
    settings: dict[str, Any] = {"gateway": {"read_timeout": "300ms"}}
    app, _ = gateway(upstream.base, **settings) if pool else in_process(**settings)
    async with client(app) as http:
        response = await http.get("/slow", params={"seconds": "3"})
    assert response.status_code == 504
    body = response.json()
    assert body["code"] == "UPSTREAM_TIMEOUT"
    assert "300ms" in body["detail"]


@pytest.mark.parametrize(
    ("path", "status", "code", "setting"),
    [
        ("/html-error", 500, "INTERNAL_ERROR", True),
        ("/stack", 503, "DEPENDENCY_UNAVAILABLE", True),
        ("/missing", 404, "NOT_FOUND", "all"),
        ("/json-error", 500, "INTERNAL_ERROR", True),
    ],
)
async def test_normalize_upstream_replaces_error_pages(
    path: str, status: int, code: str, setting: bool | str
) -> None:
    app, logs = in_process(errors={"normalize_upstream": setting})
    async with client(app) as http:
        response = await http.get(path)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["trace_id"] == response.headers["traceparent"].split("-")[1]
    for leaked in ("Traceback", "hunter2", "secret-token-123", "<html", "Cannot GET", "orders.py"):
        assert leaked not in response.text
    originals = [r for r in logs.records() if r.get("trace_id") == body["trace_id"] and "upstream_body" in r]
    assert originals, "the original upstream body was not logged"
    assert originals[0]["upstream_status"] == status
    if path != "/missing":
        assert "secret-token-123" in originals[0]["upstream_body"]


@pytest.mark.parametrize("pool", [False, True], ids=["in-process", "pool"])
async def test_normalize_keeps_retry_after(upstream: Server, pool: bool) -> None:
    settings: dict[str, Any] = {"errors": {"normalize_upstream": True}}
    app, _ = gateway(upstream.base, **settings) if pool else in_process(**settings)
    async with client(app) as http:
        response = await http.get("/stack")
    assert response.headers["retry-after"] == "7"


async def test_upstream_problems_and_successes_pass_through_normalization() -> None:
    app, _ = in_process(errors={"normalize_upstream": True})
    async with client(app) as http:
        problem = await http.get("/problem")
        ok = await http.get("/echo/fine")
    assert problem.status_code == 409
    assert problem.json()["code"] == "OUT_OF_STOCK"
    assert ok.status_code == 200


async def test_without_normalization_error_pages_pass_through() -> None:
    app, _ = in_process()
    async with client(app) as http:
        response = await http.get("/missing")
    assert response.status_code == 404
    assert "Cannot GET" in response.text


async def test_health_and_ready(upstream: Server) -> None:
    app, _ = gateway(upstream.base)
    async with client(app) as http:
        health = await http.get("/_bastion/health")
        ready = await http.get("/_bastion/ready")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}


async def test_ready_is_a_503_problem_when_a_store_is_unreachable() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app, _ = in_process(
        rate_limits={"store": dead_redis, "rules": [{"name": "g", "key": "global", "limit": "100/second"}]},
    )
    async with client(app) as http:
        ready = await http.get("/_bastion/ready")
    assert ready.status_code == 503
    assert ready.json()["code"] == "DEPENDENCY_UNAVAILABLE"
    assert ready.headers["retry-after"] == "5"


async def test_metrics_stay_on_the_main_port_without_an_admin_port() -> None:
    app, _ = in_process()
    async with client(app) as http:
        await http.get("/_bastion/health")
        await http.get("/echo/m")
        metrics = await http.get("/metrics")
    assert metrics.status_code == 200
    assert "http_server_request_duration_seconds" in metrics.text


async def test_metrics_leave_the_main_port_with_an_admin_port() -> None:
    app, _ = in_process(gateway={"admin_port": free_port()})
    async with client(app) as http:
        metrics = await http.get("/metrics")
    assert metrics.status_code == 404
    assert metrics.json()["code"] == "NOT_FOUND"


async def test_head_requests_get_headers_without_a_body(upstream: Server) -> None:
    app, _ = gateway(upstream.base)
    async with client(app) as http:
        response = await http.head("/echo/head")
    assert response.status_code == 200
    assert response.content == b""
    assert response.headers["content-type"] == "application/json"


async def test_ready_is_a_503_naming_the_upstream_while_it_cannot_be_reached() -> None:
    app, _ = gateway(f"http://127.0.0.1:{free_port()}")
    async with client(app) as http:
        health = await http.get("/_bastion/health")
        ready = await http.get("/_bastion/ready")
    assert health.status_code == 200
    assert ready.status_code == 503
    assert ready.json()["unreachable"] == ["upstream"]
    assert "upstream" in ready.json()["detail"]


async def test_ready_names_each_unreachable_store() -> None:
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    app, _ = gateway(
        f"http://127.0.0.1:{free_port()}",
        rate_limits={"store": dead_redis, "rules": [{"name": "g", "key": "global", "limit": "100/second"}]},
    )
    async with client(app) as http:
        ready = await http.get("/_bastion/ready")
    assert ready.status_code == 503
    assert "upstream" in ready.json()["unreachable"]
    assert len(ready.json()["unreachable"]) == 2


async def test_the_readiness_ping_is_believed_for_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    from bastion.gateway import proxy as proxy_module
    from bastion.gateway.proxy import ProxyApp

    port = free_port()
    proxy = ProxyApp(f"http://127.0.0.1:{port}")
    assert await proxy.ping() is False  # the pool is not open yet
    await proxy.start()
    try:
        clock = [1000.0]
        # The proxy's clock only (the event loop keeps the real one).
        monkeypatch.setattr(proxy_module, "time", SimpleNamespace(monotonic=lambda: clock[0]))
        assert await proxy.ping() is False  # nothing listens
        with socket.create_server(("127.0.0.1", port)):
            clock[0] += 0.9
            assert await proxy.ping() is False  # still the answer of 0.9 s ago
            clock[0] += 0.2
            assert await proxy.ping() is True  # asked again: it listens now
        clock[0] += 0.5
        assert await proxy.ping() is True
    finally:
        await proxy.close()
