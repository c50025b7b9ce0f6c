"""The rate limit guard: decides every matching rule before any body is read.

It sits after the route guard (which names the route and operation) and before
validation, so a rejected request costs no body read and no schema work. It works
out who the client is (id, IP, tier) only when a rule matches the request. All
rules that match a request are decided in one atomic store call.
Every response a rule matched carries the rate limit headers, through
``ctx.response_headers``; a rejection raises :class:`~bastion.problems.RateLimited`.

One path decides every request: the plan of its route (:mod:`bastion.ratelimit.plans`)
gives the checks, the store decides them (at once when it is ``sync``, else awaited
under the :class:`~bastion.stores.StorePolicy`), and :meth:`RateLimitGuard._conclude`
writes the headers and counts of whatever was decided.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from typing import TYPE_CHECKING, Any

from bastion.asgi import SCOPE_KEY, ASGIApp, Message, Receive, RequestContext, Scope, Send
from bastion.clients import ClientIdentifier
from bastion.config import ClientsConfig
from bastion.config.ratelimit import RateLimitsConfig
from bastion.enforcement import ShadowRefusals, error_reason
from bastion.observability.metrics import Tally
from bastion.problems import DependencyUnavailable, RateLimited
from bastion.ratelimit.algorithms import US_PER_SECOND, Verdict, retry_after_seconds
from bastion.ratelimit.observed import RateObservations
from bastion.ratelimit.plans import Plan, Plans, Tier
from bastion.ratelimit.rules import CompiledRule, compile_rule, operation_extensions, operation_rule
from bastion.ratelimit.stores import Check, Decision, RateLimitStore, open_store
from bastion.ratelimit.waiting import wait_for_slot
from bastion.stores import StorePolicy

if TYPE_CHECKING:
    from prometheus_client import Histogram

    from bastion.observability.metrics import Metrics
    from bastion.protocols import GuardContext

#: Buckets of ``bastion_ratelimit_queued_seconds``: waits run from a few milliseconds to ``max_delay``.
QUEUED_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class RateLimitGuard:
    """Applies the configured rate limit rules to each request.

    ``policy`` is what a failing store means (default: that of the default
    ``rate_limits`` settings); ``headers`` the ``rate_limits.headers`` setting.
    """

    def __init__(
        self,
        app: ASGIApp,
        rules: list[CompiledRule],
        store: RateLimitStore,
        *,
        operation_rules: dict[tuple[str, str], CompiledRule] | None = None,
        policy: StorePolicy | None = None,
        headers: str = "both",
        logger: Any = None,
        metrics: Metrics | None = None,
        clients: ClientIdentifier | None = None,
        observed: RateObservations | None = None,
    ) -> None:
        self.app = app
        #: Each client's peak rate per rule and tier, for ``bastion limits suggest``.
        self.observed = observed if observed is not None else RateObservations()
        #: Identifies the client when a rule needs it (default: the default ``clients`` settings).
        self.clients = clients if clients is not None else ClientIdentifier(ClientsConfig())
        self.store = store
        #: Whether the store decides without I/O (``decide_now``).
        self.sync = store.sync
        #: Timeout, circuit breaker and open/closed, as for the idempotency store.
        self.policy = policy if policy is not None else StorePolicy.from_settings(RateLimitsConfig())
        self.plans = Plans(
            rules,
            dict(operation_rules or {}),
            headers=headers,
            unverified_keys=self.clients.believes_any_key,
        )
        self.logger = logger
        #: Counts refusals decided in shadow mode and names them to the application.
        self.shadow_refusals = ShadowRefusals("rate_limit", metrics)
        self._ids = itertools.count()
        self._id_prefix = os.urandom(6).hex() + "-"
        #: Decisions by ``(rule, outcome)`` and failed store calls (``None`` without metrics).
        self.decisions: Tally | None = None
        self.store_errors: Tally | None = None
        #: Where the histogram of waits is made, on the first wait (``None`` without metrics).
        self.metrics = metrics
        if metrics is not None:
            self.decisions = metrics.tally(
                "bastion_rate_limit_decisions_total",
                "Rate limit decisions by rule and outcome (allowed, limited, shadow_limited).",
                ["rule", "outcome"],
            )
            self.store_errors = metrics.tally(
                "bastion_store_errors_total",
                "Store calls that failed, by store and operation.",
                ["store", "operation"],
            )

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Decide the request here when nothing needs waiting for; ``False`` leaves it to ``__call__``.

        Decided here: a request no rule matches, and, on a ``sync`` store, one whose
        rules hold no slots for the length of the response. A rejection raises its
        problem. ``False`` means nothing was decided yet.
        """
        plans = self.plans
        plan = plans.find(scope, ctx)
        if not plan.rules:
            return True
        if not self.sync or plan.deferred:
            return False
        tier, checks, request_id = self._checks(plan, scope, ctx)
        self._decide_now(tier, checks, request_id, ctx)
        if plan.watching:
            self.shadow_refusals.mark(scope, ctx)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        plans = self.plans
        plan = plans.find(scope, ctx)
        if plan.rules:
            tier, checks, request_id = self._checks(plan, scope, ctx)
            decision = await self._decide(tier, checks, request_id, ctx)
            if plan.watching:
                self.shadow_refusals.mark(scope, ctx)
            if decision is not None and plan.deferred:
                await self._deferred(plan, tier, checks, request_id, decision, scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _deferred(
        self,
        plan: Plan,
        tier: Tier,
        checks: list[Check],
        request_id: str,
        decision: Decision,
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> None:
        """Run an admitted request that waits for its slot first, or holds slots while it runs."""
        ctx: RequestContext = scope[SCOPE_KEY]
        waiting = None
        if plan.throttles:
            # The wait is the longest of the enforced rules' (a shadow decision never delays).
            delay_us = 0
            slowest = 0
            for i, (check, verdict) in enumerate(zip(checks, decision[1], strict=True)):
                if verdict[0] and not check[3] and verdict[4] > delay_us:
                    delay_us = verdict[4]
                    slowest = i
            if delay_us:
                ctx.log["rate_limit_queued_ms"] = round(delay_us / 1000, 3)
                waiting = await wait_for_slot(
                    delay_us / US_PER_SECOND, receive, lambda: self._give_back(checks, request_id, decision)
                )
                if waiting is None:
                    ctx.log["rate_limit"] = "client_gone_while_queued"
                    return  # nobody is left to answer, and the slot went back
                queued = self._queued()
                if queued is not None:
                    queued.labels(tier.rules[slowest].name).observe(delay_us / US_PER_SECOND)
                receive = waiting.receive
        try:
            if plan.concurrency:
                await self._hold(checks, request_id, scope, receive, send)
            else:
                await self.app(scope, receive, send)
        finally:
            if waiting is not None:
                waiting.close()

    def _queued(self) -> Histogram | None:
        """How long requests waited for their slot, by the rule that made them wait.

        Made on the first wait, so that a service without ``throttle`` exposes no empty family.
        """
        if self.metrics is None:
            return None
        return self.metrics.histogram(
            "bastion_ratelimit_queued_seconds",
            "Time rate limited requests waited for their slot (rules with throttle), by rule.",
            ["rule"],
            QUEUED_BUCKETS,
        )

    async def _give_back(self, checks: list[Check], request_id: str, decision: Decision) -> None:
        """Return the slots of an admission whose request never ran (its client left while it waited)."""
        give_back = getattr(self.store, "give_back", None)
        if give_back is None:
            return  # a store from before give-backs: its slot lapses with time
        try:
            await give_back(checks, request_id, decision)
        except Exception as exc:
            # The slot lapses with time, as if the request had run.
            self._store_error("give_back", exc)

    def _checks(self, plan: Plan, scope: Scope, ctx: RequestContext) -> tuple[Tier, list[Check], str]:
        """The request's rules at its client's tier, their store checks, and the request's id."""
        self.clients.fill(scope, ctx)
        if plan.unverified is not None:
            plan = plan.for_client(ctx.client_id)  # type: ignore[arg-type]  # filled above
        # (A plan with per-client limits keeps ``tiers`` empty: its requests all take ``tier()``.)
        tier = plan.tiers.get(ctx.tier) or plan.tier(ctx.tier, ctx.client_id)
        # Concurrency leases and sliding-log entries are named after the request.
        request_id = self._id_prefix + str(next(self._ids)) if plan.needs_id else ""
        return tier, tier.checks(scope, ctx), request_id

    def _decide_now(
        self, tier: Tier, checks: list[Check], request_id: str, ctx: RequestContext
    ) -> Decision | None:
        """Decide on a ``sync`` store, then conclude."""
        return self._conclude(tier, ctx, self.store.decide_now(checks, request_id))

    async def _decide(
        self, tier: Tier, checks: list[Check], request_id: str, ctx: RequestContext
    ) -> Decision | None:
        """Decide on any store, then conclude; ``None`` when the store did not answer (and failing open)."""
        if self.sync:
            return self._decide_now(tier, checks, request_id, ctx)
        decision = None
        policy = self.policy
        if policy.allow():
            try:
                decision = await policy.call(self.store.decide(checks, request_id))
            except Exception as exc:
                self._store_error("decide", exc)
        return self._conclude(tier, ctx, decision)

    def _conclude(self, tier: Tier, ctx: RequestContext, decision: Decision | None) -> Decision | None:
        """Headers, counts and log fields for any decision, returned; raises when the request is refused.

        ``None`` (the store did not answer) answers by the policy: ``503`` when closed,
        else ``None`` and the request goes on unprotected.
        """
        self.observed.record(tier, ctx)
        if decision is None:
            ctx.log["rate_limit"] = "store_unavailable"
            if self.policy.fail_closed:
                raise DependencyUnavailable(
                    "the rate limit store is unreachable; try again shortly",
                    headers={"Retry-After": self.policy.retry_after()},
                )
            return None
        admitted, verdicts, _ = decision
        ctx.response_headers += tier.headers.render(verdicts, admitted)
        tally = self.decisions
        if admitted and tally is not None:
            allowed = tier.allowed
            if not allowed:
                allowed = tier.allowed = tuple(tally.slot(rule.name, "allowed") for rule in tier.rules)
            # (Not zip(..., strict=True): a call with a keyword costs more than the loop.)
            for i, verdict in enumerate(verdicts):
                if verdict[0]:
                    tally.add(allowed[i])
        for verdict in verdicts:
            if not verdict[0]:
                # A rule said no: the request is refused unless only rules in shadow mode did.
                self._refused(tier, ctx, verdicts, admitted)
                break
        return decision

    def _refused(self, tier: Tier, ctx: RequestContext, verdicts: list[Verdict], admitted: bool) -> None:
        """Counts and log fields of the rules that said no; raises unless the request is admitted."""
        tally = self.decisions
        limited: list[str] = []
        retry_us = 0
        # The client's bucket, when a rule enforces only some clients (else unused).
        bucket = tier.bucket(ctx) if tier.split else 0
        for rule, verdict in zip(tier.rules, verdicts, strict=True):
            if verdict[0]:
                continue
            if rule.shadows(bucket):
                if tally is not None:
                    tally.count(rule.name, "shadow_limited")
                self.shadow_refusals.count(RateLimited.code_default, ctx)
                ctx.log.setdefault("rate_limit_shadow", []).append(rule.name)
                if self.logger is not None:
                    self.logger.info(
                        "rate limit exceeded in shadow mode", rule=rule.name, client=ctx.client_id
                    )
            else:
                if tally is not None:
                    tally.count(rule.name, "limited")
                limited.append(rule.name)
                retry_us = max(retry_us, verdict[4])
        if not admitted:
            seconds = retry_after_seconds(retry_us)
            ctx.log["rate_limited"] = limited
            raise RateLimited(
                f"rate limit {', '.join(limited)} exceeded; retry in {seconds} s",
                headers={"Retry-After": str(seconds)},
                extensions={"policies": limited},
            )

    def _store_error(self, operation: str, exc: BaseException) -> None:
        if self.store_errors is not None:
            self.store_errors.count(self.store.name, operation)
        # A failed decide has been counted by the policy: log the first failure and the one
        # that opened the breaker.
        breaker = self.policy.breaker
        opened = operation == "decide" and breaker.state == "open" and breaker.failures == breaker.threshold
        if self.logger is not None and (opened or breaker.failures <= 1):
            self.logger.warning(
                "rate limit store failed",
                store=self.store.name,
                operation=operation,
                error=type(exc).__name__,
                breaker=breaker.state,
                policy="closed" if self.policy.fail_closed else "open",
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


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The rate limit guard for the configuration, or ``None`` when no rule could ever apply."""
    from bastion.config import ConfigError

    config = ctx.config
    section = config.rate_limits
    if not section.enabled:
        return None
    # Each rule's per-client limits, by client id (keys of one name are one client).
    own: dict[str, dict[str, Any]] = {}
    holders = ctx.clients.keys or {}
    for key in config.clients.known_keys() or ():
        for name, rate in key.limits.items():
            own.setdefault(name, {})[holders[key.sha256].id] = rate
    rules = [compile_rule(rule, clients=own.get(rule.name)) for rule in section.rules]
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
            problems.append((where, error_reason(exc)))
    if problems:
        raise ConfigError(problems, config.openapi or "openapi")
    # Kept across reloads (counters, pools) while what shapes the store is unchanged.
    shape = (section.store or config.store, section.key_prefix, section.timeout.ms)
    store = ctx.shared(("rate_limits", *shape), lambda: open_store(config, ctx.logger))
    # One record for the process: observations outlive a reload (such as one applying a suggestion).
    observed = ctx.shared(("rate_limits", "observed"), RateObservations)
    return RateLimitGuard(
        app,
        rules,
        store,
        clients=ctx.clients,
        operation_rules=operation_rules,
        policy=StorePolicy.from_settings(section),
        headers=section.headers,
        logger=ctx.logger,
        metrics=ctx.metrics,
        observed=observed,
    )
