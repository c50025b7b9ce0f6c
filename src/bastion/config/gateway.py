"""The ``gateway`` configuration section: where the gateway listens and how it talks upstream.

The upstream URL itself is the top-level ``upstream`` key; this section holds the
rest. It is plain data (no aiohttp import), so ``bastion config check`` works
without the ``gateway`` extra installed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from bastion._model import Section
from bastion.units import Duration, DurationField


class GatewayConfig(Section):
    """``bastion gateway``: listening address, processes, timeouts and the upstream connection pool."""

    host: str = "127.0.0.1"
    """Interface the gateway listens on (`0.0.0.0` for every interface). `--host` overrides it."""
    port: int = Field(default=8080, ge=0, le=65535)
    """Port the gateway listens on. `--port` overrides it."""
    workers: int = Field(default=1, ge=1, le=256)
    """Worker processes sharing the port. With more than one, use a Redis store so that
    rate limits and idempotency keys are shared exactly; on `memory://` the gateway refuses
    to start unless `--allow-per-process-state`. `--workers` overrides it."""
    server: Literal["bastion", "uvicorn"] = "bastion"
    """The HTTP machinery on both sides of the proxy. `bastion`: the gateway's own HTTP/1.1
    server and upstream connection pool, both on llhttp (httptools), under uvicorn's process
    management. `uvicorn`: uvicorn's httptools protocol towards clients and aiohttp's client
    towards the upstream, the earlier path, kept selectable while the new one proves itself
    in production. Both apply the same limits and guards (docs/gateway.md)."""
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    """When set, metrics, `/_bastion/health` and `/_bastion/ready` are served on this port
    (on `host`) and the metrics path is no longer served on the main port. `--admin-port`
    overrides it."""
    connect_timeout: DurationField = Duration(5_000)
    """How long opening a connection to the upstream may take before the request fails with
    `504 UPSTREAM_TIMEOUT`."""
    read_timeout: DurationField = Duration(30_000)
    """How long the upstream may stay silent: waiting for the response head, and between two
    chunks of the response body. Interim responses (`100 Continue`, `103 Early Hints`) do not
    restart the wait for the head: it is due this long after the request was sent. `0` means
    no limit (long-lived event streams)."""
    pool_size: int = Field(default=256, ge=1, le=100_000)
    """Most connections kept open to the upstream per worker process (keep-alive pool)."""
    keepalive_timeout: DurationField = Duration(15_000)
    """How long an idle pooled upstream connection is kept before it is closed. Keep it below
    the upstream server's own keep-alive timeout (Node's default is 5 s: use 4s there)."""
    drain_timeout: DurationField = Duration(30_000)
    """On SIGTERM the gateway stops accepting connections and lets requests in flight finish
    for at most this long, then exits."""
    preserve_host: bool = False
    """Send the client's `Host` header upstream instead of the upstream's own host name."""
    websockets: bool = True
    """Proxy WebSocket upgrades to the upstream."""
    gc_freeze: bool = True
    """Once a worker has started, move every object then alive (modules, the configuration,
    compiled schemas) out of the garbage collector's reach (`gc.freeze()`), so that its
    collections no longer walk them again and again under load."""
    gc_threshold: int = Field(default=50_000, ge=700, le=10_000_000)
    """Allocations between two collections of the garbage collector's youngest generation in a
    worker (Python's default is 700). Nearly every object a request makes is freed by
    reference counting when the request ends; at 700 the collector still runs every few
    requests to look for cycles among the objects of the requests in flight. `700` keeps
    Python's default."""
    header_timeout: DurationField = Duration(10_000)
    """How long a client may take to send a request's whole head (request line and headers),
    counted from its connection or from the first byte of the request. Later, a client that
    sent part of a head gets `408 REQUEST_TIMEOUT`; a connection that sent nothing is closed.
    `bastion demo` uses it too."""
    body_timeout: DurationField = Duration(30_000)
    """How long a client may stay silent between two chunks of a request body (not while the
    server itself has stopped reading). Later the request ends with `408 REQUEST_TIMEOUT`
    (or, once the response has begun, the connection is closed)."""
    client_keepalive_timeout: DurationField = Duration(5_000)
    """How long a client's connection may stay idle between two requests before the gateway
    closes it. Behind a load balancer, make it longer than the balancer's own idle timeout.
    (`keepalive_timeout` is the upstream side.)"""
    max_header_bytes: int = Field(default=32_768, ge=1024, le=1024 * 1024)
    """Most bytes in a request's head (request target plus header names and values); a larger
    head is answered with `431 HEADERS_TOO_LARGE` and the connection is closed."""
    max_headers: int = Field(default=100, ge=8, le=10_000)
    """Most header fields in a request; more are answered with `431 HEADERS_TOO_LARGE`."""
    max_connections: int = Field(default=10_000, ge=1, le=1_000_000)
    """Most client connections a worker process keeps open; a connection beyond them is answered
    at once with `503 TOO_MANY_CONNECTIONS` and closed. It is lowered at start-up to stay well
    below the process's open-file limit (raised to its hard limit first)."""
    normalize_max_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    """With `errors.normalize_upstream`, how much of an upstream error body is read to decide
    whether it is a problem and to log it; the rest is discarded."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("host must be an interface address such as 127.0.0.1 or 0.0.0.0")
        return value

    @field_validator("connect_timeout", "header_timeout", "body_timeout", "client_keepalive_timeout")
    @classmethod
    def _positive(cls, value: Duration) -> Duration:
        if value.ms < 1:
            raise ValueError("the timeout must be longer than 0")
        return value
