"""The gateway served on uvicorn's public protocol when the fence refuses the installed uvicorn.

The release probe is made to say "outside the tested range" and the fenced modules
are imported again, as a worker would on such a uvicorn: the servers then take
uvicorn's own protocol, say so once, and the gateway still answers GET and POST,
keeps connections alive and renders its problems, as it does on its own protocol.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
import uvicorn

from bastion.config.gateway import GatewayConfig
from bastion.gateway.inprocess import AsgiTransport
from bastion.gateway.server import build_gateway
from bastion.gateway.serving import ServerLimits, uvicorn_options
from tests.conftest import free_port
from tests.gateway.conftest import Server
from tests.gateway.upstream_app import app as upstream_app
from tests.support import LogCapture

LIMITS = ServerLimits.from_config(GatewayConfig(), "https://errors.example/")


def force_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    """An uninstalled uvicorn release, and the fenced modules not imported yet."""
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    for name in ("bastion.gateway.transport", "bastion.gateway.cycle"):
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.fixture(params=["fenced", "fallback"])
def served(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[tuple[str, dict[str, Any]]]:
    """The gateway (in front of the in-process upstream) under uvicorn, on either path."""
    if request.param == "fallback":
        force_fallback(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="uvicorn.error"):
        options = uvicorn_options(LIMITS, coalesce=True)
    falls_back = [r.getMessage() for r in caplog.records if "uvicorn's own" in r.getMessage()]
    if request.param == "fallback":
        assert options["http"] == "auto"
        # Said once: which protocol serves, and why.
        assert len(falls_back) == 1
        assert "httptools protocol" in falls_back[0] and "0.99.0 is outside the tested range" in falls_back[0]
    else:
        assert not isinstance(options["http"], str) and not falls_back
    settings = {
        "upstream": "http://upstream.test",
        "store": "memory://",
        "errors": {"normalize_upstream": True},
        "gateway": {"read_timeout": "300ms"},
    }
    transport = AsgiTransport(upstream_app, GatewayConfig(read_timeout="300ms"))
    app = build_gateway(settings, env={}, log_stream=LogCapture(), transport=transport)
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        lifespan="on",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        date_header=False,
        **options,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}", options
    finally:
        server.should_exit = True
        thread.join(10)


def raw_exchange(base: str, requests: list[bytes]) -> bytes:
    """Send ``requests`` on one connection, one after the other; everything read until the close."""
    host, port = base.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        for data in requests:
            conn.sendall(data)
            time.sleep(0.2)
        conn.shutdown(socket.SHUT_WR)
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_get_and_post_are_answered(served: tuple[str, dict[str, Any]]) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=5) as http:
        got = http.get("/echo/a?x=1")
        posted = http.post("/echo/b", content=b"hello body")
    assert got.status_code == 200 and got.json()["query"] == "x=1"
    assert posted.status_code == 200 and posted.json()["body_size"] == len(b"hello body")
    assert "traceparent" in got.headers


def test_a_connection_serves_request_after_request(served: tuple[str, dict[str, Any]]) -> None:
    base, _ = served
    request = b"GET /echo/k HTTP/1.1\r\nHost: api.example\r\n\r\n"
    closing = b"GET /echo/last HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"
    received = raw_exchange(base, [request, request, closing])
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert received.count(b'"path":"/echo/k"') == 2 and b'"path":"/echo/last"' in received


def test_problems_are_rendered(served: tuple[str, dict[str, Any]]) -> None:
    base, _ = served
    with httpx.Client(base_url=base, timeout=5) as http:
        refused = http.request("TRACE", "/echo/t")
        replaced = http.get("/html-error")
        slow = http.get("/slow", params={"seconds": "2"})
    for response, status, code in [
        (refused, 405, "METHOD_NOT_ALLOWED"),
        (replaced, 500, "INTERNAL_ERROR"),
        (slow, 504, "UPSTREAM_TIMEOUT"),
    ]:
        assert response.status_code == status
        assert response.headers["content-type"] == "application/problem+json"
        assert orjson.loads(response.content)["code"] == code


async def test_an_aiohttp_outside_the_tested_range_sends_through_the_session(
    monkeypatch: pytest.MonkeyPatch, upstream: Server
) -> None:
    import aiohttp

    from bastion.gateway import upstream as upstream_module

    monkeypatch.setattr(aiohttp, "__version__", "3.99.0")
    problem = upstream_module.direct_path_problem()
    assert problem is not None and "aiohttp 3.99.0 is outside the tested range" in problem
    # What the import-time check leaves behind on such an aiohttp.
    monkeypatch.setattr(upstream_module, "DIRECT_PATH_PROBLEM", problem)
    logs = LogCapture()
    config = {"upstream": upstream.base, "store": "memory://", "gateway": {"server": "uvicorn"}}
    app = build_gateway(config, env={}, log_stream=logs)
    assert app.proxy.transport.fallback_reason == problem
    said = [r for r in logs.records() if r.get("event") == "upstream requests take the public path"]
    assert len(said) == 1 and said[0]["reason"] == problem
    transport = httpx.ASGITransport(app=app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as http:
            got = await http.get("/echo/a")
            posted = await http.post("/echo/b", content=b"hello")
    finally:
        await app.bastion.shutdown()
    assert got.status_code == 200 and posted.json()["body_size"] == 5
