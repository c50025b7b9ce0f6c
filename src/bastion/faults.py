"""Fault injection: delays and failures on purpose, to see what clients see (docs/faults.md).

The ``faults`` section compiles into a :class:`FaultPlan`. Its :class:`FaultGuard`
runs right after the route and the client are known, before the rate limit: for
each request every matching rule is drawn for (``percent``), and so are the
``Bastion-Fault-*`` headers when ``allow_header_control`` is on. A client-side
fault is injected there (a delay, an ``INJECTED_FAULT`` problem, a dropped
connection, a response cut mid-body); an upstream-side one is left in the scope for
the proxy, which applies it to its call to the upstream
(:func:`~bastion.gateway.upstream_faults.call_upstream`),
after every guard: an upstream abort looks to the client exactly like the upstream
failing. Nothing is added to the chain when no fault is configured.

Dropping a connection needs the gateway's own HTTP protocol
(:class:`~bastion.gateway.cycle.GatewayResponseCycle` takes the ``DROP_MESSAGE``); on
other servers (middleware mode) a drop is answered ``503 INJECTED_FAULT``
(:func:`drop_connection`). The layer lives beside the guards rather than in the
gateway package: the middleware builds it too, and the stack imports it without a
circle through the gateway (which imports the stack).
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bastion.asgi import SCOPE_KEY, ASGIApp, Message, Receive, RequestContext, Scope, Send
from bastion.clients import KEY_ID_PREFIX, ClientIdentifier
from bastion.config.faults import DelayDistribution, FaultRuleConfig, FaultsConfig
from bastion.problems import InjectedFault, render, request_instance
from bastion.units import Duration, parse_duration_ms

if TYPE_CHECKING:
    from bastion.config.model import RoutingConfig
    from bastion.observability.metrics import Tally
    from bastion.protocols import GuardContext

#: Request headers that ask for a fault (with ``faults.allow_header_control``); never sent upstream.
DELAY_HEADER = b"bastion-fault-delay"
ABORT_HEADER = b"bastion-fault-abort"
#: Where the guard leaves the upstream-side fault of a request for the proxy.
FAULT_KEY = "bastion.fault"
#: The ASGI message that asks the gateway's server to close the connection without a response.
DROP_MESSAGE = "bastion.connection.drop"
#: z of the 99th percentile of the standard normal distribution.
_Z99 = 2.3263478740408408
#: The ``detail`` of an injected abort's problem.
_INJECTED = "This failure was injected on purpose (fault injection is on)."
#: The longest delay a request header may ask for.
_MAX_HEADER_DELAY_MS = 300_000


@dataclass(frozen=True, slots=True)
class Fault:
    """What happens to one request on one side: a delay, then perhaps an abort."""

    side: str
    #: Seconds to wait (0: none).
    delay: float = 0.0
    #: ``status``, ``drop`` or ``reset_mid_body``; ``None``: the request goes on after the delay.
    abort: str | None = None
    status: int | None = None
    #: The rules (or ``header``) it comes from, for the log.
    names: tuple[str, ...] = ()

    def kinds(self) -> list[str]:
        """The metric's ``kind`` labels of this fault: ``delay`` and the abort's kind."""
        found = ["delay"] if self.delay > 0 else []
        if self.abort is not None:
            found.append(self.abort)
        return found

    def joined(self, other: Fault) -> Fault:
        """Both faults: their delays add up, the first abort stands."""
        first = self if self.abort is not None else other
        return Fault(
            self.side, self.delay + other.delay, first.abort, first.status, (*self.names, *other.names)
        )


DelayConfig = Duration | DelayDistribution | None


def delay_sampler(delay: DelayConfig) -> Callable[[random.Random], float]:
    """Draws delays in seconds: fixed, uniform between ``min`` and ``max``, or log-normal (p50, p99)."""
    if delay is None:
        return lambda _rng: 0.0
    if isinstance(delay, Duration):
        seconds = delay.seconds
        return lambda _rng: seconds
    if delay.min is not None and delay.max is not None:
        low, high = delay.min.seconds, delay.max.seconds
        return lambda rng: rng.uniform(low, high)
    assert delay.p50 is not None
    assert delay.p99 is not None
    median = delay.p50.seconds
    sigma = math.log(delay.p99.seconds / median) / _Z99
    return lambda rng: median * math.exp(sigma * rng.gauss(0.0, 1.0))


class FaultRule:
    """One compiled rule: whether a request matches it, and the draw."""

    def __init__(self, config: FaultRuleConfig, name: str, routing: RoutingConfig) -> None:
        from bastion.routing import ProtectiveRoutes

        self.name = name
        self.side = config.side
        entries = config.match_entries()
        self.routes = ProtectiveRoutes(entries, routing) if entries else None
        names = config.clients()
        #: Client ids the rule covers: each name as given and as an API key's id.
        self.clients = frozenset(names | {KEY_ID_PREFIX + n for n in names})
        self.header = config.header_pair()
        self.percent = config.percent
        self.delay = delay_sampler(config.delay)
        abort = config.abort
        self.abort: str | None = None
        self.status: int | None = None
        if abort is not None:
            self.status = abort.status
            self.abort = "status" if abort.status is not None else "drop" if abort.drop else "reset_mid_body"

    def matches(self, scope: Scope, ctx: RequestContext, clients: ClientIdentifier) -> bool:
        """Whether the request is one the rule applies to (before the draw)."""
        if self.routes is not None and self.routes.template(scope["method"], scope["path"]) is None:
            return False
        if self.header is not None:
            name, value = self.header
            found = (bytes(v).strip() for k, v in scope["headers"] if k == name)
            if not any(value is None or v == value for v in found):
                return False
        if self.clients:
            clients.fill(scope, ctx)
            if ctx.client_id not in self.clients:
                return False
        return True

    def draw(self, rng: random.Random) -> Fault | None:
        """The fault for one matching request, or ``None`` when the draw spares it."""
        if self.percent < 100 and rng.random() * 100 >= self.percent:
            return None
        return Fault(self.side, self.delay(rng), self.abort, self.status, (self.name,))


def header_faults(headers: Sequence[tuple[bytes, bytes]]) -> list[Fault]:
    """The faults a request asks for by ``Bastion-Fault-Delay`` and ``Bastion-Fault-Abort``.

    A value may start with ``upstream`` (``upstream 2s``, ``upstream 503``); values that
    do not parse ask for nothing.
    """
    found: list[Fault] = []
    for key, raw in headers:
        if key != DELAY_HEADER and key != ABORT_HEADER:
            continue
        side, _, value = bytes(raw).decode("latin-1").strip().lower().rpartition(" ")
        side = side.strip() or "client"
        if side not in ("client", "upstream"):
            continue
        if key == DELAY_HEADER:
            try:
                ms = parse_duration_ms(value)
            except ValueError:
                continue
            found.append(Fault(side, min(ms, _MAX_HEADER_DELAY_MS) / 1000, names=("header",)))
        elif value in ("drop", "reset_mid_body"):
            found.append(Fault(side, abort=value, names=("header",)))
        elif value.isascii() and value.isdigit() and 400 <= int(value) <= 599:
            found.append(Fault(side, abort="status", status=int(value), names=("header",)))
    return found


class FaultPlan:
    """The faults of a configuration, and the draws that pick the requests they hit."""

    def __init__(self, config: FaultsConfig, routing: RoutingConfig, clients: ClientIdentifier) -> None:
        self.rules = tuple(
            FaultRule(rule, rule.name or f"fault-{i}", routing) for i, rule in enumerate(config.rules, 1)
        )
        self.header_control = config.allow_header_control
        self.clients = clients
        self.rng = random.Random(config.seed)

    def choose(self, scope: Scope, ctx: RequestContext) -> tuple[Fault | None, Fault | None]:
        """``(client side, upstream side)`` faults for the request (``None``: none on that side)."""
        chosen: list[Fault] = []
        for rule in self.rules:
            if rule.matches(scope, ctx, self.clients):
                fault = rule.draw(self.rng)
                if fault is not None:
                    chosen.append(fault)
        if self.header_control:
            chosen += header_faults(scope["headers"])
        sides: dict[str, Fault] = {}
        for fault in chosen:
            before = sides.get(fault.side)
            sides[fault.side] = fault if before is None else before.joined(fault)
        return sides.get("client"), sides.get("upstream")


class FaultLog:
    """Counts (``bastion_faults_injected_total{kind,side}``) and logs every injected fault."""

    def __init__(self, logger: Any, tally: Tally | None) -> None:
        self.logger = logger
        self.tally = tally

    def injected(self, fault: Fault, ctx: RequestContext | None, scope: Scope) -> None:
        """Record ``fault`` as injected into the request."""
        kinds = fault.kinds()
        if self.tally is not None:
            for kind in kinds:
                self.tally.add(self.tally.slot(kind, fault.side))
        if ctx is not None:
            ctx.log["fault"] = f"{fault.side}:{'+'.join(kinds)}"
        self.logger.info(
            "fault injected",
            trace_id=ctx.trace_id if ctx is not None else None,
            side=fault.side,
            kinds=kinds,
            delay_ms=round(fault.delay * 1000, 3),
            status=fault.status,
            rules=list(fault.names),
            method=scope["method"],
            path=scope["path"],
        )


class FaultGuard:
    """Draws each request's faults; injects the client side's, and leaves the upstream side's to the proxy."""

    def __init__(self, app: ASGIApp, plan: FaultPlan, log: FaultLog) -> None:
        self.app = app
        self.plan = plan
        self.log = log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        client, upstream = self.plan.choose(scope, ctx)
        if upstream is not None:
            scope[FAULT_KEY] = upstream
        if client is None:
            await self.app(scope, receive, send)
            return
        self.log.injected(client, ctx, scope)
        if client.delay > 0:
            await asyncio.sleep(client.delay)
        if client.abort == "status":
            await _answer(InjectedFault(detail=_INJECTED, status=client.status), scope, ctx, send)
            return
        if client.abort == "drop":
            await drop_connection(send)
            return
        if client.abort == "reset_mid_body":
            await self.app(scope, receive, ResetAfterStart(send))
            return
        await self.app(scope, receive, send)


async def _answer(problem: InjectedFault, scope: Scope, ctx: RequestContext, send: Send) -> None:
    """Send the problem of an injected abort.

    Sent here rather than raised: the boundary logs every raised 5xx as a server
    problem, with its traceback, and an injected fault is none (it is logged as injected).
    """
    instance = request_instance(scope)
    rendered = render(problem, type_base=ctx.type_base, trace_id=ctx.trace_id, instance=instance)
    ctx.problem_code = problem.code
    await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
    await send({"type": "http.response.body", "body": rendered.body, "more_body": False})


async def drop_connection(send: Send, *, started: bool = False) -> None:
    """Close the connection without (more of) a response.

    The gateway's server takes :data:`DROP_MESSAGE`. A server that refuses it (uvicorn's
    own protocols, in middleware mode) cannot be made to close a connection that has
    no response yet: the request is answered ``503 INJECTED_FAULT`` instead. A response
    already begun is left unfinished, and such a server closes the connection when the
    application returns.
    """
    try:
        await send({"type": DROP_MESSAGE})
    except RuntimeError:
        if not started:
            raise InjectedFault(detail=_INJECTED + " This server cannot drop a connection.") from None


class ResetAfterStart:
    """A ``send`` that passes on the response head and half the first body chunk, then drops the connection.

    What the application sends afterwards goes nowhere, as it would to a client whose
    connection was reset: it runs to its end (an idempotency record is stored).
    """

    __slots__ = ("_cut", "_send")

    def __init__(self, send: Send) -> None:
        self._send = send
        self._cut = False

    async def __call__(self, message: Message) -> None:
        if self._cut:
            return
        if message["type"] != "http.response.body":
            await self._send(message)
            return
        body = message.get("body", b"")
        self._cut = True
        await self._send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        await drop_connection(self._send, started=True)


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The fault guard when ``faults`` has rules or header control, else ``None`` (nothing added)."""
    config = ctx.config.faults
    if not config.enabled:
        return None
    tally = (
        ctx.metrics.tally(
            "bastion_faults_injected_total",
            "Faults injected on purpose (the faults section), by kind and side.",
            ["kind", "side"],
        )
        if ctx.metrics is not None
        else None
    )
    log = FaultLog(ctx.logger, tally)
    gateway = getattr(ctx.application, "takes_upstream_faults", False)
    upstream = [r.name or f"fault-{i}" for i, r in enumerate(config.rules, 1) if r.side == "upstream"]
    if gateway:
        # The proxy looks for upstream-side faults once a configuration can inject them.
        ctx.application.fault_log = log  # type: ignore[attr-defined]
    # Said when the configuration goes into force (its resources open), not when one is only
    # built: a refused reload or a checked admin change says nothing.
    off = [] if gateway else upstream
    ctx.add_resource(_Announcement(ctx.logger, len(config.rules), config.allow_header_control, off))
    return FaultGuard(app, FaultPlan(config, ctx.config.routing, ctx.clients), log)


class _Announcement:
    """The warnings of a configuration that injects faults, logged when it goes into force."""

    name = "faults"

    def __init__(self, logger: Any, rules: int, header_control: bool, upstream_off: list[str]) -> None:
        self.logger = logger
        self.rules = rules
        self.header_control = header_control
        self.upstream_off = upstream_off

    async def start(self) -> None:
        """Say that faults are on (and which upstream-side rules cannot apply here)."""
        if self.upstream_off:
            self.logger.warning(
                "upstream-side faults apply in gateway mode only; these are off", rules=self.upstream_off
            )
        self.logger.warning(
            "fault injection is on: some requests are delayed or fail on purpose",
            rules=self.rules,
            header_control=self.header_control,
        )

    async def close(self) -> None:
        """Nothing to release."""

    async def ping(self) -> bool:
        """Always ready."""
        return True
