"""The rate limit guard: decides every matching rule before any body is read.

It sits after the route guard (which names the route and operation) and before
validation, so a rejected request costs no body read and no schema work. It works
out who the client is (id, IP, tier) only when a rule matches the request. All
rules that match a request are decided in one atomic store call.
Every response a rule matched carries the rate limit headers, through
``ctx.response_headers``; a rejection raises :class:`~bastion.problems.RateLimited`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from bastion.asgi import SCOPE_KEY, ASGIApp, Message, Receive, RequestContext, Scope, Send
from bastion.clients import KEY_ID_PREFIX, ClientIdentifier
from bastion.config import ClientsConfig
from bastion.observability.metrics import PendingCounts
from bastion.problems import DependencyUnavailable, RateLimited
from bastion.ratelimit.algorithms import CONCURRENCY, SLIDING_LOG, Limit, Verdict, retry_after_seconds
from bastion.ratelimit.headers import legacy_headers, policy_header, ratelimit_header
from bastion.ratelimit.rules import (
    OPERATION_EXTENSION,
    CompiledRule,
    by_ip,
    compile_rule,
    operation_extensions,
    operation_rule,
)
from bastion.ratelimit.stores import Check, CircuitBreaker, Decision, RateLimitStore, open_store
from bastion.ratelimit.stores.memory import SIMPLE_ALGORITHMS, MemoryStore, RawVerdict
from bastion.stores import StorePolicy

if TYPE_CHECKING:
    from bastion.protocols import GuardContext

_new = tuple.__new__

# Plans for requests without a route template are cached by raw path, up to this many.
_MAX_PATH_PLANS = 4096


class Plan:
    """The rules that apply to one ``(method, route)``, found once and reused."""

    __slots__ = (
        "allowed",
        "concurrency",
        "fast",
        "keys",
        "names",
        "needs_id",
        "policies",
        "rules",
        "single",
        "template",
        "tiers",
        "unverified",
    )

    def __init__(self, rules: tuple[CompiledRule, ...]) -> None:
        self.rules = rules
        self.names = [rule.name for rule in rules]
        self.concurrency = any(rule.concurrency for rule in rules)
        # Concurrency leases and sliding-log entries are named after the request.
        self.needs_id = any(rule.default.algorithm in (CONCURRENCY, SLIDING_LOG) for rule in rules)
        #: Every rule's state is a single value (no leases, no logs): the short paths apply.
        self.fast = bool(rules) and all(_simple(rule) for rule in rules)
        #: One such rule: the memory store decides it without the atomic multi-rule step.
        self.single = self.fast and len(rules) == 1
        #: The ``RateLimit`` value with each rule's ``r`` and ``t`` left to fill in (fast plans).
        self.template = ", ".join(
            f'"{name}";r=%d;t=%d' for name in (n.replace("%", "%%") for n in self.names)
        )
        #: Per rule: its store key when constant, ``""`` when it is the rule's prefix and the
        #: client id, ``None`` when :meth:`CompiledRule.key_for` works it out.
        self.keys = tuple(_key_plan(rule) for rule in rules)
        #: tier -> the ``RateLimit-Policy`` value, which depends only on the limits.
        self.policies: dict[str | None, bytes] = {}
        #: tier -> what a fast plan needs for it (see :meth:`tier`).
        self.tiers: dict[str | None, Tier] = {}
        #: The :class:`PendingDecisions` slots of each rule's ``allowed`` outcome, once looked up.
        self.allowed: tuple[int, ...] | None = None
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

    def policy_header(self, tier: str | None, limits: list[Limit]) -> bytes:
        """The ``RateLimit-Policy`` value for ``tier`` (computed once per tier)."""
        found = self.policies.get(tier)
        if found is None:
            members = [rule.policies[limit] for rule, limit in zip(self.rules, limits, strict=True)]
            found = self.policies[tier] = policy_header(members)
        return found

    def tier(self, tier: str | None) -> Tier:
        """The limits of ``tier`` with their constant header bytes (computed once per tier)."""
        found = self.tiers.get(tier)
        if found is None:
            limits = [rule.limit_for(tier) for rule in self.rules]
            policy = self.policy_header(tier, limits)
            checks = tuple(
                (rule, key, limit, rule.cost, rule.shadow)
                for rule, key, limit in zip(self.rules, self.keys, limits, strict=True)
            )
            found = self.tiers[tier] = Tier(
                limits, policy, tuple(b"%d" % limit.quota for limit in limits), self.template.encode(), checks
            )
        return found


class Tier:
    """A fast plan's limits for one tier and the header bytes that depend only on them."""

    __slots__ = ("checks", "limits", "policy", "quotas", "template")

    def __init__(
        self,
        limits: list[Limit],
        policy: bytes,
        quotas: tuple[bytes, ...],
        template: bytes,
        checks: tuple[tuple[CompiledRule, str | None, Limit, int, bool], ...],
    ) -> None:
        self.limits = limits
        #: Per rule: the rule, its key plan (see :attr:`Plan.keys`), limit, cost and shadow flag.
        self.checks = checks
        #: The ``RateLimit-Policy`` value.
        self.policy = policy
        #: Each rule's quota as ``X-RateLimit-Limit`` bytes.
        self.quotas = quotas
        #: The ``RateLimit`` value to fill with each rule's remaining quota and reset seconds.
        self.template = template


def _simple(rule: CompiledRule) -> bool:
    return rule.default.algorithm in SIMPLE_ALGORITHMS and all(
        limit.algorithm in SIMPLE_ALGORITHMS for limit in rule.tiers.values()
    )


def _key_plan(rule: CompiledRule) -> str | None:
    if rule.parts == ("global",):
        return rule.prefix + "*"
    if rule.parts == ("client",):
        return ""
    return None


class PendingDecisions(PendingCounts):
    """Decision counts by ``(rule, outcome)``, each given a small integer slot on first use.

    A request counts a decision per matching rule: kept as integers and moved into
    the counter when it is collected (see :class:`PendingCounts`). Not ``deferred``
    (multiprocess mode), every count goes to the counter at once.
    """

    def __init__(self, counter: Any, *, deferred: bool) -> None:
        super().__init__()
        self.counter = counter
        self.deferred = deferred
        #: ``(rule, outcome)`` -> its key in :attr:`counts` and :attr:`children`.
        self.slots: dict[tuple[str, str], int] = {}

    def slot(self, rule: str, outcome: str) -> int:
        """The slot of ``(rule, outcome)``, its counter child created on first use."""
        found = self.slots.get((rule, outcome))
        if found is None:
            found = len(self.slots)
            self.children[found] = self.counter.labels(rule, outcome)
            self.counts[found] = 0
            self.slots[(rule, outcome)] = found
        return found

    def count(self, slot: int) -> None:
        """One decision."""
        if self.deferred:
            self.counts[slot] += 1
        else:
            self.children[slot].inc()


class RateLimitGuard:
    """Applies the configured rate limit rules to each request."""

    def __init__(
        self,
        app: ASGIApp,
        rules: list[CompiledRule],
        store: RateLimitStore,
        *,
        operation_rules: dict[tuple[str, str], CompiledRule] | None = None,
        on_store_error: str = "open",
        timeout_s: float = 0.05,
        breaker: CircuitBreaker | None = None,
        headers: str = "both",
        logger: Any = None,
        metrics: Any = None,
        clients: ClientIdentifier | None = None,
    ) -> None:
        self.app = app
        #: Identifies the client when a rule needs it (default: the default ``clients`` settings).
        self.clients = clients if clients is not None else ClientIdentifier(ClientsConfig())
        self.rules = rules
        self.store = store
        self.operation_rules = dict(operation_rules or {})
        #: Timeout, circuit breaker and open/closed, as for the idempotency store.
        self.policy = StorePolicy(
            timeout_s=timeout_s,
            fail_closed=on_store_error == "closed",
            breaker=breaker or CircuitBreaker(3, 5.0),
        )
        self.fail_closed = self.policy.fail_closed
        self.breaker = self.policy.breaker
        self.memory = store if isinstance(store, MemoryStore) else None
        self.draft_headers = headers in ("both", "draft")
        self.legacy_headers = headers in ("both", "legacy")
        self.logger = logger
        self._plans: dict[tuple[str, str], Plan] = {}
        self._path_plans = 0
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex() + "-"
        #: Decision counts by ``(rule, outcome)`` (``None`` without metrics).
        self._decisions: PendingDecisions | None = None
        if metrics is not None:
            decisions = metrics.counter(
                "bastion_rate_limit_decisions_total",
                "Rate limit decisions by rule and outcome (allowed, limited, shadow_limited).",
                ["rule", "outcome"],
            )
            # Scrapes in multiprocess mode read every worker's shared files, not this
            # registry: there each decision goes to the counter at once.
            deferred = getattr(metrics, "multiprocess_dir", None) is None
            self._decisions = PendingDecisions(decisions, deferred=deferred)
            if deferred:
                self._decisions.register_before(metrics.registry, decisions)
        self._store_errors = (
            metrics.counter(
                "bastion_store_errors_total",
                "Store operations that failed or timed out, by store and operation.",
                ["store", "operation"],
            )
            if metrics is not None
            else None
        )

    def plan(self, method: str, route: str, operation: Any) -> Plan:
        """The rules for ``method route``, computed once per pair."""
        found = self._plans.get((method, route))
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
        plan = Plan(tuple(rules))
        if self.clients.believes_any_key:
            companions = tuple(c for c in map(by_ip, rules) if c is not None)
            if companions:
                plan.unverified = Plan((*rules, *companions))
        self._plans[(method, route)] = plan
        return plan

    def _count(self, rule: str, outcome: str) -> None:
        decisions = self._decisions
        if decisions is not None:
            decisions.count(decisions.slot(rule, outcome))

    def _store_error(self, operation: str, exc: BaseException) -> None:
        if self._store_errors is not None:
            self._store_errors.labels(self.store.name, operation).inc()
        # A failed decide has been counted by the policy: log the first failure and the one
        # that opened the breaker.
        breaker = self.breaker
        opened = operation == "decide" and breaker.state == "open" and breaker.failures == breaker.threshold
        if self.logger is not None and (opened or breaker.failures <= 1):
            self.logger.warning(
                "rate limit store failed",
                store=self.store.name,
                operation=operation,
                error=type(exc).__name__,
                breaker=self.breaker.state,
                policy="closed" if self.fail_closed else "open",
            )

    async def _decide(self, checks: list[Check], request_id: str) -> Decision | None:
        if self.store.sync:
            return self.store.decide_now(checks, request_id)
        policy = self.policy
        if not policy.allow():
            return None
        try:
            return await policy.call(self.store.decide(checks, request_id))
        except Exception as exc:
            self._store_error("decide", exc)
            return None

    def _plan_of(self, scope: Scope, ctx: RequestContext) -> tuple[str, str, Plan]:
        """The request's method, route (or path) and plan."""
        method: str = scope["method"]
        route = ctx.route
        if route is None:
            route = scope["path"]
            plan = self._plans.get((method, route))
            if plan is None:
                plan = self.plan(method, route, ctx.operation)
                if self._path_plans >= _MAX_PATH_PLANS:
                    del self._plans[(method, route)]
                else:
                    self._path_plans += 1
        else:
            plan = self._plans.get((method, route)) or self.plan(method, route, ctx.operation)
        return method, route, plan

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Decide the request here when nothing needs waiting for; ``False`` leaves it to ``__call__``.

        Decided here, on the memory store: a request no rule matches, and one whose rules
        each keep a single value (the usual case). A rejection raises its problem.
        ``False`` means nothing was decided yet (always, on a store that is waited for).
        """
        memory = self.memory
        if memory is None:
            return False
        method, route, plan = self._plan_of(scope, ctx)
        if not plan.rules:
            return True
        if not plan.fast:
            return False
        self._decide_in_memory(memory, method, route, plan, scope, ctx)
        return True

    def _decide_in_memory(
        self, memory: MemoryStore, method: str, route: str, plan: Plan, scope: Scope, ctx: RequestContext
    ) -> None:
        """Decide a fast plan on the memory store: headers and counts, or the rejection raised."""
        self.clients.fill(scope, ctx)
        tier = ctx.tier
        client_id = ctx.client_id
        if plan.unverified is not None:
            plan = plan.for_client(client_id)  # type: ignore[arg-type]  # filled above
        # Rules whose state is one value each, on the memory store (the usual case).
        found = plan.tiers.get(tier)
        if found is None:
            found = plan.tier(tier)
        if plan.single:
            # One rule: no atomic multi-rule step to take.
            rule, key, limit, cost, shadow = found.checks[0]
            if key is None or (not key and not client_id):
                key = rule.key_for(method, route, ctx, scope)
            elif not key:
                key = rule.prefix + client_id  # type: ignore[operator]
            verdict = memory.hit(key, limit, cost)
            if verdict[0]:
                self._admitted(plan, found, ctx, [verdict])
                return
            checks = [_new(Check, (key, limit, cost, shadow))]
            verdicts = [verdict]
            admitted = shadow
        else:
            # Plain tuples, in Check's field order: the rare rejection makes Checks of them.
            simple = []
            for rule, key, limit, cost, shadow in found.checks:
                if key is None or (not key and not client_id):
                    key = rule.key_for(method, route, ctx, scope)
                elif not key:
                    key = rule.prefix + client_id  # type: ignore[operator]
                simple.append((key, limit, cost, shadow))
            # decide_now's own path for such rules, without its look at the algorithms.
            admitted, raw, unanimous = memory._decide_simple(simple)
            if unanimous:
                self._admitted(plan, found, ctx, raw)
                return
            checks = [_new(Check, check) for check in simple]
            verdicts = [_new(Verdict, verdict) for verdict in raw]
        # A rule said no: the general report, which raises unless every refusing rule is in shadow mode.
        self._conclude(plan, tier, ctx, checks, found.limits, verdicts, admitted)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        method, route, plan = self._plan_of(scope, ctx)
        if not plan.rules:
            await self.app(scope, receive, send)
            return
        if self.memory is not None and plan.fast:
            self._decide_in_memory(self.memory, method, route, plan, scope, ctx)
            await self.app(scope, receive, send)
            return
        self.clients.fill(scope, ctx)
        plan = plan.for_client(ctx.client_id)  # type: ignore[arg-type]  # filled above
        rules = plan.rules
        tier = ctx.tier
        checks = []
        limits = []
        for rule in rules:
            limit = rule.tiers.get(tier, rule.default) if rule.tiers and tier is not None else rule.default
            limits.append(limit)
            checks.append(
                _new(Check, (rule.key_for(method, route, ctx, scope), limit, rule.cost, rule.shadow))
            )
        request_id = self._id_prefix + str(next(self._ids)) if plan.needs_id else ""
        if self.store.sync:
            decision_: Decision | None = self.store.decide_now(checks, request_id)
        else:
            decision_ = await self._decide(checks, request_id)
        if decision_ is None:
            self._unavailable(ctx)
            await self.app(scope, receive, send)
            return
        self._conclude(plan, tier, ctx, checks, limits, decision_.verdicts, decision_.admitted)
        if plan.concurrency:
            await self._hold(checks, request_id, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def _admitted(self, plan: Plan, found: Tier, ctx: RequestContext, verdicts: Sequence[RawVerdict]) -> None:
        """Headers and counts for a request every rule of a fast plan allowed, from constant bytes.

        The same bytes as :meth:`_conclude` writes (the tests hold the two to that).
        """
        if len(verdicts) == 1:
            tightest = verdicts[0]
            i = 0
            reset_us = tightest[3]
            reset = -(-reset_us // 1_000_000) if reset_us > 0 else 0
            ratelimit = found.template % (tightest[2], reset)
        elif len(verdicts) == 2:
            # Two rules (a global and a per-client one, say): the loop below, unrolled.
            tightest, second = verdicts
            remaining = tightest[2]
            reset_us = tightest[3]
            other = second[2]
            other_us = second[3]
            reset = -(-reset_us // 1_000_000) if reset_us > 0 else 0
            other_reset = -(-other_us // 1_000_000) if other_us > 0 else 0
            ratelimit = found.template % (remaining, reset, other, other_reset)
            i = 0
            if other < remaining or (other == remaining and other_us > reset_us):
                tightest = second
                i = 1
                reset = other_reset
        else:
            values: list[int] = []
            tightest = verdicts[0]
            i = 0
            for j, verdict in enumerate(verdicts):
                remaining = verdict[2]
                reset_us = verdict[3]
                values += (remaining, -(-reset_us // 1_000_000) if reset_us > 0 else 0)
                # The legacy trio describes the rule with the least quota left (the later reset on a tie).
                if remaining < tightest[2] or (remaining == tightest[2] and reset_us > tightest[3]):
                    tightest = verdict
                    i = j
            ratelimit = found.template % tuple(values)
            reset = values[2 * i + 1]
        if self.draft_headers:
            if self.legacy_headers:
                ctx.response_headers += (
                    (b"ratelimit-policy", found.policy),
                    (b"ratelimit", ratelimit),
                    (b"x-ratelimit-limit", found.quotas[i]),
                    (b"x-ratelimit-remaining", b"%d" % tightest[2]),
                    (b"x-ratelimit-reset", b"%d" % reset),
                )
            else:
                ctx.response_headers += ((b"ratelimit-policy", found.policy), (b"ratelimit", ratelimit))
        elif self.legacy_headers:
            ctx.response_headers += (
                (b"x-ratelimit-limit", found.quotas[i]),
                (b"x-ratelimit-remaining", b"%d" % tightest[2]),
                (b"x-ratelimit-reset", b"%d" % reset),
            )
        decisions = self._decisions
        if decisions is not None:
            slots = plan.allowed
            if slots is None:
                slots = plan.allowed = tuple(decisions.slot(rule.name, "allowed") for rule in plan.rules)
            if decisions.deferred:
                counts = decisions.counts
                for slot in slots:
                    counts[slot] += 1
            else:
                for slot in slots:
                    decisions.count(slot)

    def _conclude(
        self,
        plan: Plan,
        tier: str | None,
        ctx: RequestContext,
        checks: list[Check],
        limits: list[Limit],
        verdicts: list[Verdict],
        admitted: bool,
    ) -> None:
        """Headers, counts and log fields for a decided request; raises when it is rejected."""
        if not admitted:
            # Rules that would have admitted the request report the quota it did not consume.
            verdicts = [
                v if not v.allowed else v._replace(remaining=v.remaining + c.cost)
                for v, c in zip(verdicts, checks, strict=True)
            ]
        headers = ctx.response_headers
        if self.draft_headers:
            headers.append((b"ratelimit-policy", plan.policy_header(tier, limits)))
            headers.append((b"ratelimit", ratelimit_header(plan.names, limits, verdicts)))
        if self.legacy_headers:
            headers.extend(legacy_headers(limits, verdicts))
        limited: list[str] = []
        retry_us = 0
        for rule, verdict in zip(plan.rules, verdicts, strict=True):
            if verdict.allowed:
                # A rule whose "yes" was overruled by another rule let nothing through.
                if admitted:
                    self._count(rule.name, "allowed")
            elif rule.shadow:
                self._count(rule.name, "shadow_limited")
                ctx.log.setdefault("rate_limit_shadow", []).append(rule.name)
                if self.logger is not None:
                    self.logger.info(
                        "rate limit exceeded in shadow mode", rule=rule.name, client=ctx.client_id
                    )
            else:
                self._count(rule.name, "limited")
                limited.append(rule.name)
                retry_us = max(retry_us, verdict.retry_us)
        if not admitted:
            seconds = retry_after_seconds(retry_us)
            ctx.log["rate_limited"] = limited
            raise RateLimited(
                f"rate limit {', '.join(limited)} exceeded; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
                extensions={"policies": limited},
            )

    def _unavailable(self, ctx: RequestContext) -> None:
        ctx.log["rate_limit"] = "store_unavailable"
        if self.fail_closed:
            raise DependencyUnavailable(
                "the rate limit store is unreachable; try again shortly",
                headers={"Retry-After": self.policy.retry_after()},
            )

    async def _hold(
        self, checks: list[Check], request_id: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Run the app holding concurrency slots; free them when the response ends, however it ends."""
        released = False

        async def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            try:
                await self.store.release(checks, request_id)
            except Exception as exc:
                # The lease frees the slots when it lapses.
                self._store_error("release", exc)

        async def send_then_release(message: Message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                await release()

        try:
            await self.app(scope, receive, send_then_release)
        finally:
            if not released:
                # Shielded so that a cancelled request (client gone) still frees its slots.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(release())


def _reason(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        return "; ".join(str(e.get("msg", "")).removeprefix("Value error, ") for e in errors())
    return str(exc)


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The rate limit guard for the configuration, or ``None`` when no rule could ever apply."""
    from bastion.config import ConfigError

    config = ctx.config
    section = config.rate_limits
    if not section.enabled:
        return None
    rules = [compile_rule(rule) for rule in section.rules]
    api = ctx.description()
    declared = operation_extensions(api.document if api is not None else None)
    if not rules and not declared:
        return None
    operation_rules = {}
    problems: list[tuple[str, str]] = []
    for (method, template), value in declared.items():
        try:
            operation_rules[(method, template)] = operation_rule(method, template, value)
        except (ValueError, TypeError) as exc:
            where = f"paths.{template}.{method.lower()}.x-bastion-rate-limit"
            problems.append((where, _reason(exc)))
    if problems:
        raise ConfigError(problems, config.openapi or "openapi")
    store = open_store(config, ctx.logger)
    ctx.add_resource(store)
    return RateLimitGuard(
        app,
        rules,
        store,
        clients=ctx.clients,
        operation_rules=operation_rules,
        on_store_error=section.on_store_error,
        timeout_s=section.timeout.seconds,
        breaker=CircuitBreaker(section.breaker_failures, section.breaker_cooldown.seconds),
        headers=section.headers,
        logger=ctx.logger,
        metrics=ctx.metrics,
    )
