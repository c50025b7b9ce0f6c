"""The ``rate_limits`` configuration section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from bastion._model import Section
from bastion.units import Duration, DurationField, RateField

KEY_PARTS = ("global", "client", "ip", "route")


class RuleConfig(Section):
    """One rate limit rule: who it counts (``key``), what it applies to (``match``), how much."""

    name: str
    key: str | list[str] = "client"
    match: str | list[str] | None = None
    limit: RateField
    burst: int | None = Field(default=None, ge=1)
    tiers: dict[str, RateField] = Field(default_factory=dict)
    algorithm: Literal["gcra", "sliding_window", "sliding_log", "fixed_window", "concurrency"] = "gcra"
    cost: int = Field(default=1, ge=1)
    mode: Literal["enforce", "shadow"] = "enforce"

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

    @model_validator(mode="after")
    def _burst_fits(self) -> RuleConfig:
        if self.burst is not None and self.algorithm != "gcra":
            raise ValueError("burst applies only to the gcra algorithm")
        return self


class RateLimitsConfig(Section):
    """Rate limit rules and how their store is used."""

    enabled: bool = True
    store: str | None = Field(default=None, description="overrides the top-level store")
    on_store_error: Literal["open", "closed"] = "open"
    timeout: DurationField = Duration(50)
    rules: list[RuleConfig] = Field(default_factory=list)

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                raise ValueError(f"two rules are named {rule.name!r}; names must be unique")
            seen.add(rule.name)
        return rules
