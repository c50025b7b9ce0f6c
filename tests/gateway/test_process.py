"""``bastion gateway`` as a real process: streaming, memory, WebSockets, admin port, SIGTERM, failures."""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import pytest
from multidict import CIMultiDict

from tests.conftest import free_port
from tests.gateway.conftest import Server, start_gateway, start_upstream, vm_kib

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    config = {"upstream": upstream.base, "store": "memory://", "gateway": {"read_timeout": "20s"}}
    server = start_gateway(tmp_path_factory.mktemp("gateway"), config, admin_port=admin_port)
    server.extra["admin"] = f"http://127.0.0.1:{admin_port}"
    yield server
    server.stop()


def test_server_sent_events_arrive_before_the_stream_ends(gateway: Server, upstream: Server) -> None:
    # The upstream holds the stream open until the test releases it: a gateway that
    # buffered the response would deliver nothing before the 10 s read timeout.
    with httpx.stream("GET", gateway.base + "/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        received = b""
        chunks = response.iter_raw()
        while b"data: one\n\n" not in received:
            received += next(chunks)
        assert b"second" not in received
        httpx.post(upstream.base + "/release", timeout=5)
        for chunk in chunks:
            received += chunk
    assert received.endswith(b"event: second\ndata: two\n\n")


def test_a_50_mib_upload_streams_through_without_being_buffered(gateway: Server) -> None:
    pid = gateway.process.pid
    httpx.post(gateway.base + "/upload", content=b"warm-up" * 1000, timeout=10)
    peak_before = vm_kib(pid, "VmHWM")
    block = bytes(range(256)) * 4096  # 1 MiB
    digest = hashlib.sha256()
    for _ in range(50):
        digest.update(block)

    def body() -> Iterator[bytes]:
        for _ in range(50):
            yield block

    response = httpx.post(gateway.base + "/upload", content=body(), timeout=60)
    assert response.status_code == 200
    echo = response.json()
    assert echo["body_size"] == 50 * MIB
    assert echo["body_sha256"] == digest.hexdigest()
    grown_mib = (vm_kib(pid, "VmHWM") - peak_before) / 1024
    assert grown_mib < 20, f"the gateway's peak memory grew by {grown_mib:.1f} MiB for a 50 MiB upload"


def test_a_50_mib_download_streams_through_without_being_buffered(gateway: Server) -> None:
    pid = gateway.process.pid
    peak_before = vm_kib(pid, "VmHWM")
    size = 0
    with httpx.stream("GET", gateway.base + "/download", params={"mb": 50}, timeout=60) as response:
        for chunk in response.iter_raw():
            size += len(chunk)
    assert size == 50 * MIB
    grown_mib = (vm_kib(pid, "VmHWM") - peak_before) / 1024
    assert grown_mib < 20, f"the gateway's peak memory grew by {grown_mib:.1f} MiB for a 50 MiB download"


def test_websocket_messages_and_close_codes_cross_the_gateway(gateway: Server) -> None:
    async def talk() -> dict[str, Any]:
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(
                gateway.base + "/ws", protocols=["chat"], timeout=aiohttp.ClientWSTimeout(ws_close=5)
            ) as ws,
        ):
            await ws.send_str("hello")
            text = await asyncio.wait_for(ws.receive(), 5)
            await ws.send_bytes(b"\x00\x01binary")
            binary = await asyncio.wait_for(ws.receive(), 5)
            await ws.send_str("close")
            closing = await asyncio.wait_for(ws.receive(), 5)
            return {
                "protocol": ws.protocol,
                "text": text.data,
                "binary": binary.data,
                "close": closing.type,
                "code": ws.close_code,
            }

    result = asyncio.run(talk())
    assert result["protocol"] == "chat"
    assert result["text"] == "echo:hello"
    assert result["binary"] == b"\x00\x01binary"
    assert result["close"] in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert result["code"] == 4001


def test_websocket_handshakes_go_through_the_guards(upstream: Server, tmp_path: Path) -> None:
    spec = Path(__file__).parent / "orders-openapi.yaml"  # it does not describe /ws
    config = {
        "upstream": upstream.base,
        "openapi": str(spec),
        "store": "memory://",
        "rate_limits": {"rules": [{"name": "per-client", "key": "ip", "limit": "2/minute"}]},
    }
    server = start_gateway(tmp_path, config, name="ws-guards")

    async def handshakes() -> list[Any]:
        results: list[Any] = []
        async with aiohttp.ClientSession() as session:
            for _ in range(2):
                async with session.ws_connect(server.base + "/ws") as ws:
                    await ws.send_str("headers")
                    upstream_saw = dict(await asyncio.wait_for(ws.receive_json(), 5))
                    handshake = ws._response.headers  # the 101 response the client got
                    results.append((upstream_saw, CIMultiDict(handshake)))
            try:
                async with session.ws_connect(server.base + "/ws"):
                    results.append("accepted")
            except aiohttp.WSServerHandshakeError as exc:
                results.append((exc.status, CIMultiDict(exc.headers or {})))
        return results

    try:
        first, second, third = asyncio.run(handshakes())
    finally:
        server.stop()
    for upstream_saw, handshake in (first, second):
        # The handshake carries a trace id to the upstream and back, and the rate limit headers.
        trace_id = handshake["traceparent"].split("-")[1]
        assert upstream_saw["traceparent"].split("-")[1] == trace_id
        assert handshake["x-request-id"] == trace_id
        assert "per-client" in handshake["ratelimit-policy"]
    assert second[1]["x-ratelimit-remaining"] == "0"
    # The third handshake is over the limit: refused with the problem's status and headers.
    status, headers = third
    assert status == 429
    assert int(headers["Retry-After"]) >= 1
    assert headers["Content-Type"].startswith("application/problem+json")


def test_admin_port_serves_metrics_health_and_ready(gateway: Server) -> None:
    admin = gateway.extra["admin"]
    httpx.get(gateway.base + "/echo/counted", timeout=5)
    metrics = httpx.get(admin + "/metrics", timeout=5)
    assert metrics.status_code == 200
    assert "http_server_request_duration_seconds" in metrics.text
    assert httpx.get(admin + "/_bastion/health", timeout=5).json() == {"status": "ok"}
    assert httpx.get(admin + "/_bastion/ready", timeout=5).status_code == 200
    assert httpx.get(gateway.base + "/metrics", timeout=5).status_code == 404


def test_sigterm_drains_the_request_in_flight(upstream: Server, tmp_path: Path) -> None:
    server = start_gateway(tmp_path, {"upstream": upstream.base, "store": "memory://"}, name="drain")
    result: dict[str, Any] = {}

    def slow_request() -> None:
        try:
            result["response"] = httpx.get(server.base + "/slow", params={"seconds": "2"}, timeout=15)
        except httpx.HTTPError as exc:
            result["error"] = exc

    thread = threading.Thread(target=slow_request)
    thread.start()
    try:
        time.sleep(0.5)  # the request is now waiting on the upstream
        server.process.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        # Draining: no new connections, while the one in flight still runs.
        with pytest.raises(httpx.ConnectError):
            httpx.get(server.base + "/_bastion/health", timeout=2)
        assert server.process.poll() is None, "the gateway exited before its request finished"
        thread.join(timeout=15)
        assert "error" not in result, result.get("error")
        response = result["response"]
        assert response.status_code == 200
        assert response.text == "finally " * 100
        # uvicorn re-raises the signal once drained: the exit status is "terminated by SIGTERM".
        assert server.process.wait(timeout=10) in (0, -signal.SIGTERM)
    finally:
        server.stop()
        thread.join(timeout=15)


def test_stopped_upstream_is_a_502_problem(tmp_path: Path) -> None:
    own_upstream = start_upstream(tmp_path)
    server = start_gateway(tmp_path, {"upstream": own_upstream.base, "store": "memory://"}, name="stopped")
    try:
        assert httpx.get(server.base + "/echo/up", timeout=5).status_code == 200
        own_upstream.stop()
        response = httpx.get(server.base + "/echo/down", timeout=10)
        assert response.status_code == 502
        body = response.json()
        assert body["code"] == "UPSTREAM_UNAVAILABLE"
        assert body["trace_id"] == response.headers["x-request-id"]
    finally:
        server.stop()
        own_upstream.stop()


def test_a_cut_off_upload_never_reaches_the_upstream_as_complete(gateway: Server, upstream: Server) -> None:
    import socket

    def echoed() -> int:
        return int(httpx.get(upstream.base + "/count", params={"name": "echo"}, timeout=5).json()["count"])

    before = echoed()
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        sock.sendall(
            b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"10\r\n0123456789abcdef\r\n"
        )
        time.sleep(0.5)  # the first chunk is on its way upstream; then the client vanishes
    time.sleep(1.0)
    assert echoed() == before, "the upstream took a cut-off body for a whole one"
    # The gateway is still fine afterwards.
    assert httpx.post(gateway.base + "/upload", content=b"x" * 10, timeout=5).json()["body_size"] == 10


def test_an_upstream_that_breaks_off_its_response_breaks_it_off_for_the_client(
    gateway: Server, upstream: Server
) -> None:
    # Straight from the upstream, the client sees the broken chunked response...
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.get(upstream.base + "/broken-stream", timeout=10)
    # ... and through the gateway too: a cut-off body must never arrive as a whole one.
    received: list[bytes] = []

    def read_through_the_gateway() -> None:
        with httpx.stream("GET", gateway.base + "/broken-stream", timeout=10) as response:
            assert response.status_code == 200
            received.extend(response.iter_raw())

    with pytest.raises(httpx.RemoteProtocolError):
        read_through_the_gateway()
    assert b"".join(received) == b"first part of the answer\n"
    assert httpx.get(gateway.base + "/echo/after", timeout=5).status_code == 200


def test_a_refused_websocket_upgrade_is_refused_to_the_client(gateway: Server) -> None:
    async def connect() -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(gateway.base + "/no-such-socket"):
                    return 101
            except aiohttp.WSServerHandshakeError as exc:
                return exc.status

    assert asyncio.run(connect()) == 403
