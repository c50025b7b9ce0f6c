"""Persistent connections and response framing, on the gateway's protocols and on the public fallback.

Raw requests (HTTP/1.1 and HTTP/1.0, with ``Connection: close``, ``keep-alive`` or
neither) go into the protocol uvicorn would run, over a recording transport; an
app answers with a generated response. What comes out must be a whole response,
framed as the request's version allows (``Content-Length``, chunked only for
HTTP/1.1, else the body runs to the close), and the connection must close exactly
when HTTP/1.1 says it must (RFC 9112 section 9.3) and serve the next request otherwise.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from unittest import mock

import pytest
import uvicorn
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.server import ServerState

from bastion.config.gateway import GatewayConfig
from bastion.gateway.serving import ServerLimits, uvicorn_options
from tests.gateway.test_transport import RecordingTransport

LIMITS = ServerLimits.from_config(GatewayConfig(), "https://errors.example/")


def fallback_options() -> dict[str, Any]:
    """What the servers run when the fence refuses the installed uvicorn."""
    with mock.patch.dict(sys.modules, {"bastion.gateway.transport": None}):
        return uvicorn_options(LIMITS, coalesce=True)


PATHS = {
    "own": uvicorn_options(LIMITS, own=True)["http"],
    "fenced": uvicorn_options(LIMITS, coalesce=True)["http"],
    "fallback": fallback_options()["http"],
    "fallback-h11": "h11",
}


class Connection(RecordingTransport):
    """The client's side of a connection: what the server wrote, and whether it closed."""

    def __init__(self) -> None:
        super().__init__()
        #: Whether it was closed once the first response was in.
        self.closed_after_first = False

    @property
    def received(self) -> bytes:
        return b"".join(self.writes)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def set_protocol(self, protocol: Any) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        # The server's half of a close (the gateway's own server then lingers, reading).
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)


def request_bytes(method: str, version: str, connection: str | None) -> bytes:
    lines = [f"{method} /things?x=1 HTTP/{version}", "Host: api.example"]
    if connection is not None:
        lines.append(f"Connection: {connection}")
    body = b""
    if method == "POST":
        body = b"hello"
        lines.append("Content-Length: 5")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def responder(status: int, with_length: bool, chunks: list[bytes]) -> Any:
    """An ASGI app that reads the request body, then answers with ``chunks``."""
    body = b"".join(chunks)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        headers = [(b"content-type", b"text/plain")]
        if with_length:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for i, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": i < len(chunks) - 1})

    return app


def read_response(data: bytes, method: str, closed: bool) -> tuple[int, dict[bytes, bytes], bytes, bytes]:
    """One response from the front of ``data``: status, headers, body (de-chunked), what follows."""
    head, separator, rest = data.partition(b"\r\n\r\n")
    assert separator, f"no whole head in {data!r}"
    status_line, *fields = head.split(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 ")
    status = int(status_line.split()[1])
    headers: dict[bytes, bytes] = {}
    for field in fields:
        name, _, value = field.partition(b":")
        assert name.lower() not in headers, f"{name!r} twice"
        headers[name.lower()] = value.strip()
    if method == "HEAD" or status in (204, 304):
        return status, headers, b"", rest
    if b"content-length" in headers:
        length = int(headers[b"content-length"])
        assert len(rest) >= length, "the body is shorter than its Content-Length"
        return status, headers, rest[:length], rest[length:]
    if headers.get(b"transfer-encoding") == b"chunked":
        body = b""
        while True:
            size_line, _, rest = rest.partition(b"\r\n")
            size = int(size_line, 16)
            chunk, rest = rest[:size], rest[size:]
            assert rest[:2] == b"\r\n", "a chunk without its CRLF"
            rest = rest[2:]
            if size == 0:
                return status, headers, body, rest
            body += chunk
    assert closed, "a body of unknown length on a connection left open"
    return status, headers, rest, b""


async def exchange(http: Any, app: Any, first: bytes, second: bytes | None) -> Connection:
    config = uvicorn.Config(
        app, http=http, lifespan="off", access_log=False, log_config=None, server_header=False
    )
    config.load()
    connection = Connection()
    protocol = config.http_protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    protocol.connection_made(connection)  # type: ignore[arg-type]
    try:
        for data in (first, second):
            if data is None or connection.closed:
                break
            sent = len(connection.received)
            protocol.data_received(data)
            for _ in range(50):  # the app runs, the writes of its turn are flushed
                await asyncio.sleep(0)
            assert len(connection.received) > sent, "no answer"
            if data is first:
                connection.closed_after_first = connection.closed
    finally:
        protocol.connection_lost(None)
    return connection


CONNECTION_HEADERS = st.sampled_from(
    [None, "close", "keep-alive", "Keep-Alive", "keep-alive, close", "Close"]
)


@settings(max_examples=150, deadline=None)
@given(
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    version=st.sampled_from(["1.1", "1.0"]),
    connection=CONNECTION_HEADERS,
    status=st.sampled_from([200, 201, 204, 304, 404]),
    with_length=st.booleans(),
    chunks=st.lists(st.sampled_from([b"", b"ab", b"hello"]), min_size=1, max_size=3),
)
@pytest.mark.parametrize("path", sorted(PATHS))
def test_connections_close_exactly_when_they_must_and_responses_are_framed_for_the_version(
    path: str,
    method: str,
    version: str,
    connection: str | None,
    status: int,
    with_length: bool,
    chunks: list[bytes],
) -> None:
    if status in (204, 304):
        chunks, with_length = [b""], False
    body = b"".join(chunks)
    first = request_bytes(method, version, connection)
    second = request_bytes("GET", "1.1", None)
    result = asyncio.run(exchange(PATHS[path], responder(status, with_length, chunks), first, second))

    tokens = {t.strip().lower() for t in (connection or "").split(",")}
    got_status, headers, got_body, rest = read_response(result.received, method, result.closed_after_first)
    assert got_status == status
    if method != "HEAD" and status not in (204, 304):
        assert got_body == body
        if version == "1.1":
            assert b"content-length" in headers or headers.get(b"transfer-encoding") == b"chunked"
        elif path != "fallback":
            # RFC 9112 section 6.1: no Transfer-Encoding in a response to HTTP/1.0. (uvicorn's own
            # httptools protocol sends it chunked all the same: the fallback's known deviation.)
            assert b"transfer-encoding" not in headers
    # Persistent: HTTP/1.1 unless the client said close; HTTP/1.0 only when both said keep-alive.
    said_keep_alive = b"keep-alive" in headers.get(b"connection", b"").lower()
    persistent = "close" not in tokens and (version == "1.1" or ("keep-alive" in tokens and said_keep_alive))
    if persistent:
        # The connection stayed open and served the next request, whole.
        assert not result.closed_after_first
        _, _, second_body, after = read_response(rest, "GET", result.closed)
        assert (second_body, after) == (body if status not in (204, 304) else b"", b"")
    else:
        assert result.closed_after_first
        assert rest == b"", "an answer to a request after the close"
        if version == "1.1":
            assert b"close" in headers.get(b"connection", b"").lower()
