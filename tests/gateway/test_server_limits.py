"""``bastion gateway``'s own limits on client connections, against a real process over raw sockets.

Head and body timeouts, head size and field caps (431), problems for the server's
own parse errors, the per-process connection ceiling, the open-file limit, and
JSON-only standard error. Timeouts are configured short (0.5 s) so that every wait
is brief and bounded; a server without the limit would hold the socket until the
test's own 5 s socket timeout.
"""

from __future__ import annotations

import select
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import yaml

from tests.conftest import free_port
from tests.gateway.conftest import Server, clean_env, start_gateway, start_server

pytestmark = pytest.mark.e2e

LIMIT_S = 0.5
#: How long a test waits for a cut-off that is due after LIMIT_S: generous for a loaded machine.
CUT_OFF_WITHIN_S = 3.0
SOCKET_TIMEOUT_S = 5.0


def connect(server: Server) -> socket.socket:
    """A raw connection to ``server`` with a bounded read timeout."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=SOCKET_TIMEOUT_S)
    sock.settimeout(SOCKET_TIMEOUT_S)
    return sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (``socket.timeout`` if it never does)."""
    received = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return received
        if not chunk:
            return received
        received += chunk


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length body: status, headers (lower-case names), body."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the connection closed after {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    while len(body) < int(headers.get("content-length", "0")):
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return int(status_line.split()[1]), headers, body


def exchange(server: Server, data: bytes) -> tuple[float, bytes]:
    """Send ``data``, read until the server closes; returns the seconds that took and the bytes."""
    with connect(server) as sock:
        started = time.monotonic()
        sock.sendall(data)
        received = read_until_closed(sock)
        return time.monotonic() - started, received


def assert_problem(received: bytes, status: int, code: str) -> dict[str, object]:
    """``received`` is one problem response with ``status`` and ``code`` that closes the connection."""
    head, _, body = received.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), received[:200]
    lowered = head.lower()
    assert b"content-type: application/problem+json" in lowered
    assert b"connection: close" in lowered
    problem = orjson.loads(body)
    assert problem["status"] == status
    assert problem["code"] == code
    return dict(problem)


@pytest.fixture(scope="module")
def gateway(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    limit = f"{round(LIMIT_S * 1000)}ms"
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "gateway": {"header_timeout": limit, "body_timeout": limit, "client_keepalive_timeout": limit},
    }
    server = start_gateway(tmp_path_factory.mktemp("limits"), config)
    yield server
    server.stop()


def test_a_head_that_never_ends_is_cut_off_with_a_408_problem(gateway: Server) -> None:
    elapsed, received = exchange(gateway, b"GET /count?name=slow HTTP/1.1\r\nHost: x\r\nX-Slow: 1\r\n")
    assert_problem(received, 408, "REQUEST_TIMEOUT")
    assert LIMIT_S * 0.8 <= elapsed < CUT_OFF_WITHIN_S


def test_the_whole_head_must_arrive_in_time_even_when_it_trickles(gateway: Server) -> None:
    # One header line every 0.1 s: never silent for long, but the head as a whole is late.
    with connect(gateway) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /count?name=trickle HTTP/1.1\r\nHost: x\r\n")
        try:
            for i in range(30):
                sock.sendall(f"X-Trickle-{i}: {i}\r\n".encode())
                # Stop once the answer is here (the server may read on and drop what follows).
                if select.select([sock], [], [], 0.1)[0]:
                    break
        except (BrokenPipeError, ConnectionResetError):
            pass
        elapsed = time.monotonic() - started
        received = read_until_closed(sock)
    assert_problem(received, 408, "REQUEST_TIMEOUT")
    assert elapsed < CUT_OFF_WITHIN_S


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(gateway: Server) -> None:
    elapsed, received = exchange(gateway, b"")
    assert received == b""
    assert elapsed < CUT_OFF_WITHIN_S


def test_a_body_that_stops_arriving_is_cut_off_with_a_408_problem(gateway: Server) -> None:
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
    elapsed, received = exchange(gateway, head + b"only ten b")
    assert_problem(received, 408, "REQUEST_TIMEOUT")
    assert elapsed < CUT_OFF_WITHIN_S


def test_a_slow_body_that_keeps_coming_is_not_cut_off(gateway: Server) -> None:
    # 12 chunks 0.1 s apart: longer in all than the body timeout, never silent that long.
    chunks = [b"x" * 10] * 12
    head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 120\r\n\r\n"
    with connect(gateway) as sock:
        sock.sendall(head)
        for chunk in chunks:
            time.sleep(0.1)
            sock.sendall(chunk)
        status, _, body = read_response(sock)
    assert status == 200
    assert orjson.loads(body)["body_size"] == 120


def test_an_idle_keep_alive_connection_is_closed_after_the_configured_time(gateway: Server) -> None:
    with connect(gateway) as sock:
        sock.sendall(b"GET /_bastion/health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _, _ = read_response(sock)
        assert status == 200
        started = time.monotonic()
        assert read_until_closed(sock) == b""
        assert time.monotonic() - started < CUT_OFF_WITHIN_S


def test_a_header_over_32_kib_is_a_431_problem(gateway: Server) -> None:
    # The filler is no hex digit: a trace id in the answer cannot be taken for an echo.
    head = b"GET /count?name=big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"q" * 33_000 + b"\r\n\r\n"
    _, received = exchange(gateway, head)
    problem = assert_problem(received, 431, "HEADERS_TOO_LARGE")
    assert problem["title"] == "Request header fields too large"
    assert b"qqqq" not in received  # nothing of the head is echoed


def test_a_header_value_that_never_ends_is_a_431_problem_not_a_buffer(gateway: Server) -> None:
    # No line end at all: the parser never reports the field, the byte count still stops it.
    with connect(gateway) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nX-Endless: ")
        try:
            for _ in range(64):
                sock.sendall(b"a" * 1024)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = read_until_closed(sock)
    assert_problem(received, 431, "HEADERS_TOO_LARGE")


def test_more_than_100_header_fields_is_a_431_problem_and_100_pass(gateway: Server) -> None:
    def head(count: int) -> bytes:
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(count - 1))
        return b"GET /count?name=fields HTTP/1.1\r\nHost: x\r\n" + fields + b"Connection: close\r\n\r\n"

    _, received = exchange(gateway, head(101))
    assert_problem(received, 431, "HEADERS_TOO_LARGE")
    _, received = exchange(gateway, head(99))  # Host makes 100
    assert received.startswith(b"HTTP/1.1 200 ")


def test_a_request_that_is_not_http_is_a_400_problem(gateway: Server) -> None:
    _, received = exchange(gateway, b"NOT AN HTTP REQUEST\r\n\r\n")
    assert_problem(received, 400, "BAD_REQUEST")


def test_every_line_the_gateway_writes_to_standard_error_is_json(gateway: Server) -> None:
    # uvicorn warns about a request it cannot parse; that line must be JSON too.
    exchange(gateway, b"\x00\x01 garbage\r\n\r\n")
    lines = gateway.stderr_path.read_bytes().splitlines()
    assert any(b"Invalid HTTP request" in line for line in lines)
    for line in lines:
        parsed = orjson.loads(line)  # raises on any plain-text line
        assert isinstance(parsed, dict) and "level" in parsed and "event" in parsed


@pytest.fixture(scope="module")
def crowded(upstream: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A gateway with room for 20 connections, started with a low soft open-file limit."""
    workdir = tmp_path_factory.mktemp("crowded")
    port = free_port()
    config_path = workdir / "gateway.yaml"
    config = {
        "upstream": upstream.base,
        "store": "memory://",
        "gateway": {"max_connections": 20, "client_keepalive_timeout": "30s"},
    }
    config_path.write_text(yaml.safe_dump(config))
    command = (
        f"ulimit -Sn 512 && exec {sys.executable} -m bastion gateway --config {config_path} --port {port}"
    )
    server = start_server(
        ["sh", "-c", command], port, workdir, ready_path="/_bastion/health", env=clean_env(), name="crowded"
    )
    yield server
    server.stop()


def open_files_limits(pid: int) -> tuple[str, str]:
    """The soft and hard 'Max open files' of a process."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return soft, hard
    raise AssertionError("no 'Max open files' line")


def test_the_soft_open_file_limit_is_raised_to_the_hard_limit(crowded: Server) -> None:
    soft, hard = open_files_limits(crowded.process.pid)
    assert soft == hard


def test_connections_over_the_ceiling_get_a_503_problem_and_are_closed(crowded: Server) -> None:
    held = []
    try:
        for _ in range(20):
            sock = connect(crowded)
            held.append(sock)
            # A full exchange, so that the server has surely accepted this connection.
            sock.sendall(b"GET /_bastion/health HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(sock)[0] == 200
        elapsed, received = exchange(crowded, b"")
        problem = assert_problem(received, 503, "TOO_MANY_CONNECTIONS")
        assert problem["title"] == "Too many connections"
        assert b"retry-after: 1" in received.lower()
        assert elapsed < CUT_OFF_WITHIN_S
    finally:
        for sock in held:
            sock.close()
    # Once they are gone, there is room again (the server notices the closes on its own time).
    deadline = time.monotonic() + 10
    while True:
        _, received = exchange(
            crowded, b"GET /_bastion/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        if received.startswith(b"HTTP/1.1 200 ") or time.monotonic() > deadline:
            break
    assert received.startswith(b"HTTP/1.1 200 ")
