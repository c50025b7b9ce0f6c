"""The floor of a reverse proxy written in Python here: llhttp on both sides and nothing else.

    .venv/bin/python bench/floor_proxy.py PORT UPSTREAM_PORT

Not a product, a measuring stick for ``bench/gateway.py``: what a Python process on
uvloop pays per proxied request when it does the least a proxy that reads what it
forwards can do. Each client connection gets one keep-alive connection of its own
to the upstream; a request is parsed (httptools), its head written upstream with
the client's header fields as they came and the body with its length; the answer is
parsed and written back with its status, fields and a ``Content-Length``. No ASGI,
no scope, no task per request, no guard, no log, no metric, no timeout, no error
handling worth the name. Whatever bastion's gateway costs above this row is the
price of its boundary (ASGI, guards, problems, limits); this row's cost above
nginx's is the price of Python's interpreter for the same syscalls.
"""

from __future__ import annotations

import asyncio
import sys
from http import HTTPStatus

import httptools
import uvloop

_HOP = {b"connection", b"keep-alive", b"transfer-encoding", b"te", b"upgrade", b"content-length"}
_STATUS = {s.value: f"HTTP/1.1 {s.value} {s.phrase}\r\n".encode() for s in HTTPStatus}


class Upstream(asyncio.Protocol):
    """The upstream connection of one client connection: parses answers, hands them to the client."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _HOP:
            self.headers += (name, b": ", value, b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        head = [_STATUS[self.parser.get_status_code()], *self.headers]
        head += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        self.headers = []
        self.body = []
        self.client.answer(b"".join(head))


class Client(asyncio.Protocol):
    """One client connection: parses requests, forwards each, one at a time."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.parser = httptools.HttpRequestParser(self)
        self.url = b""
        self.headers: list[bytes] = []
        self.body: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.upstream: Upstream | None = None
        self.pending: list[bytes] = []
        self.connecting: asyncio.Task[object] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        loop = asyncio.get_running_loop()
        self.upstream = Upstream(self)
        upstream = self.upstream
        self.connecting = loop.create_task(
            loop.create_connection(lambda: upstream, "127.0.0.1", self.upstream_port)
        )

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() not in _HOP:
            self.headers += (name, b": ", value, b"\r\n")

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        body = b"".join(self.body)
        head = [self.parser.get_method(), b" ", self.url, b" HTTP/1.1\r\n", *self.headers]
        head += (b"content-length: ", str(len(body)).encode(), b"\r\n\r\n", body)
        self.url = b""
        self.headers = []
        self.body = []
        request = b"".join(head)
        upstream = self.upstream
        if upstream is not None and upstream.transport is not None:
            upstream.transport.write(request)
        else:
            self.pending.append(request)
            asyncio.get_running_loop().call_later(0.01, self._flush)

    def _flush(self) -> None:
        upstream = self.upstream
        if upstream is None or upstream.transport is None:
            asyncio.get_running_loop().call_later(0.01, self._flush)
            return
        for request in self.pending:
            upstream.transport.write(request)
        self.pending = []

    def answer(self, response: bytes) -> None:
        if self.transport is not None:
            self.transport.write(response)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()


async def main(port: int, upstream_port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Client(upstream_port), "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.install()
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
