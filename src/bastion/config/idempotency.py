"""The ``idempotency`` configuration section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from bastion._model import Section
from bastion.units import ByteSize, Duration, DurationField

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def check_table_name(name: str) -> str:
    """``name`` if it is a plain SQL identifier, else :class:`ValueError`.

    The table name is put into SQL text (a table cannot be a bind parameter), so
    only letters, digits and ``_`` are allowed.
    """
    if not _IDENTIFIER.fullmatch(name):
        raise ValueError(f"{name!r} is not a plain SQL identifier (letters, digits, _; at most 63)")
    return name


class IdempotencyConfig(Section):
    """How ``Idempotency-Key`` requests are claimed, stored and replayed."""

    enabled: bool = True
    """`false` removes the idempotency guard entirely: keys are ignored and nothing is stored."""
    store: str | None = Field(default=None, description="overrides the top-level store")
    methods: list[str] = Field(default_factory=lambda: ["POST", "PATCH"])
    """Methods on which a key is honoured: `POST`, `PUT`, `PATCH` or `DELETE` (a key on a safe
    method such as `GET` is ignored)."""
    require: list[str] = Field(default_factory=list, description="'METHOD /template' entries")
    header: str = "Idempotency-Key"
    """The request header that carries the idempotency key."""
    ttl: DurationField = Duration(24 * 3_600_000)
    """How long a record lives: a completed request is replayed for this long after it finished,
    and a claim never completed is forgotten after it."""
    lease: DurationField = Duration(60_000)
    """How long a claim holds if nobody renews it. bastion renews it while the handler runs, so
    only a dead or stalled process loses its claim; a retry then takes it over."""
    wait: DurationField = Duration(0)
    """`0ms`: a duplicate of a request still running gets `409 IDEMPOTENCY_REQUEST_IN_PROGRESS`.
    Longer: the duplicate waits up to this long for the first to finish and gets its replay."""
    on_mismatch: Literal[409, 422] = 409
    """The status (`409` or `422`) of `IDEMPOTENCY_KEY_REUSED`, the answer to a key reused with
    a different request."""
    on_store_error: Literal["open", "closed"] = "closed"
    """When the store fails or times out: `closed` answers `503 DEPENDENCY_UNAVAILABLE` with
    `Retry-After`, so a client retries later and the request still runs once; `open` runs the
    request without protection (a retry may run it again), logging and counting the store
    error. Closed is the default because a duplicate payment costs more than a retry."""
    timeout: DurationField = Duration(250)
    """The longest wait for the store's answer to one step (claim, completion, release,
    renewal) once it is sent: a Redis reply, a PostgreSQL statement. Past it the step counts
    as a store failure. A SQLite step (which may wait on another process's file lock) is cut
    off at 10 times this, at least 1 s; the memory store never waits."""
    breaker_failures: int = Field(default=3, ge=1)
    """Consecutive store failures that open the circuit breaker; while it is open no request
    waits on the store (it is answered by `on_store_error` at once)."""
    breaker_cooldown: DurationField = Duration(5_000)
    """How long the store is skipped once the breaker opens, before one request probes it
    again; a success closes the breaker."""
    on_lease_expired: Literal["rerun", "refuse"] = "rerun"
    """A retry of a key whose claim expired without completing (its process died while the
    request ran): `rerun` runs it again, which repeats whatever the first attempt did before
    it died; `refuse` answers `500 IDEMPOTENCY_OUTCOME_UNKNOWN` with the lost attempt's trace
    id (`lost_trace_id`), now and on every later retry of the key, and never runs it again."""
    scope_headers: list[str] = Field(default_factory=lambda: ["authorization", "cookie"])
    """Request headers naming the caller: a key is scoped to the identified client and a keyed
    hash of these, so two callers behind one address never share a record."""
    scope_cookies: list[str] = Field(default_factory=list)
    """Session cookies that name the caller. Empty: the whole `Cookie` header counts (any
    cookie that changes between a request and its retry makes the retry a new request);
    listed: only these cookies do."""
    scope_secret: SecretStr | None = None
    """The key of the caller hash (set it from the environment,
    `BASTION_IDEMPOTENCY__SCOPE_SECRET`; every process sharing the store needs the same).
    Unset, a key derived from the store's URL and table or prefix is used: callers are
    still kept apart, but whoever can read the store and the configuration can test guessed
    credentials against record keys."""
    never_replay_headers: list[str] = Field(default_factory=list)
    """Response headers, besides `Set-Cookie`, `Authentication-Info`, `WWW-Authenticate`,
    `Proxy-Authenticate` and hop-by-hop headers, that are never stored nor replayed."""
    max_memory: ByteSize = 64 * 1024 * 1024
    """The memory store's cap on stored responses (`64MiB`): past it the oldest completed
    records are dropped (a retry of one runs again) and counted in
    `bastion_idempotency_evictions_total`; claims in flight are never dropped."""
    store_statuses: list[str] = Field(default_factory=lambda: ["2xx", "4xx"])
    """Responses stored for replay: status classes (`2xx`, `3xx`, `4xx`, `5xx`) or exact codes
    from 200 to 599 such as `201` or `500`. A response not stored releases the key, so a retry
    runs again: the default leaves out 5xx (a retry after a server error may succeed); add
    `5xx` (or `500`) to answer every retry with the stored server error instead, as Stripe does.
    An exception from the handler is never stored (a client error problem it raises is
    rendered and stored as a 4xx)."""
    max_stored_bytes: ByteSize = 1024 * 1024
    """The largest response body kept (`1MiB`, `65536`). A larger one still completes the
    record, but its replay has an empty body and `Idempotent-Body-Omitted: true`."""
    table: str = Field(default="bastion_idempotency", description="PostgreSQL and SQLite table name")
    key_prefix: str = Field(default="bastion:idem", description="Redis key prefix")

    @field_validator("require")
    @classmethod
    def _method_and_path(cls, value: list[str]) -> list[str]:
        for entry in value:
            method, _, path = entry.strip().partition(" ")
            if not method.isalpha() or not path.strip().startswith("/"):
                raise ValueError(f"{entry!r} is not 'METHOD /path', for example 'POST /orders'")
        return value

    @field_validator("scope_headers", "scope_cookies", "never_replay_headers")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not name or not name.isascii() or not name.isprintable() or any(c in name for c in " ;=,:"):
                raise ValueError(f"{name!r} is not a header or cookie name")
        return value

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_table_name(value)

    @field_validator("lease", "ttl")
    @classmethod
    def _positive(cls, value: Duration, info: ValidationInfo) -> Duration:
        if value.ms < 1:
            raise ValueError(f"the {info.field_name} must be longer than 0")
        return value

    @field_validator("methods")
    @classmethod
    def _upper_methods(cls, value: list[str]) -> list[str]:
        methods = [m.upper() for m in value]
        unsafe = {"POST", "PUT", "PATCH", "DELETE"}
        for method in methods:
            if method not in unsafe:
                raise ValueError(f"{method} is not an unsafe method; use POST, PUT, PATCH or DELETE")
        return methods

    @field_validator("store_statuses")
    @classmethod
    def _status_classes(cls, value: list[str]) -> list[str]:
        for entry in value:
            if not (entry in {"2xx", "3xx", "4xx", "5xx"} or (entry.isdigit() and 200 <= int(entry) < 600)):
                raise ValueError(
                    f"{entry!r} is not a storable status; use 2xx, 3xx, 4xx, 5xx or a status from 200 to 599"
                )
        return value
