"""The ``faults`` configuration section: delays and failures injected on purpose (docs/faults.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion._model import Section
from bastion.config.ratelimit import parse_match
from bastion.units import DurationField


class DelayDistribution(Section):
    """A delay drawn per request: `{min, max}` (uniform) or `{p50, p99}` (log-normal, a long tail)."""

    min: DurationField | None = None
    """Uniform: the shortest delay."""
    max: DurationField | None = None
    """Uniform: the longest delay."""
    p50: DurationField | None = None
    """Long tail: half the delays are shorter than this."""
    p99: DurationField | None = None
    """Long tail: 99 in 100 delays are shorter than this."""

    @model_validator(mode="after")
    def _one_shape(self) -> DelayDistribution:
        uniform = self.min is not None and self.max is not None
        tail = self.p50 is not None and self.p99 is not None
        if uniform == tail or (uniform and (self.p50 or self.p99)) or (tail and (self.min or self.max)):
            raise ValueError("a delay distribution is either {min, max} or {p50, p99}")
        if self.min is not None and self.max is not None and self.max.ms < self.min.ms:
            raise ValueError("max must be at least min")
        if self.p50 is not None and self.p99 is not None:
            if self.p50.ms <= 0:
                raise ValueError("p50 must be above 0")
            if self.p99.ms < self.p50.ms:
                raise ValueError("p99 must be at least p50")
        return self


class AbortConfig(Section):
    """How an injected failure ends the request: one of `status`, `drop` or `reset_mid_body`."""

    status: int | None = Field(default=None, ge=400, le=599)
    """Answer with this status (400 to 599). Client side: a problem with `code: INJECTED_FAULT`.
    Upstream side: the upstream answers it (`502` and `504` are the gateway's own
    `UPSTREAM_UNAVAILABLE` and `UPSTREAM_TIMEOUT`, as if the upstream had failed)."""
    drop: bool = False
    """Close the connection without any response. Upstream side: the upstream drops the
    connection, and the client gets `502 UPSTREAM_UNAVAILABLE`."""
    reset_mid_body: bool = False
    """Start the response, send part of its body, then reset the connection."""

    @model_validator(mode="after")
    def _one(self) -> AbortConfig:
        chosen = [self.status is not None, self.drop, self.reset_mid_body]
        if sum(chosen) != 1:
            raise ValueError("an abort is exactly one of status, drop: true or reset_mid_body: true")
        return self


class FaultRuleConfig(Section):
    """One fault: which requests it applies to, and what it does to them."""

    name: str | None = Field(default=None, min_length=1, max_length=128)
    """A name for logs (default: `fault-N`, N its place in the list from 1)."""
    match: str | list[str] | None = None
    """`METHOD /template` entries the fault applies to, as in rate limit rules (`POST /orders`,
    `* /orders/{id}`); unset: every route."""
    client: str | list[str] | None = None
    """Client names the fault applies to (the `name` of an API key in `clients.keys`, or a
    client id such as `ip:10.0.0.7`); unset: every client."""
    header: str | None = None
    """`"Name: value"`: only requests carrying this header with this value; `"Name"` alone:
    any value."""
    side: Literal["client", "upstream"] = "client"
    """`client`: the gateway itself is slow or fails, before the rate limit and every guard after
    it. `upstream`: the call to the upstream is slow or fails (gateway only), after the guards
    (an idempotency key is claimed), so the client sees what it would see if the API were slow or
    down."""
    delay: DurationField | DelayDistribution | None = None
    """Wait before going on: a duration (`2s`), or a distribution to draw each request's delay
    from. Upstream side, a delay past `gateway.read_timeout` ends in
    `504 UPSTREAM_TIMEOUT`."""
    abort: AbortConfig | None = None
    """Fail the request (after the delay, if any): `{status: 503}`, `{drop: true}` or
    `{reset_mid_body: true}`."""
    percent: float = Field(default=100, ge=0, le=100)
    """The share (0 to 100) of matching requests the fault is injected into."""

    @field_validator("match")
    @classmethod
    def _matches(cls, value: str | list[str] | None) -> str | list[str] | None:
        entries = [value] if isinstance(value, str) else value or []
        if value is not None and not entries:
            raise ValueError("match needs at least one 'METHOD /template' entry, or leave it out")
        for entry in entries:
            parse_match(entry)
        return value

    @field_validator("header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not value.partition(":")[0].strip():
            raise ValueError("write the header as 'Name: value' (or 'Name' for any value)")
        return value

    @model_validator(mode="after")
    def _something(self) -> FaultRuleConfig:
        if self.delay is None and self.abort is None:
            raise ValueError("a fault needs a delay, an abort or both")
        return self

    def match_entries(self) -> list[tuple[str, str]]:
        """``(METHOD, template)`` pairs of ``match`` (empty: every route)."""
        entries = [self.match] if isinstance(self.match, str) else self.match or []
        return [parse_match(e) for e in entries]

    def clients(self) -> frozenset[str]:
        """The client names of ``client`` (empty: every client)."""
        return frozenset([self.client] if isinstance(self.client, str) else self.client or [])

    def header_pair(self) -> tuple[bytes, bytes | None] | None:
        """``header`` as ``(lower-case name, value or None)``."""
        if self.header is None:
            return None
        name, colon, value = self.header.partition(":")
        return name.strip().lower().encode("latin-1"), (value.strip().encode("latin-1") if colon else None)


class FaultsConfig(Section):
    """Fault injection: delays and failures on purpose, to see what clients see (docs/faults.md)."""

    rules: list[FaultRuleConfig] = Field(default_factory=list)
    """The faults; every rule that matches a request is drawn for on its own, in order."""
    allow_header_control: bool = False
    """Let each request ask for a fault: `Bastion-Fault-Delay: 500ms` and
    `Bastion-Fault-Abort: 503` (or `drop`, `reset_mid_body`), either prefixed with `upstream `
    for the upstream side. Only for
    test and staging environments: anyone who can send a request can slow it down. The headers
    never reach the upstream, whether this is on or off."""
    seed: int | None = None
    """Seed of the draws of `percent` and of random delays, for runs that repeat exactly (with
    one worker and requests in the same order); unset: a fresh seed per process."""

    @property
    def enabled(self) -> bool:
        """Whether any fault can be injected."""
        return bool(self.rules) or self.allow_header_control
