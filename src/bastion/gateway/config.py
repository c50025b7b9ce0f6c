"""The ``gateway`` configuration section: where the gateway listens and how it talks upstream.

The upstream URL itself is the top-level ``upstream`` key; this section holds the
rest. It is plain data (no aiohttp import), so ``bastion config check`` works
without the ``gateway`` extra installed.
"""

from __future__ import annotations

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
    rate limits and idempotency keys are shared exactly. `--workers` overrides it."""
    admin_port: int | None = Field(default=None, ge=1, le=65535)
    """When set, metrics, `/_bastion/health` and `/_bastion/ready` are served on this port
    (on `host`) and the metrics path is no longer served on the main port. `--admin-port`
    overrides it."""
    connect_timeout: DurationField = Duration(5_000)
    """How long opening a connection to the upstream may take before the request fails with
    `504 UPSTREAM_TIMEOUT`."""
    read_timeout: DurationField = Duration(30_000)
    """How long the upstream may stay silent: waiting for the response head, and between two
    chunks of the response body. `0` means no limit (long-lived event streams)."""
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
    normalize_max_bytes: int = Field(default=65_536, ge=1024, le=16 * 1024 * 1024)
    """With `errors.normalize_upstream`, how much of an upstream error body is read to decide
    whether it is a problem and to log it; the rest is discarded."""

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError("host must be an interface address such as 127.0.0.1 or 0.0.0.0")
        return value

    @field_validator("connect_timeout")
    @classmethod
    def _positive_connect(cls, value: Duration) -> Duration:
        if value.ms < 1:
            raise ValueError("connect_timeout must be longer than 0")
        return value
