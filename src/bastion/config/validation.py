"""The ``validation`` configuration section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from bastion._model import Section
from bastion.config.ratelimit import check_enforcement
from bastion.units import ByteSize


class ResponseValidationConfig(Section):
    """Response validation in shadow mode: mismatches are logged and counted, never altered."""

    enabled: bool = False
    """Check a sample of JSON responses against the response schema of their status; mismatches
    are logged and counted, never altered."""
    sample_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    """The share of responses checked, from `0.0` to `1.0` (`0.01`: one in a hundred)."""


class ValidationConfig(Section):
    """How requests are checked against the OpenAPI description."""

    enabled: bool = True
    """`false` keeps routing (404/405, route labels) but checks nothing. Validation needs an
    `openapi` description either way."""
    mode: Literal["enforce", "shadow"] = "enforce"
    """`enforce` refuses invalid requests; `shadow` checks, counts and logs them but lets them
    through to the application, with `Bastion-Would-Refuse: <CODE>`. Security refusals stay
    enforced in shadow mode: `413 PAYLOAD_TOO_LARGE`, `400 MALFORMED_BODY`,
    `400 AMBIGUOUS_REQUEST` and the `415` of a charset or `Content-Encoding` (see
    docs/validation.md). An operation's `x-bastion-validation` replaces this setting."""
    enforce_percent: int | None = Field(default=None, ge=0, le=100)
    """With `mode: enforce`, the share of clients (`0` to `100`) whose invalid requests are
    refused; the others are checked in shadow mode. Stable per client, by the same hash of the
    client id as rate limit rules use. Unset: `100`. Not allowed with `mode: shadow`."""
    reject_unknown_fields: bool = True
    """Close objects that declare `properties` but say nothing about `additionalProperties`, so
    unknown body fields are `NOT_ALLOWED`; `x-bastion-unknown-fields: allow` opens one again."""
    max_body_bytes: ByteSize = 1024 * 1024
    """The largest request body read (`1048576`, `64KiB`, `1MiB`); a larger one is
    `413 PAYLOAD_TOO_LARGE` and is not read past the limit. Also applies to idempotency."""
    max_json_depth: int = Field(default=32, ge=1, le=1000)
    """The deepest JSON nesting accepted (`1` to `1000`); deeper bodies are `400 MALFORMED_BODY`
    before schema validation."""
    max_errors: int = Field(default=50, ge=1, le=1000)
    """The most entries returned in a problem's `errors[]` (`1` to `1000`)."""
    unknown_routes: Literal["reject", "pass"] = "reject"
    """Paths and methods outside the description: `reject` answers `404 NOT_FOUND` or
    `405 METHOD_NOT_ALLOWED`; `pass` lets them through to the application untouched."""
    unknown_query: Literal["ignore", "reject"] = "ignore"
    """Undocumented query parameters: `ignore` them, or `reject` them as `NOT_ALLOWED` entries."""
    lenient_booleans: bool = False
    """Also accept `yes`/`no`, `1`/`0` and `on`/`off` as booleans in parameters and form data;
    by default only `true` and `false` are."""
    allow_external_refs: list[str] = Field(default_factory=list)
    """URL prefixes and paths (relative to the description's folder) that the description may
    refer to besides its own folder (`$ref`, `$schema`). Nothing else is fetched or read."""
    responses: ResponseValidationConfig = Field(default_factory=ResponseValidationConfig)

    @model_validator(mode="after")
    def _enforcement(self) -> ValidationConfig:
        check_enforcement(self.mode, self.enforce_percent)
        return self
