"""The ``idempotency`` configuration section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

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
    store: str | None = Field(default=None, description="overrides the top-level store")
    methods: list[str] = Field(default_factory=lambda: ["POST", "PATCH"])
    require: list[str] = Field(default_factory=list, description="'METHOD /template' entries")
    header: str = "Idempotency-Key"
    ttl: DurationField = Duration(24 * 3_600_000)
    lease: DurationField = Duration(60_000)
    wait: DurationField = Duration(0)
    on_mismatch: Literal[409, 422] = 409
    on_store_error: Literal["open", "closed"] = "closed"
    store_statuses: list[str] = Field(default_factory=lambda: ["2xx", "4xx"])
    max_stored_bytes: ByteSize = 1024 * 1024
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

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        return check_table_name(value)

    @field_validator("lease")
    @classmethod
    def _positive_lease(cls, value: Duration) -> Duration:
        if value.ms < 1:
            raise ValueError("the lease must be longer than 0")
        return value

    @field_validator("ttl")
    @classmethod
    def _positive_ttl(cls, value: Duration) -> Duration:
        if value.ms < 1:
            raise ValueError("the ttl must be longer than 0")
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
            if not (entry in {"2xx", "3xx", "4xx"} or (entry.isdigit() and 200 <= int(entry) < 500)):
                raise ValueError(
                    f"{entry!r} is not a storable status; use 2xx, 3xx, 4xx or a status below 500"
                )
        return value
