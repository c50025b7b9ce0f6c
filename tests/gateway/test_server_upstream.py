"""Interim (1xx) responses from the upstream do not hold a request past ``read_timeout``.

The upstream here is a raw socket server that answers every request with interim
responses only (``103 Early Hints`` every 0.1 s, or one ``100 Continue``) and never
a final one, for at most 10 s. With ``read_timeout: 500ms`` the client must get
``504 UPSTREAM_TIMEOUT`` at about that time, not when the upstream gives up.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.upstream import UpstreamClient
from tests.gateway.conftest import Server, start_gateway

pytestmark = pytest.mark.e2e

READ_TIMEOUT_S = 0.5
UPSTREAM_GIVES_UP_S = 10.0


class InterimOnlyUpstream:
    """A loopback server answering each request with interim responses and nothing else."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.stopping = threading.Event()
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(UPSTREAM_GIVES_UP_S)
            buffered = b""
            try:
                while True:  # one request after another on a kept-alive connection
                    while b"\r\n\r\n" not in buffered:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffered += chunk
                    head, buffered = buffered.split(b"\r\n\r\n", 1)
                    path = head.split(b" ", 2)[1]
                    if path == b"/ok":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        continue
                    if path == b"/stalled-body":
                        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
                    elif path == b"/continue":
                        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                    self._interim_until_given_up(conn, hints=path == b"/hints")
                    return
            except OSError:
                return  # the gateway gave up on this request

    def _interim_until_given_up(self, conn: socket.socket, *, hints: bool) -> None:
        deadline = time.monotonic() + UPSTREAM_GIVES_UP_S
        while time.monotonic() < deadline and not self.stopping.is_set():
            if hints:
                conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
            time.sleep(0.1)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture(scope="module")
def interim_upstream() -> Iterator[InterimOnlyUpstream]:
    upstream = InterimOnlyUpstream()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def gateway(
    interim_upstream: InterimOnlyUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    upstream = interim_upstream
    config = {
        "upstream": f"http://127.0.0.1:{upstream.port}",
        "store": "memory://",
        "gateway": {"read_timeout": f"{round(READ_TIMEOUT_S * 1000)}ms"},
    }
    server = start_gateway(tmp_path_factory.mktemp("interim"), config)
    yield server
    server.stop()


def _streamed_body() -> Iterator[bytes]:
    yield b'{"a": '
    yield b"1}"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/hints", None),
        ("POST", "/hints", b'{"a": 1}'),
        ("POST", "/hints", "stream"),
        ("GET", "/continue", None),
    ],
    ids=["103-repeated-get", "103-repeated-post", "103-repeated-streamed-post", "100-then-silence"],
)
def test_interim_responses_do_not_reset_the_upstream_read_timeout(
    gateway: Server, method: str, path: str, body: bytes | str | None
) -> None:
    content = _streamed_body() if body == "stream" else body
    headers = {"Content-Type": "application/json"} if body is not None else {}
    started = time.monotonic()
    response = httpx.request(method, gateway.base + path, content=content, headers=headers, timeout=15)
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "UPSTREAM_TIMEOUT"
    assert elapsed < 4 * READ_TIMEOUT_S, f"the 504 took {elapsed:.2f} s"


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "session"])
async def test_both_upstream_paths_give_up_on_interim_responses(
    direct: bool, interim_upstream: InterimOnlyUpstream
) -> None:
    client = UpstreamClient(GatewayConfig(read_timeout="500ms", connect_timeout="1s"), direct=direct)
    started = time.monotonic()
    try:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(
                client.send("GET", URL(f"http://127.0.0.1:{interim_upstream.port}/hints"), [], None), 8
            )
    finally:
        await client.close()
    # The session path bounds the whole wait, connecting included: connect + read timeout.
    assert time.monotonic() - started < 4 * (READ_TIMEOUT_S + (0 if direct else 1))


async def test_after_the_head_the_read_timeout_bounds_each_silence_of_the_body(
    interim_upstream: InterimOnlyUpstream,
) -> None:
    client = UpstreamClient(GatewayConfig(read_timeout="500ms"), direct=True)
    try:
        response = await client.send(
            "GET", URL(f"http://127.0.0.1:{interim_upstream.port}/stalled-body"), [], None
        )
        assert response.status == 200
        started = time.monotonic()
        with pytest.raises((TimeoutError, aiohttp.ClientPayloadError)):
            await asyncio.wait_for(response.read(), 8)
        assert time.monotonic() - started < 4 * READ_TIMEOUT_S
    finally:
        await client.close()


async def test_a_pooled_connection_outlives_the_read_timeout_of_its_last_response(
    interim_upstream: InterimOnlyUpstream,
) -> None:
    # The first answer arrives whole with its head; no timer may be left to fail the
    # connection once it is idle in the pool.
    client = UpstreamClient(GatewayConfig(read_timeout="200ms"), direct=True)
    url = URL(f"http://127.0.0.1:{interim_upstream.port}/ok")
    connections = interim_upstream.connections
    try:
        first = await client.send("GET", url, [], None)
        assert await first.read() == b"ok"
        first.release()
        await asyncio.sleep(0.5)  # longer than the read timeout: the behaviour under test
        second = await client.send("GET", url, [], None)
        assert await second.read() == b"ok"
        second.release()
    finally:
        await client.close()
    assert interim_upstream.connections == connections + 1
