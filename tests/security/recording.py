"""A recording HTTP upstream and raw-socket requests, for tests that send what clients would tidy up."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.gateway.conftest import Server, start_gateway


class _Recording(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: list[tuple[str, str]]

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.command, self.path))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("content-type", "text/plain")
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    do_GET = do_POST = do_PUT = do_DELETE = do_OPTIONS = do_TRACE = _answer

    def log_message(self, format: str, *args: Any) -> None:
        return


class RecordingUpstream(ThreadingHTTPServer):
    """An HTTP server that records each request's method and target as received."""

    daemon_threads = True

    def __init__(self, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Recording)
        self.seen: list[tuple[str, str]] = []
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def raw_request(port: int, head: str, body: bytes = b"") -> tuple[int, bytes]:
    """Send ``head`` (request line and headers, without the blank line) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        extra = f"Content-Length: {len(body)}\r\n" if body else ""
        sock.sendall(f"{head}\r\nHost: 127.0.0.1:{port}\r\n{extra}Connection: close\r\n\r\n".encode() + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    status = int(answer.split(b" ", 2)[1])
    return status, answer


@contextmanager
def recorded_gateway(workdir: Path, config: dict[str, Any]) -> Iterator[Server]:
    """A ``bastion gateway`` process with ``config``, in front of a :class:`RecordingUpstream`
    (in its ``extra["recording"]``)."""
    upstream = RecordingUpstream()
    try:
        server = start_gateway(workdir, {**config, "upstream": upstream.url})
        server.extra["recording"] = upstream
        try:
            yield server
        finally:
            server.stop()
    finally:
        upstream.stop()
