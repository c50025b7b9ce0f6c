"""The ``rate_limits`` configuration section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from bastion._model import Section
from bastion.stores import parse_store_url
from bastion.units import Duration, DurationField, Rate, RateField

KEY_PARTS = ("global", "client", "ip", "route")
ALGORITHMS = ("gcra", "sliding_window", "sliding_log", "fixed_window", "concurrency")
_MATCH_RE = re.compile(r"^\s*(?:([A-Za-z]+|\*)\s+)?(/\S*)\s*$")


def parse_match(entry: str) -> tuple[str, str]:
    """Split ``POST /login`` into ``("POST", "/login")``; ``*`` or no method stands for any method."""
    found = _MATCH_RE.match(entry)
    if found is None:
        raise ValueError(f"{entry!r} is not a match; write it like 'POST /login' or '* /orders/{{id}}'")
    return (found.group(1) or "*").upper(), found.group(2)


def check_enforcement(mode: str, enforce_percent: int | None) -> None:
    """Refuse ``enforce_percent`` with ``mode: shadow`` (for rules and validation alike)."""
    if mode == "shadow" and enforce_percent is not None:
        raise ValueError("enforce_percent applies to mode enforce; mode shadow enforces no client")


#: Why each algorithm but GCRA cannot queue a request for an exact slot.
_NO_QUEUE = {
    "sliding_window": "its counts cover the current and the previous window only, so a slot in a "
    "later window cannot be reserved",
    "fixed_window": "its count covers the current window only, so a slot in a later window cannot "
    "be reserved",
    "sliding_log": "a waiting request's slot depends on stamps still to come, so it cannot be "
    "reserved when the request arrives",
    "concurrency": "nobody knows when a request in flight ends, so there is no slot to wait for",
}
#: The longest ``max_delay``: a request held longer is better told to come back.
_MAX_DELAY_MS = 3_600_000


class ThrottleConfig(Section):
    """Queue instead of refuse: a request over the limit waits for its slot when it is near enough."""

    max_delay: DurationField = Duration(0)
    """The longest a request waits for its slot (`500ms`, `2s`; at most `1h`). A request that
    would be admitted within it waits and then goes on; one that would wait longer gets `429`.
    `0` (the default): no request waits."""
    queue_limit: int = Field(default=100, ge=1, le=1_000_000)
    """How many requests may wait at once per rule and key; more are refused with `429`."""

    @field_validator("max_delay")
    @classmethod
    def _bounded(cls, value: Duration) -> Duration:
        if value.ms > _MAX_DELAY_MS:
            raise ValueError("max_delay is at most 1h: a request held longer is better told to come back")
        return value

    @model_validator(mode="after")
    def _delay_given(self) -> ThrottleConfig:
        if not self.max_delay.ms and "queue_limit" in self.model_fields_set:
            raise ValueError("queue_limit needs a max_delay (the longest wait); without one no request waits")
        return self


class RuleConfig(Section):
    """One rate limit rule: who it counts (``key``), what it applies to (``match``), how much."""

    name: str = Field(min_length=1, max_length=256)
    """Unique name of the rule, used as the policy name in headers, problems, metrics and logs.
    Printable ASCII without quotes or backslashes, at most 256 characters."""
    key: str | list[str] = "client"
    """Who is counted: `global` (everyone together), `client`, `ip`, `route` or `header:NAME`
    (requests without the header share one key). A list such as `[client, route]` combines them."""
    match: str | list[str] | None = None
    """`METHOD /template` entries the rule applies to (`POST /login`; `* /orders/{id}` or just
    `/orders/{id}` for any method); unset, the rule applies to every request. Compared with the
    request's canonical path, ignoring case and a trailing slash unless `routing` says otherwise."""
    limit: RateField
    """The rate allowed per key, such as `100/minute`, `1000/s` or `10/5s`. For `concurrency`
    it is the number of requests in flight and the period is ignored."""
    burst: int | None = Field(default=None, ge=1)
    """`gcra` only: how many requests may arrive at once (unset: the limit). `100/minute` with
    `burst: 20` admits 20 at once, then one every 600 ms."""
    tiers: dict[str, RateField] = Field(default_factory=dict)
    """Tier name to rate (`paid: 1000/minute`), replacing `limit` for clients of that tier.
    A tier keeps the rule's burst-to-limit proportion."""
    algorithm: Literal["gcra", "sliding_window", "sliding_log", "fixed_window", "concurrency"] = "gcra"
    """How requests are counted: `gcra` (a rate plus a burst), `sliding_window`, `sliding_log`
    (exact), `fixed_window`, or `concurrency` (requests in flight)."""
    cost: int = Field(default=1, ge=1)
    """Units of the limit one request uses. A cost larger than the capacity (burst or limit) of
    any tier is a configuration error."""
    mode: Literal["enforce", "shadow"] = "enforce"
    """`enforce` rejects requests over the limit with `429`; `shadow` decides, counts
    (`outcome="shadow_limited"`) and logs, but never rejects: for trying a rule on real traffic.
    The application sees a shadow refusal as `Bastion-Would-Refuse: RATE_LIMITED`."""
    enforce_percent: int | None = Field(default=None, ge=0, le=100)
    """With `mode: enforce`, the share of clients (`0` to `100`) the rule refuses; the other
    clients are decided in shadow mode. A client's share is stable: a hash of its client id
    (the `client` key part's value) puts it in one of 100 buckets, the same for every rule
    and for validation, and buckets below the percentage are enforced. Unset: `100`. Not
    allowed with `mode: shadow`, which enforces no client."""
    lease: DurationField = Duration(60_000)
    """`concurrency` only: a slot not released within this time frees itself (a process that died
    holding it). Requests that run longer than the lease lose their slot early."""
    throttle: ThrottleConfig = Field(default_factory=ThrottleConfig)
    """`gcra` only: queue instead of refuse, such as `{max_delay: 500ms, queue_limit: 100}`. A
    request over the limit whose slot comes within `max_delay` waits for it (at most `queue_limit`
    per key) instead of getting `429`; a client that leaves while waiting gives its slot back."""

    @field_validator("name")
    @classmethod
    def _printable_name(cls, value: str) -> str:
        if not all(32 <= ord(c) < 127 for c in value) or '"' in value or "\\" in value:
            raise ValueError("a rule name is printable ASCII without quotes or backslashes")
        return value

    @field_validator("key")
    @classmethod
    def _known_key(cls, value: str | list[str]) -> str | list[str]:
        parts = [value] if isinstance(value, str) else value
        if not parts:
            raise ValueError("key needs at least one part")
        for part in parts:
            if part in KEY_PARTS:
                continue
            if part.startswith("header:") and len(part) > len("header:"):
                continue
            raise ValueError(f"{part!r} is not a key; use global, client, ip, route or header:NAME")
        return value

    @field_validator("match")
    @classmethod
    def _matches(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is None:
            return value
        entries = [value] if isinstance(value, str) else value
        if not entries:
            raise ValueError("match needs at least one 'METHOD /template' entry, or leave it out")
        for entry in entries:
            parse_match(entry)
        return value

    @field_validator("throttle")
    @classmethod
    def _queueable(cls, value: ThrottleConfig, info: ValidationInfo) -> ThrottleConfig:
        algorithm = info.data.get("algorithm", "gcra")
        if value.max_delay.ms and algorithm != "gcra":
            raise ValueError(f"the {algorithm} algorithm cannot queue: {_NO_QUEUE[algorithm]}; use gcra")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if self.burst is not None and self.algorithm != "gcra":
            raise ValueError("burst applies only to the gcra algorithm")
        check_enforcement(self.mode, self.enforce_percent)
        for tier, rate in {"": self.limit, **self.tiers}.items():
            capacity = self.capacity_for(tier or None)
            if self.cost > capacity:
                where = f"tier {tier!r}" if tier else "the limit"
                raise ValueError(
                    f"cost {self.cost} exceeds the capacity {capacity} of {where}; no request fits"
                )
            if rate.limit * rate.period_ms * 1000 >= 2**53:
                raise ValueError(f"{rate} is too large: limit x period must stay below 2^53 microseconds")
        return self

    def match_entries(self) -> list[tuple[str, str]]:
        """The ``(METHOD, template)`` pairs this rule is limited to (empty: every request)."""
        if self.match is None:
            return []
        entries = [self.match] if isinstance(self.match, str) else self.match
        return [parse_match(e) for e in entries]

    def key_parts(self) -> list[str]:
        """The key as a list of parts."""
        return [self.key] if isinstance(self.key, str) else list(self.key)

    def capacity_for(self, tier: str | None) -> int:
        """How many cost units fit at once for ``tier`` (``None``: the rule's own limit)."""
        return self.capacity_of(self.tiers.get(tier, self.limit) if tier else self.limit)

    def capacity_of(self, rate: Rate) -> int:
        """How many cost units fit at once with ``rate`` in place of the limit (a tier's, a client's)."""
        if self.burst is None:
            return rate.limit
        if rate is self.limit:
            return self.burst
        # A tier keeps the rule's burst-to-limit proportion.
        return max(1, self.burst * rate.limit // self.limit.limit)


class RateLimitsConfig(Section):
    """Rate limit rules and how their store is used."""

    enabled: bool = True
    """`false` turns the rate limit guard off: no rule is checked and no rate limit headers
    are sent."""
    store: str | None = Field(default=None, description="overrides the top-level store")
    on_store_error: Literal["open", "closed"] = "open"
    """What happens when the store fails or times out: `open` admits the request without rate
    limit headers; `closed` answers `503 DEPENDENCY_UNAVAILABLE` with `Retry-After`."""
    timeout: DurationField = Duration(50)
    """The longest wait for Redis's answer to one decision, once it is sent; past it the
    decision counts as a store failure. Not used by the memory store."""
    breaker_failures: int = Field(default=3, ge=1)
    """Consecutive store failures that open the circuit breaker; while it is open no request
    waits on the store."""
    breaker_cooldown: DurationField = Duration(5_000)
    """How long the store is skipped once the breaker opens, before one request probes it
    again; a success closes the breaker."""
    key_prefix: str = Field(default="bastion:rl", min_length=1)
    """Prefix of every Redis key (`{bastion:rl}:<algorithm>:<rule>|<key>`); bastion adds the
    braces of the Redis Cluster hash tag itself, so the prefix must not contain braces."""
    headers: Literal["both", "draft", "legacy", "none"] = "both"
    """Which rate limit response headers to send: `draft` (IETF `RateLimit-Policy` and
    `RateLimit`), `legacy` (`X-RateLimit-*`), `both`, or `none`."""
    rules: list[RuleConfig] = Field(default_factory=list)
    """The rate limit rules; every rule that matches a request is decided in one atomic step,
    so a request rejected by one rule consumes nothing from the others."""

    @field_validator("store")
    @classmethod
    def _rate_limit_store(cls, value: str | None) -> str | None:
        if value is None:
            return value
        kind = parse_store_url(value).kind
        if kind not in ("memory", "redis"):
            raise ValueError(
                f"{kind} cannot hold rate limits (a decision must take microseconds); "
                "use memory:// or redis://HOST:PORT/DB"
            )
        return value

    @field_validator("key_prefix")
    @classmethod
    def _no_braces(cls, value: str) -> str:
        if "{" in value or "}" in value:
            raise ValueError("key_prefix must not contain braces; bastion adds the hash tag itself")
        return value

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; names must be unique")
            seen.add(rule.name)
        return rules
