"""Hostile HTTP servers for the probe's limits: raw sockets on a free loopback port, in threads.

Each connection reads the request head, then runs one behaviour: stream a body
forever, drip a response one byte at a time, or answer with terminal control
sequences in the reason phrase, a header and the body. Every loop ends when the
client hangs up, when the server stops, or after ``LIFETIME`` seconds.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LIFETIME = 60.0
#: What a hostile server puts in its reason phrase, a header and its body.
CONTROLS = "\x1b]0;pwned\x07\x1b[2J"

Behaviour = Callable[[socket.socket, threading.Event], None]


def stream_forever(conn: socket.socket, stop: threading.Event) -> None:
    """A 200 whose body never ends (no Content-Length, no chunk end)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
    chunk = b"[" + b"0," * 32768
    ends = time.monotonic() + LIFETIME
    while not stop.is_set() and time.monotonic() < ends:
        conn.sendall(chunk)


def drip(conn: socket.socket, stop: threading.Event) -> None:
    """A response whose status line and headers arrive one byte every 0.2 s, and never end."""
    head = b"HTTP/1.1 200 OK\r\nX-Slow: " + b"z" * 1000
    ends = time.monotonic() + LIFETIME
    for byte in head:
        if stop.wait(0.2) or time.monotonic() > ends:
            return
        conn.sendall(bytes([byte]))


def controls(conn: socket.socket, stop: threading.Event) -> None:
    """A 500 with terminal control sequences in the reason phrase, a header value and the body."""
    body = f"Internal failure {CONTROLS} at /srv/app.py line 3".encode()
    conn.sendall(
        f"HTTP/1.1 500 Oops {CONTROLS}\r\n"
        f"Content-Type: text/plain{CONTROLS}\r\n"
        f"X-Request-ID: {CONTROLS}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def _serve(conn: socket.socket, behaviour: Behaviour, stop: threading.Event) -> None:
    with conn:
        conn.settimeout(LIFETIME)
        try:
            head = b""
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            behaviour(conn, stop)
        except OSError:  # the probe hung up: the point of these servers
            return


@contextmanager
def hostile_server(behaviour: Behaviour) -> Iterator[str]:
    """Serve ``behaviour`` on a free loopback port; yields the base URL."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.settimeout(0.1)
    stop = threading.Event()
    workers: list[threading.Thread] = []

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            worker = threading.Thread(target=_serve, args=(conn, behaviour, stop), daemon=True)
            worker.start()
            workers.append(worker)

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(timeout=5)
        listener.close()
        for worker in workers:
            worker.join(timeout=5)
