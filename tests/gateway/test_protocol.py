"""The gateway's own HTTP/1.1 server (``gateway.server: bastion``), byte by byte, with hostile clients.

A real ``bastion gateway`` process in front of the Starlette upstream, spoken to on
raw sockets: pipelined requests, ``Expect: 100-continue``, requests that two
parsers could read two ways (each must be refused, and nothing of it must reach the
upstream as a request of its own), upgrades other than WebSocket. Then the
protocol in this process, over a recording transport, for what a process test
cannot reach: an app that fails, a response header that would split the response,
a client that stops reading.
"""

from __future__ import annotations

import asyncio
import http.client
import socket
from collections.abc import Iterator
from typing import Any, BinaryIO

import httpx
import orjson
import pytest
import uvicorn
from uvicorn.server import ServerState

from bastion.config.gateway import GatewayConfig
from bastion.gateway.serving import ServerLimits, uvicorn_options
from tests.gateway.conftest import Server, start_gateway
from tests.gateway.test_connections import Connection
from tests.gateway.test_server_limits import assert_problem, connect, exchange, read_until_closed

pytestmark = pytest.mark.e2e


class _Unclosed:
    """A buffered reader that a finished response cannot close: the next one reads on."""

    def __init__(self, reader: BinaryIO) -> None:
        self.reader = reader

    def __getattr__(self, name: str) -> Any:
        return getattr(self.reader, name)

    def close(self) -> None:
        pass


class _Shared:
    """Hands http.client one buffered reader for every response on a connection."""

    def __init__(self, reader: BinaryIO) -> None:
        self.reader = _Unclosed(reader)

    def makefile(self, mode: str) -> Any:
        return self.reader


def read_responses(sock: socket.socket, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """One response per method in ``methods``, read in order from ``sock``."""
    reader = sock.makefile("rb")
    out = []
    for method in methods:
        response = http.client.HTTPResponse(_Shared(reader), method=method)  # type: ignore[arg-type]
        response.begin()
        out.append((response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()))
    return out


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: gw", f"Content-Length: {len(body)}", *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


def echo_calls(server: Server) -> int:
    return int(httpx.get(server.base + "/count?name=echo", timeout=5).json()["count"])


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "rate_limits": {
            "rules": [{"name": "tight", "match": "POST /limited-upload", "key": "ip", "limit": "1/minute"}]
        },
        "gateway": {"server": "bastion"},
    }
    server = start_gateway(tmp_path_factory.mktemp("protocol"), config)
    yield server
    server.stop()


def test_pipelined_requests_are_answered_in_order(gateway: Server) -> None:
    requests = [post("/upload", b"x" * n) for n in (5, 0, 70_000, 1)]
    requests.insert(1, b"GET /count?name=pipelined HTTP/1.1\r\nHost: gw\r\n\r\n")
    with connect(gateway) as sock:
        sock.sendall(b"".join(requests))
        responses = read_responses(sock, ["POST", "GET", "POST", "POST", "POST"])
    assert [status for status, _, _ in responses] == [200] * 5
    sizes = [orjson.loads(body).get("body_size") for _, _, body in responses]
    assert sizes == [5, None, 0, 70_000, 1]


def test_a_flood_of_small_pipelined_requests_is_answered_whole_and_in_order(gateway: Server) -> None:
    count = 300
    with connect(gateway) as sock:
        sock.sendall(b"".join(post("/upload", b"y" * (i % 37)) for i in range(count)))
        responses = read_responses(sock, ["POST"] * count)
    assert [orjson.loads(body)["body_size"] for _, _, body in responses] == [i % 37 for i in range(count)]


def test_expect_100_continue_gets_a_continue_before_the_body_is_sent(gateway: Server) -> None:
    with connect(gateway) as sock:
        sock.sendall(
            post("/upload", b"", "Expect: 100-continue").replace(b"Content-Length: 0", b"Content-Length: 5")
        )
        interim = sock.recv(100)
        assert interim == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        [(status, _, body)] = read_responses(sock, ["POST"])
    assert status == 200 and orjson.loads(body)["body_size"] == 5


def test_a_refusal_before_the_body_gets_no_continue_and_closes_the_connection(gateway: Server) -> None:
    # The first takes the one request the rule allows; the second is refused before its body.
    assert httpx.post(gateway.base + "/limited-upload", content=b"a", timeout=5).status_code != 429
    head = post("/limited-upload", b"", "Expect: 100-continue").replace(
        b"Content-Length: 0", b"Content-Length: 5"
    )
    with connect(gateway) as sock:
        sock.sendall(head)
        reader = sock.makefile("rb")
        response = http.client.HTTPResponse(_Shared(reader), method="POST")  # type: ignore[arg-type]
        response.begin()
        assert response.status == 429
        response.read()
        # The body never sent must not be read as the next request: the connection is closed.
        assert reader.read() == b""


def test_a_refusal_while_the_body_is_still_coming_reaches_the_client_whole(gateway: Server) -> None:
    # The rule allows one request a minute: this one (or an earlier test's) takes it.
    httpx.post(gateway.base + "/limited-upload", content=b"a", timeout=5)
    # Refused on its head, while far more body is on its way than socket buffers hold: a
    # server that closed at once would reset the connection under the client's send (as
    # HTTP clients send the whole request before they read), and the 429 would be lost.
    with connect(gateway) as sock:
        sock.sendall(post("/limited-upload", b"z" * (16 << 20)))
        received = read_until_closed(sock)
    assert received.startswith(b"HTTP/1.1 429 ")
    assert orjson.loads(received.partition(b"\r\n\r\n")[2])["code"] == "RATE_LIMITED"


SMUGGLING = {
    "length and chunked": b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 4\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /upload HTTP/1.1\r\nHost: gw\r\n\r\n",
    "two lengths": b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\n"
    b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n\r\n",
    "chunked not last": b"POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
    b"0\r\n\r\n",
    "obsolete line folding": b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n"
    b"X-A: 1\r\n  folded\r\n\r\n",
    "space before the colon": b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length : 5\r\n\r\nhello",
    "bare line feeds": b"POST /upload HTTP/1.1\nHost: gw\nContent-Length: 0\n\n",
    "NUL in a value": b"POST /upload HTTP/1.1\r\nHost: gw\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "chunk size overflow": b"POST /upload HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"fffffffffffffffff1\r\nx\r\n0\r\n\r\n",
    "negative length": b"POST /upload HTTP/1.1\r\nHost: gw\r\nContent-Length: -1\r\n\r\n",
    "HTTP/2 preface": b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
}


@pytest.mark.parametrize("raw", list(SMUGGLING.values()), ids=list(SMUGGLING))
def test_a_request_two_parsers_could_read_two_ways_is_a_400_problem_and_reaches_nobody(
    gateway: Server, raw: bytes
) -> None:
    before = echo_calls(gateway)
    _, received = exchange(gateway, raw)
    assert_problem(received, 400, "BAD_REQUEST")
    assert received.count(b"HTTP/1.1 ") == 1, "a second answer: part of the request was read as another"
    assert echo_calls(gateway) == before


def test_an_upgrade_other_than_websocket_is_served_as_a_plain_request_then_closed(gateway: Server) -> None:
    raw = (
        b"GET /count?name=h2c HTTP/1.1\r\nHost: gw\r\n"
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n"
    )
    _, received = exchange(gateway, raw + b"GET /count?name=after HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.count(b"HTTP/1.1 ") == 1
    assert b"connection: close" in received.lower()


# -- in this process, over a recording transport ---------------------------------------------------

LIMITS = ServerLimits.from_config(GatewayConfig(), "https://errors.example/")


async def run(
    app: Any, data: bytes, *, pause: bool = False, turns: int = 50, read_size: int | None = None
) -> tuple[Connection, Any]:
    config = uvicorn.Config(
        app, http=uvicorn_options(LIMITS, own=True)["http"], lifespan="off", log_config=None
    )
    config.load()
    connection = Connection()
    protocol = config.http_protocol_class(  # type: ignore[call-arg]
        config=config, server_state=ServerState(), app_state={}, _loop=asyncio.get_running_loop()
    )
    protocol.connection_made(connection)  # type: ignore[arg-type]
    if pause:
        protocol.pause_writing()
    step = read_size or len(data) or 1
    for start in range(0, len(data), step):  # the reads the client's bytes arrive in
        protocol.data_received(data[start : start + step])
    for _ in range(turns):
        await asyncio.sleep(0)
    return connection, protocol


GET = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n"


async def scope_echo(scope: Any, receive: Any, send: Any) -> None:
    """Answers with what the app was told of the target."""
    seen = {k: scope[k] for k in ("method", "path", "query_string", "http_version")}
    seen["raw_path"] = scope["raw_path"].decode("latin-1")
    seen["query_string"] = seen["query_string"].decode("latin-1")
    body = orjson.dumps(seen)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"%d" % len(body))]}
    )
    await send({"type": "http.response.body", "body": body})


def answer(connection: Connection) -> tuple[int, bytes]:
    head, _, body = connection.received.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest.mark.parametrize(
    ("target", "path", "raw_path", "query"),
    [
        (b"/a%2Fb/%C3%A9?x=%26&y", "/a/b/\u00e9", "/a%2Fb/%C3%A9", "x=%26&y"),
        (b"http://evil.example/admin?q=1", "/admin", "http://evil.example/admin", "q=1"),
        (b"/a;b/..%2f/c", "/a;b/..//c", "/a;b/..%2f/c", ""),
    ],
)
@pytest.mark.parametrize("read_size", [None, 1, 7])
def test_the_app_is_told_the_target_as_received_whatever_reads_it_arrives_in(
    target: bytes, path: str, raw_path: str, query: str, read_size: int | None
) -> None:
    request = b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"
    connection, _ = asyncio.run(run(scope_echo, request, read_size=read_size, turns=80))
    status, body = answer(connection)
    assert status == 200
    seen = orjson.loads(body)
    assert (seen["path"], seen["raw_path"], seen["query_string"]) == (path, raw_path, query)


@pytest.mark.parametrize(
    "target",
    [b"/caf\xc3\xa9", b"/\xff", b"/a b", b"/a\x00b", b"/a\x7fb", b"/a?q=\xff", b"http://\xc3\xa9.example/a"],
)
def test_a_target_that_is_not_ascii_or_holds_controls_is_a_400_problem(target: bytes) -> None:
    connection, _ = asyncio.run(run(scope_echo, b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n"))
    status, body = answer(connection)
    assert status == 400 and orjson.loads(body)["code"] == "BAD_REQUEST"
    assert connection.closed


def test_an_app_that_fails_before_answering_gets_a_500_problem_and_the_connection_closes() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("a bug")

    connection, _ = asyncio.run(run(app, GET))
    head, _, body = connection.received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ") and b"connection: close" in head
    assert orjson.loads(body)["code"] == "INTERNAL_ERROR"
    assert b"a bug" not in connection.received and connection.closed


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"1\r\nset-cookie: evil=1"),
        (b"x-a\r\nset-cookie", b"evil"),
        (b"x a", b"1"),
        (b"", b"1"),
        (b"x", b"\x00"),
    ],
)
def test_a_header_that_would_split_the_response_is_never_written(header: tuple[bytes, bytes]) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [header]})
        await send({"type": "http.response.body", "body": b"ok"})

    connection, _ = asyncio.run(run(app, GET))
    assert b"evil" not in connection.received
    assert connection.received.startswith(b"HTTP/1.1 500 ") and connection.closed


def test_a_body_longer_than_its_content_length_is_cut_and_the_connection_closed() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok", "more_body": True})
        await send({"type": "http.response.body", "body": b"GET /smuggled HTTP/1.1\r\n\r\n"})

    connection, _ = asyncio.run(run(app, GET))
    assert connection.received.endswith(b"\r\n\r\nok") and connection.closed


def test_a_client_that_stops_reading_holds_the_app_at_its_next_write() -> None:
    written: list[int] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for i in range(5):
            await send({"type": "http.response.body", "body": b"z" * 65536, "more_body": True})
            written.append(i)
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> tuple[list[int], list[int], bool]:
        connection, protocol = await run(app, GET, pause=True)
        held = list(written)
        protocol.resume_writing()
        for _ in range(50):
            await asyncio.sleep(0)
        return held, list(written), connection.received.endswith(b"0\r\n\r\n")

    held, after, whole = asyncio.run(scenario())
    assert held == [] and after == [0, 1, 2, 3, 4]
    assert whole


def test_the_uvicorn_path_stays_selectable_and_serves_the_same(
    upstream: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = {"upstream": upstream.base, "store": "memory://", "gateway": {"server": "uvicorn"}}
    server = start_gateway(tmp_path_factory.mktemp("uvicorn-path"), config)
    try:
        got = httpx.get(server.base + "/count?name=uvicorn-path", timeout=5)
        posted = httpx.post(server.base + "/upload", content=b"hello", timeout=5)
        _, refused = exchange(server, SMUGGLING["length and chunked"])
    finally:
        server.stop()
    assert got.status_code == 200 and posted.json()["body_size"] == 5
    assert_problem(refused, 400, "BAD_REQUEST")
