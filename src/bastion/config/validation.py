"""The ``validation`` configuration section."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

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


def _moment(value: Any) -> Any:
    """A date (``2027-06-30``) or a datetime (``2027-06-30T12:00:00Z``); without a zone, UTC.

    A string with a time is a datetime even at midnight, so that ``T00:00:00Z`` does not
    become the end of that day. A datetime without a zone is UTC, as YAML says.
    """
    if isinstance(value, str):
        text = value.strip()
        try:
            value = datetime.fromisoformat(text) if len(text) > 10 else date.fromisoformat(text)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date (2027-06-30) or datetime") from None
    if isinstance(value, datetime) and value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value


#: A date (meaning the end of that day, UTC) or a datetime.
Moment = Annotated[date | datetime, BeforeValidator(_moment)]


class RelaxMatchConfig(Section):
    """Which requests a relaxation applies to: every key given must match (at least one)."""

    tier: str | None = None
    """The client's tier (`clients.keys[].tier`, or `clients.default_tier`)."""
    client: str | None = None
    """The name of the client's API key (`clients.keys[].name`); needs a key list."""
    header: str | None = None
    """A request header and its exact value, `"API-Version: 2023-01-01"` (name in any case)."""
    path_prefix: str | None = None
    """The start of the request path, `/v1/`."""

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None:
            name, colon, wanted = value.partition(":")
            if not colon or not name.strip() or not wanted.strip():
                raise ValueError('a header match is "Name: value"')
        return value

    @field_validator("path_prefix")
    @classmethod
    def _path_prefix(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError("a path prefix starts with /")
        return value

    @model_validator(mode="after")
    def _not_empty(self) -> RelaxMatchConfig:
        if self.tier is None and self.client is None and self.header is None and self.path_prefix is None:
            raise ValueError(
                "an empty match would relax every request: give tier, client, header or path_prefix"
            )
        return self


class RelaxConfig(Section):
    """A relaxation of validation for some clients, until a date, announced in response headers."""

    match: RelaxMatchConfig
    """Which requests it applies to; the first entry that matches a request wins."""
    relax: Literal["shadow", "allow-unknown-fields"]
    """`shadow` checks matching requests in shadow mode (security refusals stay enforced);
    `allow-unknown-fields` lets unknown body fields through and refuses every other error."""
    until: Moment
    """When the entry stops relaxing by itself: a date (the end of that day, UTC) or a datetime
    (`2027-06-30T12:00:00Z`; without a zone, UTC). Matching requests are then checked as usual."""
    sunset: Moment | None = None
    """The `Sunset` header's date (RFC 8594). Unset: `until`."""
    deprecated: Moment | None = None
    """The `Deprecation` header's date (RFC 9745). Unset: when the configuration was loaded."""
    link: str | None = Field(default=None, pattern=r"^https?://[!#-;=?-~]+$")
    """A page about the migration, sent as `Link: <URL>; rel="deprecation"` and `rel="sunset"`."""


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
    allow_external_refs: list[str] = Field(default_factory=list)
    """URL prefixes and paths (relative to the description's folder) that the description may
    refer to besides its own folder (`$ref`, `$schema`). Nothing else is fetched or read."""
    responses: ResponseValidationConfig = Field(default_factory=ResponseValidationConfig)
    relax: list[RelaxConfig] = Field(default_factory=list)
    """Relaxed validation for legacy clients, each entry until a date (see docs/validation.md).
    Matching responses carry `Deprecation` and `Sunset` headers. The first match wins; an
    entry past its `until` is skipped."""

    @model_validator(mode="before")
    @classmethod
    def _no_lenient_booleans(cls, data: Any) -> Any:
        if isinstance(data, dict) and "lenient_booleans" in data:
            # Refused rather than ignored, so the booleans it let through are not refused silently.
            raise ValueError(
                "lenient_booleans is no longer read: leniency is declared where it applies. Add "
                "`x-bastion-lenient: [boolean-words]` to the boolean schema (or parameter) in the "
                "OpenAPI description that should accept yes/no, on/off and 1/0"
            )
        return data

    @model_validator(mode="after")
    def _enforcement(self) -> ValidationConfig:
        check_enforcement(self.mode, self.enforce_percent)
        return self
