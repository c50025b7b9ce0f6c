"""Rules compiled for the hot path: which rules apply to a route, and each request's store keys.

Everything that depends only on the configuration (limits per tier, the
``RateLimit-Policy`` members, the match table) is computed once here, so that a
request costs a dictionary lookup for its plan plus the decision itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from bastion.asgi import RequestContext, Scope
from bastion.config.ratelimit import RuleConfig
from bastion.enforcement import enforced_share, in_shadow
from bastion.protocols import HTTP_METHODS
from bastion.ratelimit.algorithms import CONCURRENCY, Limit
from bastion.ratelimit.headers import policy_member
from bastion.units import Rate

OPERATION_EXTENSION = "x-bastion-rate-limit"
# Store keys longer than this are hashed: header values can be long and Redis keys should not be.
_MAX_KEY = 200
# A rule without per-client limits (shared: it is never written to).
_NO_CLIENTS: Mapping[str, Limit] = MappingProxyType({})
# The key part of a companion rule (see :func:`by_ip`): the client as if it were identified by IP.
_CLIENT_BY_IP = "client-by-ip"


@dataclass(frozen=True, slots=True, eq=False)
class CompiledRule:
    """A rule ready for requests."""

    name: str
    parts: tuple[str, ...]
    #: ``(method, template)`` pairs; empty means every request. ``*`` matches any method.
    matches: frozenset[tuple[str, str]]
    cost: int
    #: Whether the rule refuses no client (``mode: shadow``, or ``enforce_percent: 0``).
    shadow: bool
    default: Limit
    #: tier -> limit, for tiers with their own rate.
    tiers: Mapping[str, Limit]
    #: limit -> its ``RateLimit-Policy`` member.
    policies: Mapping[Limit, str]
    #: The start of every store key of this rule.
    prefix: str
    #: The share of clients enforced when only some are (``enforce_percent`` 1 to 99), else ``None``.
    percent: int | None = None
    #: client id -> its own limit (``clients.keys[].limits``), replacing its tier's.
    clients: Mapping[str, Limit] = field(default_factory=lambda: _NO_CLIENTS)

    @property
    def throttles(self) -> bool:
        """Whether the rule queues a request over its limit instead of refusing it (``throttle``)."""
        return self.default.max_delay_us > 0

    @property
    def concurrency(self) -> bool:
        """Whether this rule holds slots until the response ends."""
        return self.default.algorithm == CONCURRENCY

    @property
    def watches(self) -> bool:
        """Whether the rule may decide in shadow mode (``mode: shadow`` or ``enforce_percent``)."""
        return self.shadow or self.percent is not None

    def shadows(self, bucket: int) -> bool:
        """Whether the rule only watches a client in ``bucket`` (see :mod:`bastion.enforcement`)."""
        percent = self.percent
        return self.shadow or (percent is not None and in_shadow(percent, bucket))

    def applies(self, method: str, route: str) -> bool:
        """Whether the rule covers ``method route``."""
        if not self.matches:
            return True
        return (method, route) in self.matches or ("*", route) in self.matches

    def limit_for(self, tier: str | None) -> Limit:
        """The limit of ``tier`` (the rule's own limit for tiers it does not name)."""
        if tier is None or not self.tiers:
            return self.default
        return self.tiers.get(tier, self.default)

    def key_for(self, method: str, route: str, ctx: RequestContext, scope: Scope) -> str:
        """The store key of this rule for one request."""
        parts = self.parts
        if len(parts) == 1:
            # The usual one-part keys, without the general loop.
            part = parts[0]
            if part == "client" and ctx.client_id:
                return self.prefix + ctx.client_id
            if part == "global":
                return self.prefix + "*"
            if part == _CLIENT_BY_IP:
                return self.prefix + "ip:" + _peer(ctx, scope)
        values = []
        for part in self.parts:
            if part == "client":
                values.append(ctx.client_id or "ip:" + _peer(ctx, scope))
            elif part == _CLIENT_BY_IP:
                values.append("ip:" + _peer(ctx, scope))
            elif part == "ip":
                values.append(_peer(ctx, scope))
            elif part == "global":
                values.append("*")
            elif part == "route":
                values.append(method + " " + route)
            else:
                values.append(_header(scope, part))
        key = self.prefix + "|".join(values)
        if len(key) > _MAX_KEY:
            digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]
            key = self.prefix + "#" + digest
        return key


def by_ip(rule: CompiledRule) -> CompiledRule | None:
    """The rule's companion for clients named by an API key nobody vouched for, or ``None``.

    Without ``clients.keys`` any key is believed, so each invented key would be a fresh
    budget. A request named by such a key is therefore also counted by this companion:
    the same rule and limits, with the client counted as its IP, on the very store keys
    that the requests of that IP without a key use. Keys then never buy more than an
    IP's budget. ``None`` for a rule that does not count per client.
    """
    if "client" not in rule.parts:
        return None
    name = rule.name + "@ip"
    return replace(
        rule,
        name=name,
        parts=tuple(_CLIENT_BY_IP if part == "client" else part for part in rule.parts),
        policies={limit: policy_member(name, limit) for limit in rule.policies},
    )


def _peer(ctx: RequestContext, scope: Scope) -> str:
    if ctx.client_ip:
        return ctx.client_ip
    peer = scope.get("client")
    return str(peer[0]) if peer else "unknown"


def _header(scope: Scope, part: str) -> str:
    name = part.removeprefix("header:").lower().encode("latin-1")
    for key, value in scope["headers"]:
        if key == name:
            return "h:" + bytes(value).decode("latin-1")
    # Requests without the header share one key: leaving the header out must not escape the limit.
    return "-"


def compile_rule(
    config: RuleConfig,
    *,
    matches: Iterable[tuple[str, str]] | None = None,
    clients: Mapping[str, Rate] | None = None,
) -> CompiledRule:
    """Compile one configured rule; ``clients`` maps client ids to their own rate for it."""
    max_delay_us = config.throttle.max_delay.ms * 1000
    queue_limit = config.throttle.queue_limit if max_delay_us else 0

    def limit_of(rate: Rate) -> Limit:
        period_us = rate.period_ms * 1000
        if config.algorithm == "concurrency":
            period_us = config.lease.ms * 1000
        burst = config.capacity_of(rate) if config.algorithm == "gcra" else None
        return Limit.build(
            config.algorithm, rate.limit, period_us, burst, max_delay_us=max_delay_us, queue_limit=queue_limit
        )

    default = limit_of(config.limit)
    tiers = {tier: limit_of(rate) for tier, rate in config.tiers.items()}
    own = {client: limit_of(rate) for client, rate in (clients or {}).items()}
    policies = {
        limit: policy_member(config.name, limit) for limit in (default, *tiers.values(), *own.values())
    }
    found = config.match_entries() if matches is None else list(matches)
    share = enforced_share(config.mode, config.enforce_percent)
    return CompiledRule(
        name=config.name,
        parts=tuple(config.key_parts()),
        matches=frozenset(found),
        cost=config.cost,
        shadow=share == 0,
        default=default,
        tiers=tiers,
        policies=policies,
        prefix=config.name + "|",
        percent=share if 0 < share < 100 else None,
        clients=own or _NO_CLIENTS,
    )


def operation_rule(method: str, template: str, value: Any) -> CompiledRule:
    """The rule an operation declares with ``x-bastion-rate-limit``.

    The value is a rate (``5/minute``) or a mapping of rule settings (``limit``,
    ``burst``, ``key``, ``algorithm``, ``cost``, ``mode``, ``enforce_percent``, ``tiers``). The rule is
    named ``METHOD /template`` and, unless its ``key`` says otherwise, counts per
    client and per operation.
    """
    settings: dict[str, Any] = {"limit": value} if isinstance(value, str) else dict(value)
    settings.setdefault("key", ["client", "route"])
    settings["name"] = f"{method} {template}"
    config = RuleConfig.model_validate(settings)
    return compile_rule(config, matches=[(method, template)])


def operation_extensions(document: Any) -> dict[tuple[str, str], Any]:
    """``x-bastion-rate-limit`` values of a parsed OpenAPI document, by ``(METHOD, template)``.

    Read from the description the build context loaded once (see
    :meth:`bastion.stack.BuildContext.description`), so that a description whose only
    limits are per operation still gets a guard.
    """
    found: dict[tuple[str, str], Any] = {}
    paths = document.get("paths") if isinstance(document, dict) else None
    if not isinstance(paths, dict):
        return found
    for template, item in paths.items():
        if not isinstance(item, dict):
            continue
        # A path item's extension applies to each of its operations unless one sets its own.
        shared = item.get(OPERATION_EXTENSION)
        for method in HTTP_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict):
                continue
            value = operation.get(OPERATION_EXTENSION, shared)
            if value is not None:
                found[(method.upper(), str(template))] = value
    return found
