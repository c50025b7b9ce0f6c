"""The ``rate_limits`` configuration section."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion._model import Section
from bastion.stores import parse_store_url
from bastion.units import Duration, DurationField, RateField

KEY_PARTS = ("global", "client", "ip", "route")
ALGORITHMS = ("gcra", "sliding_window", "sliding_log", "fixed_window", "concurrency")
_MATCH_RE = re.compile(r"^\s*(?:([A-Za-z]+|\*)\s+)?(/\S*)\s*$")


def parse_match(entry: str) -> tuple[str, str]:
    """Split ``POST /login`` into ``("POST", "/login")``; ``*`` or no method stands for any method."""
    found = _MATCH_RE.match(entry)
    if found is None:
        raise ValueError(f"{entry!r} is not a match; write it like 'POST /login' or '* /orders/{{id}}'")
    return (found.group(1) or "*").upper(), found.group(2)


class RuleConfig(Section):
    """One rate limit rule: who it counts (``key``), what it applies to (``match``), how much."""

    name: str = Field(min_length=1, max_length=256)
    key: str | list[str] = "client"
    match: str | list[str] | None = None
    limit: RateField
    burst: int | None = Field(default=None, ge=1)
    tiers: dict[str, RateField] = Field(default_factory=dict)
    algorithm: Literal["gcra", "sliding_window", "sliding_log", "fixed_window", "concurrency"] = "gcra"
    cost: int = Field(default=1, ge=1)
    mode: Literal["enforce", "shadow"] = "enforce"
    #: How long a concurrency slot stays taken if its process dies before releasing it.
    lease: DurationField = Duration(60_000)

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

    @model_validator(mode="after")
    def _consistent(self) -> RuleConfig:
        if self.burst is not None and self.algorithm != "gcra":
            raise ValueError("burst applies only to the gcra algorithm")
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
        rate = self.tiers.get(tier, self.limit) if tier else self.limit
        if self.burst is None:
            return rate.limit
        if rate is self.limit:
            return self.burst
        # A tier keeps the rule's burst-to-limit proportion.
        return max(1, self.burst * rate.limit // self.limit.limit)


class RateLimitsConfig(Section):
    """Rate limit rules and how their store is used."""

    enabled: bool = True
    store: str | None = Field(default=None, description="overrides the top-level store")
    on_store_error: Literal["open", "closed"] = "open"
    timeout: DurationField = Duration(50)
    #: Consecutive store failures that open the circuit breaker.
    breaker_failures: int = Field(default=3, ge=1)
    #: How long the store is skipped once the breaker opens, before one probe request.
    breaker_cooldown: DurationField = Duration(5_000)
    #: Prefix of every Redis key (the part in braces is the Redis Cluster hash tag).
    key_prefix: str = Field(default="bastion:rl", min_length=1)
    #: Which response headers to send: the IETF draft's, the legacy X-RateLimit-*, or both.
    headers: Literal["both", "draft", "legacy", "none"] = "both"
    rules: list[RuleConfig] = Field(default_factory=list)

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
