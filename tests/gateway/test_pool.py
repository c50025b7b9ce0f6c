"""The upstream pool (:mod:`bastion.gateway.pool`) on real loopback sockets.

Well-behaved answers come from an aiohttp.web upstream in this process; hostile ones
from a raw ``asyncio`` server that writes hand-made bytes. Every wait is bounded,
and every test ends with the pool closed and no connection of its left open.
"""

from __future__ import annotations

import asyncio
import itertools
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from bastion.config.gateway import GatewayConfig
from bastion.gateway.pool import (
    MAX_HEADERS,
    Connection,
    PooledResponse,
    StaleConnection,
    UpstreamBadResponse,
    UpstreamConnectError,
    UpstreamConnectTimeout,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamPool,
    UpstreamReadTimeout,
)
from bastion.gateway.server import build_gateway
from bastion.gateway.upstream import READ_BUFSIZE
from tests.conftest import free_port
from tests.gateway.conftest import Server
from tests.support import LogCapture

WAIT = 5  # seconds: the bound of every wait on the other side


@asynccontextmanager
async def pool_of(**settings: Any) -> AsyncIterator[UpstreamPool]:
    """An open pool; on the way out it is closed and must have left no connection open."""
    pool = UpstreamPool(GatewayConfig(**settings))
    await pool.start()
    try:
        yield pool
    finally:
        await pool.close()
        assert pool.open_connections == 0
        assert pool._count == 0


async def read_all(response: Any) -> bytes:
    chunks = []
    try:
        while True:
            chunk = await asyncio.wait_for(response.content.readany(), WAIT)
            if not chunk:
                break
            chunks.append(chunk)
        assert response.content.at_eof()
        return b"".join(chunks)
    finally:
        response.release()


async def until(condition: Callable[[], bool], seconds: float = WAIT) -> None:
    """Wait (bounded) until ``condition()`` holds."""
    async with asyncio.timeout(seconds):
        while not condition():
            await asyncio.sleep(0.005)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, "Raw"], Awaitable[None]]


class Raw:
    """A loopback server whose ``handler`` writes whatever bytes a test wants; records what it got."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.server: asyncio.Server | None = None
        self.url = URL()
        self.tasks: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.url = URL(f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            await self.handler(reader, writer, self)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    async def head(self, reader: asyncio.StreamReader) -> bytes:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
        self.heads.append(head)
        return head


def answering(*responses: bytes, close: bool = False) -> Handler:
    """A handler that reads a request head, and writes the next of ``responses`` for each."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        for response in responses:
            head = await raw.head(reader)
            length = content_length(head)
            if length:
                await reader.readexactly(length)
            writer.write(response)
            await writer.drain()
        if close:
            return
        await reader.read()  # until the pool closes its side

    return handler


def content_length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# -- the request on the wire ---------------------------------------------------------------


async def test_requests_go_out_with_only_host_and_framing_added() -> None:
    async with Raw(answering(*[OK] * 7)) as raw, pool_of() as pool:
        headers = [("Accept", "*/*"), ("X-Trace", "one"), ("X-Trace", "two"), ("Content-Length", "99")]
        url = URL(f"{raw.url}/items/42?x=1&y=%20z", encoded=True)
        for method, data in [("GET", None), ("POST", b"body"), ("delete", None), ("OPTIONS", None)]:
            assert await read_all(await pool.send(method, url, headers[:3], data)) == b"ok"
        assert await read_all(await pool.send("PUT", url, headers, b"xyz")) == b"ok"
        assert await read_all(await pool.send("PATCH", url, headers[:3], None)) == b"ok"
        # A length given with no body is not believed: nothing follows the head.
        assert await read_all(await pool.send("GET", url, [("Content-Length", "7")], None)) == b"ok"
    host = f"Host: 127.0.0.1:{raw.url.port}\r\n"
    rest = "Accept: */*\r\nX-Trace: one\r\nX-Trace: two\r\n"
    target = "/items/42?x=1&y=%20z"
    assert [head.decode() for head in raw.heads] == [
        f"GET {target} HTTP/1.1\r\n{host}{rest}\r\n",
        f"POST {target} HTTP/1.1\r\n{host}{rest}Content-Length: 4\r\n\r\n",
        # aiohttp 3.14 sends Content-Length: 0 for a DELETE without a body too.
        f"DELETE {target} HTTP/1.1\r\n{host}{rest}Content-Length: 0\r\n\r\n",
        f"OPTIONS {target} HTTP/1.1\r\n{host}{rest}\r\n",
        f"PUT {target} HTTP/1.1\r\n{host}{rest}Content-Length: 3\r\n\r\n",
        f"PATCH {target} HTTP/1.1\r\n{host}{rest}Content-Length: 0\r\n\r\n",
        f"GET {target} HTTP/1.1\r\n{host}Content-Length: 0\r\n\r\n",
    ]
    assert raw.connections == 1  # one connection served them all, one after another


async def test_preserve_host_sends_the_given_host_only() -> None:
    async with Raw(answering(OK)) as raw, pool_of(preserve_host=True) as pool:
        headers = [("Accept", "*/*"), ("Host", "api.example.com")]
        assert await read_all(await pool.send("GET", raw.url.with_path("/"), headers, None)) == b"ok"
    assert raw.heads == [b"GET / HTTP/1.1\r\nAccept: */*\r\nHost: api.example.com\r\n\r\n"]


@pytest.mark.parametrize(
    "header",
    [("X-A", "a\r\nX-Injected: 1"), ("X-A", "a\nb"), ("X-A", "a\rb"), ("X-A", "a\0b"), ("X-A\r\nB", "v")],
)
async def test_a_header_with_cr_lf_or_nul_is_refused_before_sending(header: tuple[str, str]) -> None:
    async with Raw(answering(OK)) as raw, pool_of() as pool:
        with pytest.raises(UpstreamError, match="CR, LF, NUL"):
            await pool.send("GET", raw.url.with_path("/"), [header], None)
        assert pool.open_connections == 0
    assert raw.connections == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [("GE T", "/"), ("GET", "/a b"), ("GET\r\nX: y", "/"), ("GÉT", "/"), ("M-SEARCH", None)],
)
async def test_a_method_or_target_that_would_split_the_request_line_is_refused(
    method: str, path: str | None
) -> None:
    async with Raw(answering(OK)) as raw, pool_of() as pool:
        url = URL(f"{raw.url}{path or '/'}", encoded=True)
        if path is None:  # a token with a dash is a method like any other
            assert await read_all(await pool.send(method, url, [], None)) == b"ok"
            return
        with pytest.raises(UpstreamError, match="CR, LF, NUL or a space"):
            await pool.send(method, url, [], None)
    assert raw.connections == 0


# -- well-behaved answers (aiohttp.web) ------------------------------------------------------


@pytest.fixture
async def web_upstream() -> AsyncIterator[URL]:
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello", headers={"X-Case": "Kept"})

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=body, headers={"X-Method": request.method})

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.enable_chunked_encoding()
        await response.prepare(request)
        for i in range(5):
            await response.write(b"%d" % i * 1000)
        await response.write_eof()
        return response

    async def status(request: web.Request) -> web.Response:
        return web.Response(status=int(request.match_info["code"]), headers={"ETag": '"1"'})

    app = web.Application()
    app.router.add_get("/text", text)
    app.router.add_route("*", "/echo", echo)
    app.router.add_get("/chunked", chunked)
    app.router.add_get("/status/{code}", status)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    yield URL(f"http://127.0.0.1:{port}")
    await runner.cleanup()


async def test_get_post_head_chunked_and_bodiless_answers(web_upstream: URL) -> None:
    async with pool_of() as pool:
        response = await pool.send("GET", web_upstream / "text", [], None)
        assert response.status == 200
        assert (b"X-Case", b"Kept") in response.raw_headers
        assert await read_all(response) == b"hello"

        response = await pool.send("POST", web_upstream / "echo", [], b"x" * 100_000)
        assert (b"X-Method", b"POST") in response.raw_headers
        assert await read_all(response) == b"x" * 100_000

        response = await asyncio.wait_for(pool.send("HEAD", web_upstream / "text", [], None), WAIT)
        assert (b"Content-Length", b"5") in response.raw_headers
        assert await read_all(response) == b""

        response = await pool.send("GET", web_upstream / "chunked", [], None)
        assert await read_all(response) == b"".join(b"%d" % i * 1000 for i in range(5))

        for code in (204, 304):
            response = await asyncio.wait_for(
                pool.send("GET", web_upstream / f"status/{code}", [], None), WAIT
            )
            assert response.status == code
            assert await read_all(response) == b""
        assert pool.open_connections == 1  # every answer left the connection reusable


async def test_many_concurrent_requests_of_every_kind_each_get_their_own_answer(web_upstream: URL) -> None:
    async def client(i: int) -> None:
        for j in range(15):
            kind = (i + j) % 4
            if kind == 0:
                body = bytes([i % 256]) * (i * 997 + j * 13)
                response = await pool.send("POST", web_upstream / "echo", [], body)
                assert await read_all(response) == body
            elif kind == 1:
                response = await pool.send("PUT", web_upstream / "echo", [], chunks_of(b"%d-" % i, b"%d" % j))
                assert await read_all(response) == b"%d-%d" % (i, j)
            elif kind == 2:
                response = await pool.send("HEAD", web_upstream / "text", [], None)
                assert await read_all(response) == b""
            else:
                response = await pool.send("GET", web_upstream / "chunked", [], None)
                assert await read_all(response) == b"".join(b"%d" % k * 1000 for k in range(5))

    async with pool_of(pool_size=8) as pool:
        await asyncio.wait_for(asyncio.gather(*(client(i) for i in range(48))), 60)
        assert pool.open_connections <= 8


async def test_reachable_says_whether_the_upstream_accepts_connections() -> None:
    async with Raw(answering()) as raw:
        pool = UpstreamPool(GatewayConfig())
        assert not await pool.reachable(raw.url)  # not open yet
        async with pool_of() as pool:
            assert await pool.reachable(raw.url)
            assert not await pool.reachable(URL(f"http://127.0.0.1:{free_port()}/"))


async def test_an_answer_delimited_by_the_close_ends_there_and_is_not_pooled() -> None:
    eof = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of this until the end"
    async with Raw(answering(eof, close=True)) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await read_all(response) == b"all of this until the end"
        await until(lambda: pool.open_connections == 0)
        response = await pool.send("GET", raw.url, [], None)
        assert await read_all(response) == b"all of this until the end"
    assert raw.connections == 2


async def test_interim_answers_are_skipped() -> None:
    interim = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + OK
    async with Raw(answering(interim)) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert response.status == 200
        assert response.raw_headers == [(b"Content-Length", b"2")]
        assert await read_all(response) == b"ok"


# -- the pool ------------------------------------------------------------------------------


def held(release: asyncio.Event) -> Handler:
    """Every request waits for ``release`` before its answer."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        while True:
            await raw.head(reader)
            await asyncio.wait_for(release.wait(), WAIT)
            writer.write(OK)
            await writer.drain()

    return handler


async def test_pool_size_bounds_the_connections_and_waiters_get_them_in_turn() -> None:
    release = asyncio.Event()
    async with Raw(held(release)) as raw, pool_of(pool_size=2) as pool:
        url = raw.url.with_path("/")
        sends = [asyncio.ensure_future(pool.send("GET", url, [], None)) for _ in range(6)]
        await until(lambda: len(raw.heads) == 2)
        assert len(pool._waiters) == 4
        release.set()
        for sending in sends:
            assert await read_all(await asyncio.wait_for(sending, WAIT)) == b"ok"
        assert pool.open_connections == 2
    assert raw.connections == 2
    assert len(raw.heads) == 6


async def test_a_sender_waiting_for_a_free_connection_times_out_as_a_connect_timeout() -> None:
    release = asyncio.Event()
    async with Raw(held(release)) as raw, pool_of(pool_size=1, connect_timeout="200ms") as pool:
        first = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        await until(lambda: len(raw.heads) == 1)
        with pytest.raises(UpstreamConnectTimeout):
            await asyncio.wait_for(pool.send("GET", raw.url, [], None), WAIT)
        assert not pool._waiters
        release.set()
        assert await read_all(await first) == b"ok"
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
    assert raw.connections == 1


async def test_a_connection_closed_while_handed_to_a_waiter_is_not_written_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    release = asyncio.Event()
    async with Raw(held(release)) as raw, pool_of(pool_size=1) as pool:
        put = pool._put

        def closing_then_put(conn: Connection) -> None:
            conn.close()  # asyncio reports it lost on the next turn of the loop
            put(conn)

        monkeypatch.setattr(pool, "_put", closing_then_put)
        first = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        second = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        await until(lambda: len(raw.heads) == 1 and len(pool._waiters) == 1)
        release.set()
        assert await read_all(await asyncio.wait_for(first, WAIT)) == b"ok"
        # The GET goes on a new connection rather than waiting on the closed one.
        assert await read_all(await asyncio.wait_for(second, WAIT)) == b"ok"
    assert raw.connections == 2


async def test_idle_connections_are_closed_after_the_keepalive_timeout() -> None:
    async with Raw(answering(OK)) as raw, pool_of(keepalive_timeout="100ms") as pool:
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        assert pool.open_connections == 1
        await until(lambda: pool.open_connections == 0)
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
    assert raw.connections == 2


def dropping_second(reader_writer_raw: Any = None) -> Handler:
    """Answers a connection's first request; closes it when a second one comes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        head = await raw.head(reader)
        length = content_length(head)
        if length:
            await reader.readexactly(length)
        writer.write(OK)
        await writer.drain()
        await raw.head(reader)

    return handler


async def test_a_stale_pooled_connection_is_tried_again_for_idempotent_buffered_requests() -> None:
    async with Raw(dropping_second()) as raw, pool_of() as pool:
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        assert await read_all(await pool.send("PUT", raw.url, [], b"x")) == b"ok"
        with pytest.raises(StaleConnection):
            await pool.send("POST", raw.url, [], b"x")

        async def body() -> AsyncIterator[bytes]:
            yield b"x"

        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        with pytest.raises(UpstreamDisconnected):
            await pool.send("PUT", raw.url, [], body())
    # GET, GET (again), PUT (again), POST (once), GET, streamed PUT (once)
    assert raw.connections == 4
    assert len(raw.heads) == 8


async def test_a_fresh_connection_closed_before_answering_is_not_tried_again() -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)

    async with Raw(close_at_once) as raw, pool_of() as pool:
        with pytest.raises(UpstreamDisconnected) as raised:
            await pool.send("GET", raw.url, [], None)
        assert not isinstance(raised.value, StaleConnection)
    assert raw.connections == 1


async def test_nothing_listening_is_an_upstream_error() -> None:
    async with pool_of() as pool:
        with pytest.raises(UpstreamError) as raised:
            await pool.send("GET", URL(f"http://127.0.0.1:{free_port()}/"), [], None)
    assert isinstance(raised.value.__cause__, OSError)


@contextmanager
def full_backlog() -> Iterator[int]:
    """A port whose listener never accepts and whose backlog is full: connecting hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        try:
            for _ in range(16):
                filler = socket.socket()
                filler.settimeout(0.3)
                fillers.append(filler)
                try:
                    filler.connect(("127.0.0.1", port))
                except TimeoutError:
                    break
            else:
                pytest.fail("the backlog never filled")
            yield port
        finally:
            for filler in fillers:
                filler.close()


async def test_connecting_is_bounded_by_the_connect_timeout() -> None:
    with full_backlog() as port:
        async with pool_of(connect_timeout="200ms") as pool:
            with pytest.raises(UpstreamConnectTimeout):
                await asyncio.wait_for(pool.send("GET", URL(f"http://127.0.0.1:{port}/"), [], None), WAIT)
            assert pool._count == 0


# -- streamed request bodies ---------------------------------------------------------------


async def chunks_of(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def recording(raw_body: list[bytes]) -> Handler:
    """Reads a head and then the body bytes until the chunked terminator or the declared length."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        while True:
            head = await raw.head(reader)
            length = content_length(head)
            if length:
                raw_body.append(await asyncio.wait_for(reader.readexactly(length), WAIT))
            else:
                raw_body.append(await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), WAIT))
            writer.write(OK)
            await writer.drain()

    return handler


async def test_a_streamed_body_goes_chunked_or_raw_with_its_length() -> None:
    got: list[bytes] = []
    async with Raw(recording(got)) as raw, pool_of() as pool:
        response = await pool.send("POST", raw.url, [], chunks_of(b"abc", b"", b"0123456789abcdef"))
        assert await read_all(response) == b"ok"
        response = await pool.send("POST", raw.url, [("Content-Length", "5")], chunks_of(b"ab", b"cde"))
        assert await read_all(response) == b"ok"
    assert got == [b"3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n", b"abcde"]
    assert b"Transfer-Encoding: chunked\r\n" in raw.heads[0]
    assert b"Content-Length: 5\r\n" in raw.heads[1]
    assert b"Transfer-Encoding" not in raw.heads[1]


@pytest.mark.parametrize("parts", [(b"ab", b"cdef"), (b"ab",)], ids=["longer", "shorter"])
async def test_a_streamed_body_of_another_length_than_declared_is_refused(parts: tuple[bytes, ...]) -> None:
    async with Raw(answering(OK)) as raw, pool_of() as pool:
        with pytest.raises(UpstreamError, match="Content-Length"):
            await asyncio.wait_for(
                pool.send("PUT", raw.url, [("Content-Length", "5")], chunks_of(*parts)), WAIT
            )
        await until(lambda: pool.open_connections == 0)


async def test_an_answer_before_the_body_is_sent_is_handed_back_and_the_connection_not_reused() -> None:
    never = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"first"
        await asyncio.wait_for(never.wait(), WAIT)
        yield b"never"

    async def early(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        head = await raw.head(reader)
        if head.startswith(b"POST"):  # answered at once, kept alive, the body never read
            writer.write(b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 3\r\n\r\nbig")
        else:
            writer.write(OK)
        await writer.drain()
        await reader.read()

    async with Raw(early) as raw, pool_of() as pool:
        response = await asyncio.wait_for(pool.send("POST", raw.url, [], slow_body()), WAIT)
        assert response.status == 413
        assert await read_all(response) == b"big"
        await until(lambda: pool.open_connections == 0)
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
    assert raw.connections == 2


async def test_a_streamed_body_waits_for_the_socket_to_drain() -> None:
    # The upstream reads nothing until the pool had to pause writing, then everything.
    got: list[bytes] = []
    paused = asyncio.Event()
    block = b"z" * 65_536
    count = 200  # 12.5 MiB, far beyond the socket buffers

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        await asyncio.wait_for(paused.wait(), WAIT)
        got.append(await asyncio.wait_for(reader.readexactly(len(block) * count), WAIT))
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async with Raw(handler) as raw, pool_of() as pool:
        produced = 0

        async def body() -> AsyncIterator[bytes]:
            nonlocal produced
            for _ in range(count):
                produced += 1
                yield block

        headers = [("Content-Length", str(len(block) * count))]
        sending = asyncio.ensure_future(pool.send("PUT", raw.url, headers, body()))
        await until(lambda: any(conn.write_paused for conn in pool._all))
        before = produced
        await asyncio.sleep(0.05)
        assert produced == before < count  # the body stopped while the socket was full
        paused.set()
        assert await read_all(await asyncio.wait_for(sending, WAIT)) == b"ok"
    assert got == [block * count]


# -- reading the answer --------------------------------------------------------------------


async def test_a_large_answer_is_not_all_buffered_while_nobody_reads() -> None:
    size = 16 * 1024 * 1024
    big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + bytes(range(256)) * (size // 256)
    async with Raw(answering(big)) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        conn = response._conn
        assert conn is not None
        await until(lambda: not conn.transport.is_reading())
        assert READ_BUFSIZE < response._size <= 2 * READ_BUFSIZE
        body = await read_all(response)
    assert len(body) == size
    assert body[:512] == bytes(range(256)) * 2


async def test_the_head_is_due_within_the_read_timeout_whatever_interim_answers_come() -> None:
    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        for _ in range(200):  # 10 s of early hints at most, bounded
            writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>\r\n\r\n")
            await writer.drain()
            await asyncio.sleep(0.05)

    async with Raw(flood) as raw, pool_of(read_timeout="300ms") as pool:
        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(UpstreamReadTimeout):
            await asyncio.wait_for(pool.send("GET", raw.url, [], None), WAIT)
        assert 0.3 <= loop.time() - started < WAIT
        await until(lambda: pool.open_connections == 0)


async def test_a_silence_between_body_chunks_is_a_read_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst")
        await writer.drain()
        await asyncio.wait_for(reader.read(), WAIT)

    async with Raw(stall) as raw, pool_of(read_timeout="200ms") as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await response.content.readany() == b"first"
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(response.content.readany(), WAIT)
        assert not isinstance(pytest, UpstreamConnectTimeout)
        response.release()
        await until(lambda: pool.open_connections == 0)


HOSTILE = {
    "length and chunked": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
    "two lengths": b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    "huge field": b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 17_000 + b"\r\nContent-Length: 0\r\n\r\n",
    "huge head": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 10_000) for i in range(40)),
    "too many fields": b"HTTP/1.1 200 OK\r\n" + b"X-A: b\r\n" * (MAX_HEADERS + 1) + b"\r\n",
    "garbage status line": b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    "status below 100": b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
    "NUL in a field": b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 0\r\n\r\n",
    "bare LF": b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    "obsolete line folding": b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n",
    "closed mid-head": b"HTTP/1.1 200 OK\r\nContent-Le",
}


@pytest.mark.parametrize("answer", list(HOSTILE.values()), ids=list(HOSTILE))
async def test_a_malformed_or_outsized_head_is_an_upstream_error(answer: bytes) -> None:
    async with Raw(answering(answer, close=True)) as raw, pool_of() as pool:
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(pool.send("GET", raw.url, [], None), WAIT)
        await until(lambda: pool.open_connections == 0)


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n",
    ],
    ids=["length", "chunked"],
)
async def test_a_body_cut_short_is_an_upstream_error_after_what_came(answer: bytes) -> None:
    async with Raw(answering(answer, close=True)) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await asyncio.wait_for(response.content.readany(), WAIT) == b"half"
        with pytest.raises(UpstreamDisconnected):
            await asyncio.wait_for(response.content.readany(), WAIT)
        assert not response.content.at_eof()
        response.release()


async def test_a_bad_chunk_size_is_an_upstream_error_after_what_came() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\nzz\r\nabc\r\n0\r\n\r\n"
    async with Raw(answering(answer)) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await asyncio.wait_for(response.content.readany(), WAIT) == b"half"
        with pytest.raises(UpstreamBadResponse, match="chunk size"):
            await asyncio.wait_for(response.content.readany(), WAIT)
        await until(lambda: pool.open_connections == 0)


async def test_bytes_nobody_asked_for_close_the_connection() -> None:
    # A HEAD answer that comes with a body; then an answer sent while the connection is idle.
    head_with_body = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"

    async def unsolicited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        writer.write(OK)
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(OK)
        await writer.drain()
        await reader.read()

    async with Raw(answering(head_with_body)) as raw, pool_of() as pool:
        response = await pool.send("HEAD", raw.url, [], None)
        assert await read_all(response) == b""
        await until(lambda: pool.open_connections == 0)
    async with Raw(unsolicited) as raw, pool_of() as pool:
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        await until(lambda: pool.open_connections == 0)
    # Garbage right behind a complete answer, in the same write.
    async with Raw(answering(OK + b"GARBAGE\r\n\r\n", OK)) as raw, pool_of() as pool:
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
        await until(lambda: pool.open_connections == 0)
        assert await read_all(await pool.send("GET", raw.url, [], None)) == b"ok"
    assert raw.connections == 2


# -- cancellation --------------------------------------------------------------------------


async def test_cancelled_sends_and_reads_leave_no_connection_open() -> None:
    release = asyncio.Event()

    async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await writer.drain()
        await asyncio.wait_for(reader.read(), WAIT)

    async with Raw(held(release)) as raw, pool_of(pool_size=1) as pool:
        sending = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        waiting = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        await until(lambda: len(raw.heads) == 1 and len(pool._waiters) == 1)
        waiting.cancel()
        sending.cancel()
        await asyncio.gather(sending, waiting, return_exceptions=True)
        await until(lambda: pool.open_connections == 0)
        assert pool._count == 0 and not pool._waiters
    async with Raw(partial) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await response.content.readany() == b"half"
        reading = asyncio.ensure_future(response.content.readany())
        await asyncio.sleep(0)
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        await until(lambda: pool.open_connections == 0)
        with pytest.raises(UpstreamError):
            await response.content.readany()


async def test_closing_a_response_ends_a_pending_read_and_the_connection() -> None:
    async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: Raw) -> None:
        await raw.head(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nhalf\r\n")
        await writer.drain()
        await asyncio.wait_for(reader.read(), WAIT)

    async with Raw(partial) as raw, pool_of() as pool:
        response = await pool.send("GET", raw.url, [], None)
        assert await response.content.readany() == b"half"
        reading = asyncio.ensure_future(response.content.readany())
        await asyncio.sleep(0)
        response.close()
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(reading, WAIT)
        await until(lambda: pool.open_connections == 0)


async def test_closing_the_pool_closes_connections_in_use() -> None:
    release = asyncio.Event()
    async with Raw(held(release)) as raw:
        pool = UpstreamPool(GatewayConfig())
        await pool.start()
        sending = asyncio.ensure_future(pool.send("GET", raw.url, [], None))
        await until(lambda: len(raw.heads) == 1)
        await pool.close()
        with pytest.raises(UpstreamError):
            await asyncio.wait_for(sending, WAIT)
        assert pool.open_connections == 0 and pool.closed


# -- any split of the bytes ----------------------------------------------------------------


class _Transport(asyncio.Transport):
    """What the protocol writes to, in memory (the split test drives the protocol itself)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.reading = True
        self.closing = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def abort(self) -> None:
        self.closing = True


RESPONSES = [
    b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nX-Multi: 1\r\n"
    b"x-multi: 2\r\nContent-Length: 11\r\n\r\nhello world",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n\r\n"
    b"5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nTrailer: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world",  # until the close
]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(which=st.sampled_from([0, 1, 2]), cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=12))
def test_any_split_of_the_bytes_gives_the_same_response(which: int, cuts: list[int]) -> None:
    data = RESPONSES[which]
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    pieces = [data[a:b] for a, b in itertools.pairwise(points) if b > a]

    async def run() -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
        pool = UpstreamPool(GatewayConfig())
        pool._loop = asyncio.get_running_loop()
        conn = Connection(pool, pool._origin)
        conn.connection_made(_Transport())
        response = PooledResponse(pool, conn, head_only=False, reused=False)
        conn.response = response
        response.body_sent()
        for piece in pieces:
            conn.data_received(piece)
        if which == 2:
            response.connection_lost(None)  # the upstream closes: that ends the body
        await response.head()
        body = b""
        while chunk := await response.readany():
            body += chunk
        return response.status, list(response.raw_headers), body, response.at_eof()

    status, headers, body, eof = asyncio.run(run())
    if which == 0:
        assert (status, body) == (201, b"hello world")
        assert headers == [(b"X-Multi", b"1"), (b"x-multi", b"2"), (b"Content-Length", b"11")]
    elif which == 1:
        assert (status, body) == (200, b"hello world")
        assert headers == [(b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain")]
    else:
        assert (status, headers, body) == (200, [(b"Content-Type", b"text/plain")], b"hello world")
    assert eof


# -- the proxy over the pool ---------------------------------------------------------------


@asynccontextmanager
async def proxied(upstream_url: str, **gateway: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The whole gateway (guards and proxy) over an :class:`UpstreamPool`, called in process."""
    pool = UpstreamPool(GatewayConfig(**gateway))
    settings: dict[str, Any] = {"upstream": upstream_url, "store": "memory://", "gateway": gateway}
    app = build_gateway(settings, env={}, log_stream=LogCapture(), transport=pool)
    assert app.proxy.transport is pool
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as http:
            yield http
    finally:
        await app.bastion.shutdown()
        await pool.close()
        assert pool.open_connections == 0


async def test_the_proxy_relays_status_headers_and_bodies_over_the_pool(upstream: Server) -> None:
    async with proxied(upstream.base) as http:
        response = await http.get("/echo/a%3Ab?x=1", headers=[("X-B", "1"), ("X-B", "2")])
        assert response.status_code == 200
        echo = response.json()
        assert echo["raw_path"] == "/echo/a%3Ab"
        assert echo["query"] == "x=1"
        assert echo["headers"][0] == ["host", f"127.0.0.1:{upstream.port}"]
        assert [v for k, v in echo["headers"] if k == "x-b"] == ["1", "2"]
        assert [v for k, v in echo["headers"] if k == "user-agent"] == [http.headers["user-agent"]]

        async def upload() -> AsyncIterator[bytes]:
            for i in range(8):
                yield bytes([65 + i]) * 50_000

        response = await http.post("/upload", content=upload())
        assert response.status_code == 200
        assert response.json()["body_size"] == 400_000

        response = await http.get("/download", params={"mb": "3"})
        assert response.status_code == 200
        assert response.content == b"x" * (3 * 1024 * 1024)

        response = await http.get("/html-error")
        assert response.status_code == 500
        assert response.headers["content-type"] == "application/problem+json"


async def test_the_proxy_answers_502_when_the_upstream_is_down() -> None:
    async with proxied(f"http://127.0.0.1:{free_port()}") as http:
        response = await http.get("/anything")
    assert response.status_code == 502
    assert response.json()["code"] == "UPSTREAM_UNAVAILABLE"


async def test_the_proxy_answers_504_on_read_and_connect_timeouts(upstream: Server) -> None:
    async with proxied(upstream.base, read_timeout="300ms") as http:
        response = await http.get("/slow", params={"seconds": "3"})
    assert response.status_code == 504
    assert "300ms" in response.json()["detail"]
    with full_backlog() as port:
        async with proxied(f"http://127.0.0.1:{port}", connect_timeout="200ms") as http:
            response = await http.get("/anything")
    assert response.status_code == 504
    assert "200ms" in response.json()["detail"]


# -- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl, bounded), and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=up"),
            *("-keyout", str(key), "-out", str(cert), "-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


@asynccontextmanager
async def tls_server(cert: Path, key: Path) -> AsyncIterator[URL]:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    raw = Raw(answering(OK, OK))
    raw.server = await asyncio.start_server(raw._serve, "127.0.0.1", 0, ssl=context)
    try:
        yield URL(f"https://127.0.0.1:{raw.server.sockets[0].getsockname()[1]}/")
    finally:
        await raw.__aexit__()


async def test_https_upstreams_are_verified_and_kept_alive(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    async with tls_server(*certificate) as url:
        async with pool_of() as pool:
            with pytest.raises(UpstreamConnectError) as raised:
                await asyncio.wait_for(pool.send("GET", url, [], None), WAIT)
            assert isinstance(raised.value.__cause__, ssl.SSLCertVerificationError)
        # The certificate trusted (OpenSSL's default verify paths read SSL_CERT_FILE).
        monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
        async with pool_of() as pool:
            for _ in range(2):
                assert await read_all(await asyncio.wait_for(pool.send("GET", url, [], None), WAIT)) == b"ok"
            assert pool.open_connections == 1
