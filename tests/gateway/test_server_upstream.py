"""Interim (1xx) responses from the upstream do not hold a request past ``read_timeout``.

The upstream here is a raw socket server that answers every request with interim
responses only (``103 Early Hints`` every 0.1 s, or one ``100 Continue``) and never
a final one, for at most 10 s. With ``read_timeout: 500ms`` the client must get
``504 UPSTREAM_TIMEOUT`` at about that time, not when the upstream gives up.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

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
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(UPSTREAM_GIVES_UP_S)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            hints = b"/hints" in head.split(b"\r\n", 1)[0]
            deadline = time.monotonic() + UPSTREAM_GIVES_UP_S
            try:
                if not hints:
                    conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
                while time.monotonic() < deadline and not self.stopping.is_set():
                    if hints:
                        conn.sendall(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
                    time.sleep(0.1)
            except OSError:
                return  # the gateway gave up on this request

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    upstream = InterimOnlyUpstream()
    config = {
        "upstream": f"http://127.0.0.1:{upstream.port}",
        "store": "memory://",
        "gateway": {"read_timeout": f"{round(READ_TIMEOUT_S * 1000)}ms"},
    }
    server = start_gateway(tmp_path_factory.mktemp("interim"), config)
    yield server
    server.stop()
    upstream.close()


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
