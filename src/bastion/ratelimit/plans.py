"""Rate limit plans: the rules of each route, and per client tier their checks and header bytes.

A :class:`Plan` holds the rules that apply to one ``(method, route)``, found once by
:class:`Plans`. For each client tier it keeps a :class:`Tier`: the limits, the parts
of each request's store checks known in advance, and the
:class:`~bastion.ratelimit.headers.HeaderSet` that renders the headers of every
decision. A request then costs a few dictionary lookups before its decision.
"""

from __future__ import annotations

from typing import Any

from bastion.asgi import RequestContext, Scope
from bastion.clients import KEY_ID_PREFIX
from bastion.enforcement import client_bucket, enforcement_id
from bastion.ratelimit.algorithms import CONCURRENCY, SLIDING_LOG, Limit
from bastion.ratelimit.headers import HeaderSet
from bastion.ratelimit.rules import OPERATION_EXTENSION, CompiledRule, by_ip, operation_rule
from bastion.ratelimit.stores import Check

_new = tuple.__new__

# Plans for requests without a route template are cached by raw path, up to this many.
_MAX_PATH_PLANS = 4096


def _key_plan(rule: CompiledRule) -> str | None:
    """The rule's store key when constant, ``""`` when it is the prefix and the client id, else ``None``."""
    if rule.parts == ("global",):
        return rule.prefix + "*"
    if rule.parts == ("client",):
        return ""
    return None


class Tier:
    """A plan's rules at one client tier: what each request's checks are made of, and the header bytes."""

    __slots__ = ("allowed", "headers", "keys_believed", "parts", "rules", "split")

    def __init__(
        self,
        rules: tuple[CompiledRule, ...],
        tier: str | None,
        *,
        draft: bool,
        legacy: bool,
        keys_believed: bool = False,
        client: str | None = None,
    ) -> None:
        """``client``: a client with limits of its own (``clients.keys[].limits``) for some rules."""
        self.rules = rules
        #: Whether a rule enforces only a share of clients (each request's checks then depend on its client).
        self.split = any(rule.percent is not None for rule in rules)
        #: Whether any API key is believed (see :func:`bastion.enforcement.enforcement_id`).
        self.keys_believed = keys_believed
        limits = [
            (rule.clients.get(client) if client is not None else None) or rule.limit_for(tier)
            for rule in rules
        ]
        #: Per rule: the rule, its key plan (see :func:`_key_plan`), limit, cost and shadow flag.
        self.parts: tuple[tuple[CompiledRule, str | None, Limit, int, bool], ...] = tuple(
            (rule, _key_plan(rule), limit, rule.cost, rule.shadow)
            for rule, limit in zip(rules, limits, strict=True)
        )
        #: The headers of every decision on these rules.
        self.headers = HeaderSet(
            [rule.name for rule in rules], limits, [rule.cost for rule in rules], draft=draft, legacy=legacy
        )
        #: The guard's counting slots of each rule's ``allowed`` outcome, once looked up.
        self.allowed: tuple[int, ...] = ()

    def checks(self, scope: Scope, ctx: RequestContext) -> list[Check]:
        """The store checks of one request (its client already identified)."""
        client_id = ctx.client_id
        checks = []
        for rule, key, limit, cost, shadow in self.parts:
            if key is None or (not key and not client_id):
                route = ctx.route if ctx.route is not None else scope["path"]
                key = rule.key_for(scope["method"], route, ctx, scope)
            elif not key:
                key = rule.prefix + client_id  # type: ignore[operator]  # checked above
            checks.append(_new(Check, (key, limit, cost, shadow)))
        if self.split:
            # (Apart from the loop above, so that rules that enforce every client pay nothing for it.)
            bucket = self.bucket(ctx)
            checks = [
                check._replace(shadow=rule.shadows(bucket)) if rule.percent is not None else check
                for check, rule in zip(checks, self.rules, strict=True)
            ]
        return checks

    def bucket(self, ctx: RequestContext) -> int:
        """The request's client bucket, which says who the rules with ``enforce_percent`` enforce."""
        return client_bucket(enforcement_id(ctx, self.keys_believed))


class Plan:
    """The rules that apply to one ``(method, route)``, found once and reused."""

    __slots__ = (
        "concurrency",
        "deferred",
        "draft",
        "keys_believed",
        "legacy",
        "made",
        "needs_id",
        "overridden",
        "rules",
        "throttles",
        "tiers",
        "unverified",
        "watching",
    )

    def __init__(
        self, rules: tuple[CompiledRule, ...], *, draft: bool, legacy: bool, keys_believed: bool = False
    ) -> None:
        self.rules = rules
        self.draft = draft
        self.legacy = legacy
        self.keys_believed = keys_believed
        #: Whether a rule may decide in shadow mode (``mode: shadow`` or ``enforce_percent``).
        self.watching = any(rule.watches for rule in rules)
        #: Whether a rule holds slots until the response ends.
        self.concurrency = any(rule.concurrency for rule in rules)
        #: Whether a rule may make a request wait for its slot (``throttle``).
        self.throttles = any(rule.throttles for rule in rules)
        #: Whether a decision may need awaiting after it is made (slots held, or a wait).
        self.deferred = self.concurrency or self.throttles
        #: The clients with a limit of their own for some of these rules.
        self.overridden = frozenset(client for rule in rules for client in rule.clients)
        #: Whether the store needs the request named: concurrency leases and sliding-log entries.
        self.needs_id = any(rule.default.algorithm in (CONCURRENCY, SLIDING_LOG) for rule in rules)
        #: tier -> its :class:`Tier` (see :meth:`tier`); left empty when some client has
        #: limits of its own, so that every request of the plan goes through :meth:`tier`.
        self.tiers: dict[str | None, Tier] = {}
        #: Every :class:`Tier` made: by tier, and by ``(tier, client)`` for a client with its own limits.
        self.made: dict[Any, Tier] = {}
        #: The plan for a client named by an unlisted API key, when any key is believed: these
        #: rules plus each per-client rule's per-IP companion (see :func:`by_ip`). ``None``
        #: when no rule counts per client, or when keys are listed.
        self.unverified: Plan | None = None

    def for_client(self, client_id: str) -> Plan:
        """The plan for the identified client: :attr:`unverified` for a key-named one, if set."""
        unverified = self.unverified
        if unverified is not None and client_id.startswith(KEY_ID_PREFIX):
            return unverified
        return self

    def tier(self, tier: str | None, client: str | None = None) -> Tier:
        """The rules at ``tier`` for ``client`` (made once per tier, or per tier and client
        for a client with limits of its own among these rules)."""
        own = client if client is not None and client in self.overridden else None
        key: Any = tier if own is None else (tier, own)
        found = self.made.get(key)
        if found is None:
            found = self.made[key] = Tier(
                self.rules,
                tier,
                draft=self.draft,
                legacy=self.legacy,
                keys_believed=self.keys_believed,
                client=own,
            )
            if not self.overridden:
                self.tiers[tier] = found
        return found


class Plans:
    """Every route's :class:`Plan`, made on first use.

    ``headers`` is the ``rate_limits.headers`` setting; ``unverified_keys`` whether any
    API key is believed, so that key-named clients also count per IP.
    """

    def __init__(
        self,
        rules: list[CompiledRule],
        operation_rules: dict[tuple[str, str], CompiledRule],
        *,
        headers: str,
        unverified_keys: bool,
    ) -> None:
        self.rules = rules
        self.operation_rules = operation_rules
        self.draft = headers in ("both", "draft")
        self.legacy = headers in ("both", "legacy")
        self.unverified_keys = unverified_keys
        self.plans: dict[tuple[str, str], Plan] = {}
        self.path_plans = 0

    def find(self, scope: Scope, ctx: RequestContext) -> Plan:
        """The plan of a request: by its route template, or by its raw path when it has none."""
        method: str = scope["method"]
        route = ctx.route
        if route is not None:
            return self.plans.get((method, route)) or self.plan(method, route, ctx.operation)
        path: str = scope["path"]
        plan = self.plans.get((method, path))
        if plan is None:
            plan = self.plan(method, path, ctx.operation)
            if self.path_plans >= _MAX_PATH_PLANS:
                del self.plans[(method, path)]
            else:
                self.path_plans += 1
        return plan

    def plan(self, method: str, route: str, operation: Any) -> Plan:
        """The plan for ``method route``, made once per pair."""
        found = self.plans.get((method, route))
        if found is not None:
            return found
        rules = [rule for rule in self.rules if rule.applies(method, route)]
        op_rule = self.operation_rules.get((method, route))
        if op_rule is None and operation is not None:
            extensions = getattr(operation, "extensions", None)
            value = extensions.get(OPERATION_EXTENSION) if isinstance(extensions, dict) else None
            if value is not None:
                op_rule = self.operation_rules[(method, route)] = operation_rule(method, route, value)
        if op_rule is not None:
            rules.append(op_rule)
        believed = self.unverified_keys
        plan = Plan(tuple(rules), draft=self.draft, legacy=self.legacy, keys_believed=believed)
        if believed:
            companions = tuple(c for c in map(by_ip, rules) if c is not None)
            if companions:
                plan.unverified = Plan(
                    (*rules, *companions), draft=self.draft, legacy=self.legacy, keys_believed=believed
                )
        self.plans[(method, route)] = plan
        return plan
