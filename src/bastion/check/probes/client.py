"""A small, bounded HTTP client for the probe: stdlib ``http.client``, safe to share across threads.

Every request goes to the one base URL the user gave, counts against the request
budget and the time budget, and has its own connection, so concurrent duplicates
really are concurrent. The server under probe is untrusted: a response body is
read up to ``max_response_bytes``, and a request that is not answered in full by
its deadline (its own timeout, never past the run's) has its socket shut down by
a timer, so a server that streams forever or drips a byte at a time cannot hold
the probe past ``--max-seconds``.
"""

from __future__ import annotations

import contextlib
import http.client
import socket
import threading
import time
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import orjson

USER_AGENT = "bastion-probe/0.1"
#: The default cap on the bytes read from one response body.
MAX_RESPONSE_BYTES = 1 << 20
#: Error responses are kept for the end-of-run checks with at most this much body.
KEPT_BODY_BYTES = 64 << 10
_READ_CHUNK = 64 << 10


class BudgetExhausted(Exception):
    """The probe spent its request or time budget."""


@dataclass(slots=True)
class Exchange:
    """One request and its response, as the report shows it."""

    method: str
    path: str
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    sent_headers: dict[str, str] = field(default_factory=dict)
    sent_body: bytes = b""
    #: Whether the body was cut at the response size cap.
    truncated: bool = False

    def header(self, name: str) -> str | None:
        """The first value of response header ``name`` (any case)."""
        lower = name.lower()
        for key, value in self.headers:
            if key.lower() == lower:
                return value
        return None

    @property
    def content_type(self) -> str:
        """The response media type without parameters, lower-case."""
        return (self.header("content-type") or "").split(";")[0].strip().lower()

    @property
    def text(self) -> str:
        """The body decoded leniently."""
        return self.body.decode("utf-8", errors="replace")

    def summary(self, limit: int = 300) -> str:
        """One line for the report: request, status and the start of the body."""
        body = self.text.replace("\n", "\\n")
        if len(body) > limit or self.truncated:
            body = body[:limit] + "..."
        return f"{self.method} {self.path} -> {self.status} {self.content_type or '-'} {body}"


class ProbeClient:
    """Sends requests to one base URL within a request and time budget."""

    def __init__(
        self,
        base_url: str,
        *,
        max_requests: int,
        max_seconds: float,
        timeout: float = 10.0,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{base_url!r} is not an http:// or https:// URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.prefix = parts.path.rstrip("/")
        self.max_requests = max_requests
        self.deadline = time.monotonic() + max_seconds
        self.timeout = timeout
        self.max_response_bytes = max_response_bytes
        self.sent = 0
        self.exhausted = False
        #: Error responses (4xx and 5xx but 429), bodies cut to ``KEPT_BODY_BYTES``, for the final checks.
        self.exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def remaining_seconds(self) -> float:
        """Seconds left in the time budget."""
        return self.deadline - time.monotonic()

    def _claim(self) -> None:
        with self._lock:
            if self.sent >= self.max_requests or time.monotonic() >= self.deadline:
                self.exhausted = True
                raise BudgetExhausted
            self.sent += 1

    def request(
        self,
        method: str,
        path: str,
        *,
        headers: dict[str, str] | None = None,
        body: bytes | None = None,
        json: Any = None,
        timeout: float | None = None,
    ) -> Exchange:
        """Send one request; ``path`` is relative to the base URL, ``timeout`` replaces the client's own."""
        self._claim()
        sent_headers = {"User-Agent": USER_AGENT, "Accept": "application/json, application/problem+json"}
        if json is not None:
            body = orjson.dumps(json)
            sent_headers["Content-Type"] = "application/json"
        sent_headers.update(headers or {})
        seconds = max(0.0, min(self.timeout if timeout is None else timeout, self.remaining_seconds()))
        factory = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = factory(self.host, self.port, timeout=max(0.05, seconds))
        cut = threading.Event()
        timer = threading.Timer(seconds, _cut_off, (conn, cut))
        timer.daemon = True
        timer.start()
        try:
            conn.request(method, self.prefix + path, body=body, headers=sent_headers)
            response = conn.getresponse()
            data, truncated = read_capped(response, self.max_response_bytes)
            exchange = Exchange(
                method,
                path,
                response.status,
                list(response.getheaders()),
                data,
                sent_headers,
                body or b"",
                # A body read until the server closes ends cleanly when the timer cuts it.
                truncated or cut.is_set(),
            )
        except (OSError, http.client.HTTPException) as exc:
            # A cut socket fails in whichever read it interrupted: say why, not how.
            why = f"{type(exc).__name__}: {exc}"
            if cut.is_set():
                why = f"no complete response within {seconds:.1f} s"
            exchange = Exchange(method, path, 0, [], why.encode(), sent_headers)
        finally:
            timer.cancel()
            conn.close()
        if exchange.status >= 400 and exchange.status != 429:
            kept = replace(exchange, body=exchange.body[:KEPT_BODY_BYTES])
            with self._lock:
                self.exchanges.append(kept)
        return exchange

    def send(self, method: str, path: str, **kwargs: Any) -> Exchange:
        """Like :meth:`request`, but waits out one short 429 so other probes are not rate limit tests."""
        exchange = self.request(method, path, **kwargs)
        if exchange.status == 429:
            wait = retry_after_seconds(exchange.header("retry-after"))
            if wait is not None and wait <= 3 and wait < self.remaining_seconds() - 1:
                time.sleep(wait + 0.05)
                exchange = self.request(method, path, **kwargs)
        return exchange


def _cut_off(conn: http.client.HTTPConnection, cut: threading.Event) -> None:
    """Shut the connection's socket down: a read blocked on it returns at once."""
    cut.set()
    sock = conn.sock
    if sock is not None:
        # OSError: the request finished and closed the socket meanwhile.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def read_capped(response: http.client.HTTPResponse, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of the body, and whether there was more."""
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = response.read(min(_READ_CHUNK, limit + 1 - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    return data[:limit], size > limit


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP date; ``None`` if it does not parse."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    from email.utils import parsedate_to_datetime

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def decode_json(exchange: Exchange) -> Any:
    """The body as JSON, or ``None`` when it is not JSON."""
    try:
        return orjson.loads(exchange.body)
    except orjson.JSONDecodeError:
        return None
