"""The upstream client: its direct path against ``ClientSession.request``, on real sockets.

Every test runs both ways (``direct`` on and off), so the path that skips the
session is held to what the session does: the same request bytes on the wire,
the same retry of a pooled connection the upstream had closed, the same errors.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import orjson
import pytest
from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.upstream import UpstreamClient
from tests.gateway.conftest import Server

pytestmark = pytest.mark.parametrize("direct", [True, False], ids=["direct", "session"])


@asynccontextmanager
async def upstream_client(direct: bool, **settings: Any) -> AsyncIterator[UpstreamClient]:
    client = UpstreamClient(GatewayConfig(**settings), direct=direct)
    await client.start()
    try:
        yield client
    finally:
        await client.close()


class RawUpstream:
    """A loopback HTTP/1.1 server that records each request's bytes and answers ``200 ok``.

    ``drop`` decides, from a connection's request count (1 for its first request),
    whether to close the connection instead of answering: a keep-alive connection
    closed by the upstream just as the gateway reuses it.
    """

    def __init__(self, drop: Callable[[int], bool] = lambda n: False) -> None:
        self.drop = drop
        self.requests: list[bytes] = []
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.base = ""

    async def __aenter__(self) -> RawUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        served = 0
        try:
            while True:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
                served += 1
                if self.drop(served):
                    writer.close()
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if length else b""
                self.requests.append(head + body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
            writer.close()


async def read(response: Any) -> bytes:
    try:
        return bytes(await response.read())
    finally:
        response.release()


HEADERS = [
    ("Accept", "application/json"),
    ("X-Trace", "one"),
    ("X-Trace", "two"),
    ("X-Forwarded-For", "203.0.113.7"),
]


async def test_the_upstream_gets_the_request_bytes_clientsession_would_send(direct: bool) -> None:
    async with RawUpstream() as raw, upstream_client(direct) as client:
        url = URL(raw.base + "/items/42?x=1&y=%20z", encoded=True)
        assert await read(await client.send("GET", url, HEADERS, None)) == b"ok"
        body = b'{"item": "book"}'
        headers = [*HEADERS, ("Content-Length", str(len(body)))]
        assert await read(await client.send("POST", URL(raw.base + "/orders"), headers, body)) == b"ok"
    host = raw.base.removeprefix("http://")
    assert raw.requests == [
        (
            f"GET /items/42?x=1&y=%20z HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\n"
            "X-Trace: one\r\nX-Trace: two\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
        ).encode(),
        (
            f"POST /orders HTTP/1.1\r\nHost: {host}\r\nAccept: application/json\r\nX-Trace: one\r\n"
            "X-Trace: two\r\nX-Forwarded-For: 203.0.113.7\r\nContent-Length: 16\r\n\r\n"
        ).encode()
        + body,
    ]


async def test_a_host_among_the_headers_replaces_the_upstreams_with_preserve_host(direct: bool) -> None:
    async with RawUpstream() as raw, upstream_client(direct, preserve_host=True) as client:
        headers = [("Accept", "*/*"), ("Host", "api.example.com")]
        assert await read(await client.send("GET", URL(raw.base + "/"), headers, None)) == b"ok"
    assert raw.requests == [b"GET / HTTP/1.1\r\nHost: api.example.com\r\nAccept: */*\r\n\r\n"]


async def test_a_streamed_body_arrives_whole(direct: bool, upstream: Server) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(5):
            yield bytes([65 + i]) * 10_000

    async with upstream_client(direct) as client:
        response = await client.send("POST", URL(upstream.base + "/upload"), [], chunks())
        echo = orjson.loads(await read(response))
    assert echo["body_size"] == 50_000
    assert response.status == 200


async def test_a_closed_pooled_connection_is_tried_again_for_an_idempotent_request(direct: bool) -> None:
    # Every connection answers its first request and is closed when a second one comes.
    async with RawUpstream(drop=lambda n: n > 1) as raw, upstream_client(direct) as client:
        url = URL(raw.base + "/items/1")
        assert await read(await client.send("GET", url, [], None)) == b"ok"
        assert await read(await client.send("GET", url, [], None)) == b"ok"
        assert await read(await client.send("PUT", url, [("Content-Length", "1")], b"x")) == b"ok"
    assert len(raw.requests) == 3
    assert raw.connections == 3  # the second and third requests each found theirs closed


async def test_a_closed_pooled_connection_is_an_error_for_a_post(direct: bool) -> None:
    async with RawUpstream(drop=lambda n: n > 1) as raw, upstream_client(direct) as client:
        url = URL(raw.base + "/orders")
        assert await read(await client.send("POST", url, [("Content-Length", "1")], b"x")) == b"ok"
        with pytest.raises(aiohttp.ServerDisconnectedError):
            await client.send("POST", url, [("Content-Length", "1")], b"x")
    assert len(raw.requests) == 1  # never sent twice: the upstream may have acted on it


async def test_nothing_listening_is_a_connector_error(direct: bool) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with upstream_client(direct) as client:
        with pytest.raises(aiohttp.ClientConnectorError):
            await client.send("GET", URL(f"http://127.0.0.1:{port}/"), [], None)


async def test_a_silent_upstream_is_a_read_timeout(direct: bool, upstream: Server) -> None:
    async with upstream_client(direct, read_timeout="300ms") as client:
        with pytest.raises(TimeoutError) as raised:
            await client.send("GET", URL(upstream.base + "/slow?seconds=3"), [], None)
    assert not isinstance(raised.value, aiohttp.ConnectionTimeoutError)


@pytest.mark.parametrize("method", ["HEAD", "head"])
async def test_head_responses_have_no_body_to_wait_for(direct: bool, method: str, upstream: Server) -> None:
    async with upstream_client(direct) as client:
        url = URL(upstream.base + "/count?name=h")
        response = await asyncio.wait_for(client.send(method, url, [], None), 5)
        assert await read(response) == b""
    assert response.status == 200


async def test_a_pool_closed_under_the_client_is_opened_again(direct: bool) -> None:
    async with RawUpstream() as raw, upstream_client(direct) as client:
        assert client.session is not None
        await client.session.close()
        assert await read(await client.send("GET", URL(raw.base + "/"), [], None)) == b"ok"
