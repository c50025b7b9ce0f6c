"""The idempotency guard: claims the key, replays or rejects duplicates, stores the response.

It is the innermost guard, just around the application, so nothing rejected by an
outer guard (rate limits, validation) is ever stored. For a request with a key:

1. The key is parsed (RFC 8941 string or bare token) and scoped to the client and
   the operation; the request is fingerprinted (method, path, query, Content-Type, body).
2. The store claims the record atomically. A completed record with the same
   fingerprint is replayed (``Idempotent-Replayed: true``); a different fingerprint
   is ``IDEMPOTENCY_KEY_REUSED``; a request still running is
   ``IDEMPOTENCY_REQUEST_IN_PROGRESS`` (or, with ``wait``, awaited and replayed).
3. The owner runs the application. Every response message is forwarded at once
   and copied on the way; before the last one goes out, the response is stored
   (statuses in ``store_statuses``) or the claim is released (5xx, an exception),
   always checked against the owner token. While the handler runs, the lease is
   renewed every quarter lease, so only a dead or stalled process loses its claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from bastion.asgi import (
    SCOPE_KEY,
    ASGIApp,
    ClientDisconnected,
    Message,
    Receive,
    RequestContext,
    Scope,
    Send,
    read_request_body,
)
from bastion.clients import ClientIdentifier
from bastion.config import ClientsConfig
from bastion.config.idempotency import IdempotencyConfig
from bastion.idempotency.core import (
    CLAIMED,
    Action,
    ClaimResult,
    HeaderFilter,
    KeyFormatError,
    ResponseCapture,
    State,
    StatusPolicy,
    StoredResponse,
    decide,
    fingerprint,
    match_bare_key,
    parse_key,
    record_key,
)
from bastion.idempotency.scope import CallerScope
from bastion.idempotency.stores import IdempotencyStore, open_store
from bastion.idempotency.stores.memory import MemoryStore
from bastion.observability.metrics import PendingCounts
from bastion.problems import (
    DependencyUnavailable,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyOutcomeUnknown,
    IdempotencyRequestInProgress,
    Problem,
    render,
)
from bastion.stores import StorePolicy, parse_store_url

if TYPE_CHECKING:
    from bastion.protocols import GuardContext

OFF, OPTIONAL, REQUIRED = 0, 1, 2
EXTENSION = "x-bastion-idempotency"
_EXTENSION_MODES: dict[Any, int] = {
    "required": REQUIRED,
    True: REQUIRED,
    "optional": OPTIONAL,
    "off": OFF,
    "disabled": OFF,
    False: OFF,
}
EVENTS = (
    "claimed",
    "replayed",
    "mismatch",
    "in_progress",
    "lease_expired",
    "store_error",
    "released",
    "fenced",
    "missing",
    "invalid",
    "unprotected",
    "not_stored",
    "outcome_unknown",
)


class RequiredRoutes:
    """The ``idempotency.require`` entries (``METHOD /template``), matched against a request."""

    def __init__(self, entries: list[str]) -> None:
        self.exact: set[tuple[str, str]] = set()
        self.patterns: list[tuple[str, re.Pattern[str]]] = []
        for entry in entries:
            method, _, template = entry.strip().partition(" ")
            method, template = method.upper(), template.strip()
            if not template.startswith("/"):
                raise ValueError(f"idempotency.require entry {entry!r} is not 'METHOD /path'")
            self.exact.add((method, template))
            if "{" in template:
                parts = re.split(r"\{[^}/]+\}", template)
                self.patterns.append((method, re.compile("[^/]+".join(re.escape(p) for p in parts) + "$")))
        self.methods = frozenset(m for m, _ in self.exact)

    def match(self, method: str, route: str | None, path: str) -> bool:
        """Whether ``method`` on the route (or, without a route, the canonical path) requires a key.

        The route guard names a request after the entry it matches ignoring case and a
        trailing slash (:class:`bastion.routing.ProtectiveRoutes`), so ``route`` is the
        entry's own template for ``/ORDERS/`` as for ``/orders``.
        """
        if route is not None:
            return (method, route) in self.exact
        if (method, path) in self.exact:
            return True
        return any(m == method and p.match(path) for m, p in self.patterns)


class IdempotencyGuard:
    """Pure ASGI guard that makes unsafe requests with an ``Idempotency-Key`` run at most once."""

    def __init__(
        self,
        app: ASGIApp,
        config: IdempotencyConfig,
        store: IdempotencyStore,
        *,
        max_body_bytes: int,
        logger: Any,
        metrics: Any = None,
        clients: ClientIdentifier | None = None,
        scope: CallerScope | None = None,
    ) -> None:
        self.app = app
        #: Scopes keys to the caller's credentials (default: a secret derived from the store's name).
        self.scope = scope if scope is not None else CallerScope.from_config(config, store.name)
        #: Scopes keys to the client (default: the default ``clients`` settings).
        self.clients = clients if clients is not None else ClientIdentifier(ClientsConfig())
        self.store = store
        #: The memory store, called without coroutines (its steps never wait); ``None`` for the others.
        self._memory = store if type(store) is MemoryStore else None
        self.logger = logger
        self.methods = frozenset(config.methods)
        self.required = RequiredRoutes(config.require)
        #: No ``require`` entries: without an operation, a method the guard handles is optional.
        self._plain = not self.required.exact
        self.all_methods = self.methods | self.required.methods
        self.header = config.header.lower().encode("latin-1")
        self.lease_ms = config.lease.ms
        self.ttl_ms = config.ttl.ms
        self.wait_s = config.wait.seconds
        # Claims are renewed once they are a quarter lease old, checked every quarter lease:
        # a claim is renewed by half its lease at the latest.
        self.renew_every_s = max(config.lease.seconds / 4, 0.001)
        self.mismatch_status = config.on_mismatch
        #: Timeout, circuit breaker and open/closed for every call to a store that does I/O.
        self.policy = StorePolicy.from_settings(config)
        self.fail_closed = self.policy.fail_closed
        #: ``on_lease_expired: refuse``: a claim taken over from a lost attempt is not run again.
        self.refuse_lost = config.on_lease_expired == "refuse"
        #: Which response headers are stored and replayed.
        self.kept = HeaderFilter(config.never_replay_headers)
        self.statuses = StatusPolicy(config.store_statuses)
        #: The statuses stored for replay (``statuses.storable`` as a set).
        self.storable = self.statuses.statuses
        self.max_stored_bytes = config.max_stored_bytes
        self.max_body_bytes = max_body_bytes
        # Owner tokens: a random per-process prefix and a counter, unique across processes
        # without a random draw per request.
        self._owner_prefix = os.urandom(8).hex() + ":"
        self._owner_seq = itertools.count()
        #: Claims whose handlers run now: owner -> record key.
        self._active: dict[str, str] = {}
        self._renewer: asyncio.Task[None] | None = None
        self._events: dict[str, Any] = {}
        #: Events not yet added to the counter (see :class:`PendingEvents`); ``None`` when
        #: every event goes to the counter at once (multiprocess mode).
        self._pending: dict[str, int] | None = dict.fromkeys(EVENTS, 0)
        self._store_errors: Any = None
        if metrics is not None:
            events = metrics.counter(
                "bastion_idempotency_events_total",
                "Idempotency decisions and outcomes, by event.",
                ["event"],
            )
            self._events = {event: events.labels(event) for event in EVENTS}
            if getattr(metrics, "multiprocess_dir", None) is None:
                pending = PendingCounts(self._events)
                self._pending = pending.counts
                pending.register_before(metrics.registry, events)
            else:
                # Scrapes read every worker's shared files, not this registry: count at once.
                self._pending = None
            errors = metrics.counter(
                "bastion_store_errors_total",
                "Store calls that failed, by store and operation.",
                ["store", "operation"],
            )
            self._store_errors = {
                op: errors.labels(store.kind, "idempotency_" + op)
                for op in ("claim", "complete", "release", "renew")
            }
            if self._memory is not None:
                evictions = metrics.counter(
                    "bastion_idempotency_evictions_total",
                    "Completed idempotency records the memory store dropped to stay under max_memory.",
                    [],
                )
                self._memory.on_evict = evictions.inc

    # -- helpers -----------------------------------------------------------------------

    def _count(self, event: str) -> None:
        pending = self._pending
        if pending is not None:
            pending[event] += 1
            return
        child = self._events.get(event)
        if child is not None:
            child.inc()

    def _store_error(self, operation: str, exc: BaseException) -> None:
        self._count("store_error")
        if self._store_errors is not None:
            self._store_errors[operation].inc()
        self.logger.warning(
            "idempotency store error", store=self.store.kind, operation=operation, error=repr(exc)
        )

    def _hold(self, key: str, owner: str) -> None:
        """Keep the claim's lease alive while its handler runs.

        One task per guard renews every claim that has run for a quarter lease; a
        request that ends sooner costs one dictionary entry and no timer.
        """
        self._active[owner] = key
        renewer = self._renewer
        if renewer is None or renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_held())

    async def _renew_held(self) -> None:
        # A claim held at one tick has run for at least a tick (a quarter lease) at the next:
        # each tick renews the claims that the previous one saw, and a claim is renewed by
        # half its lease at the latest. The first claim, which starts this task, is seen at once.
        active = self._active
        seen = set(active)
        try:
            while active:
                await asyncio.sleep(self.renew_every_s)
                due = [(o, k) for o, k in active.items() if o in seen]
                seen = set(active)
                if not due:
                    continue
                results = await asyncio.gather(
                    *(self.policy.call(self.store.renew(k, o, self.lease_ms)) for o, k in due),
                    return_exceptions=True,
                )
                for (owner, _), renewed in zip(due, results, strict=True):
                    if isinstance(renewed, BaseException):
                        # A store hiccup: try again at the next tick, the lease may still hold.
                        self._store_error("renew", renewed)
                    elif not renewed and owner in active:
                        del active[owner]
                        self.logger.warning("idempotency lease lost to a takeover", owner=owner)
        finally:
            self._renewer = None

    def _mode(self, method: str, ctx: RequestContext, path: str) -> int:
        operation = ctx.operation
        if operation is not None:
            extensions = getattr(operation, "extensions", None)
            if isinstance(extensions, dict) and EXTENSION in extensions:
                value = extensions[EXTENSION]
                mode = _EXTENSION_MODES.get(value.lower() if isinstance(value, str) else value)
                if mode is not None:
                    return mode
        if self.required.exact and self.required.match(method, ctx.route, path):
            return REQUIRED
        return OPTIONAL if method in self.methods else OFF

    # -- the resource side: nothing to open; stop renewing at shutdown ---------------------

    name = "idempotency:lease-renewal"

    async def start(self) -> None:
        """Nothing to open: renewal starts with the first claim."""

    async def close(self) -> None:
        """Stop renewing leases (claims still running lose theirs when it ends)."""
        renewer = self._renewer
        if renewer is not None:
            renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewer

    async def ping(self) -> bool:
        """Always ready."""
        return True

    # -- the request path --------------------------------------------------------------

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Whether the request passes untouched: a method the guard never handles.

        (Anything else goes to ``__call__``, which works out the operation's mode once.)
        """
        return scope["method"] not in self.all_methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in self.all_methods:
            await self.app(scope, receive, send)
            return
        ctx: RequestContext = scope[SCOPE_KEY]
        path = scope["path"]
        if ctx.operation is None and self._plain:
            mode = OPTIONAL  # (all_methods is methods then)
        else:
            mode = self._mode(method, ctx, path)
            if mode == OFF:
                await self.app(scope, receive, send)
                return
        raw_key: bytes | None
        content_type: bytes
        repeated = False
        headers = scope["headers"]
        try:
            # One pass in C; the loop below only when a name repeats (or is not hashable).
            found: dict[bytes, bytes] | None = dict(headers)
        except TypeError:
            found = None
        if found is not None and len(found) == len(headers):
            raw_key = found.get(self.header)
            content_type = found.get(b"content-type", b"")
        else:
            raw_key = None
            content_type = b""
            name = self.header
            for key, value in headers:
                if key == name:
                    repeated = raw_key is not None
                    raw_key = value
                elif key == b"content-type":
                    content_type = value
        if raw_key is None:
            if mode == REQUIRED:
                ctx.log["idempotency"] = "missing"
                self._count("missing")
                raise IdempotencyKeyMissing(detail="this operation requires an Idempotency-Key header")
            await self.app(scope, receive, send)
            return
        bare = None if repeated else match_bare_key(raw_key)
        if bare is not None:  # parse_key's first step, inline
            idem_key = bare[1].decode("ascii")
        else:
            try:
                if repeated:
                    raise KeyFormatError("the header appears more than once")
                idem_key = parse_key(bytes(raw_key))
            except KeyFormatError as exc:
                ctx.log["idempotency"] = "invalid"
                self._count("invalid")
                raise IdempotencyKeyInvalid(detail=str(exc)) from None
        try:
            body, receive = await read_request_body(receive, ctx, self.max_body_bytes)
        except ClientDisconnected:
            return  # nobody is left to answer, and nothing was claimed
        if ctx.client_id is None:
            self.clients.fill(scope, ctx)
        key = record_key(ctx.client_id or "", method, ctx.route or path, idem_key, self.scope.of(headers))
        request_fp = fingerprint(method, path, scope.get("query_string", b""), bytes(content_type), body)
        owner = self._owner_prefix + str(next(self._owner_seq))

        memory = self._memory
        result: ClaimResult | None
        if memory is not None:
            try:
                result = memory.claim_now(key, request_fp, owner, self.lease_ms, self.ttl_ms, ctx.trace_id)
            except Exception as exc:
                self._claim_failed(exc, ctx)
                result = None
        else:
            result = await self._claim(key, request_fp, owner, ctx)
        if result is CLAIMED:  # a new key: the common case, with nothing to decide
            ctx.log["idempotency"] = "claimed"
            pending = self._pending
            if pending is not None:
                pending["claimed"] += 1
            else:
                self._count("claimed")
            if memory is not None:
                await self._run_now(memory, scope, receive, send, ctx, key, owner)
            else:
                await self._run(scope, receive, send, ctx, key, owner)
            return
        if result is None:  # store down and on_store_error is open
            ctx.log["idempotency"] = "unprotected"
            self._count("unprotected")
            await self.app(scope, receive, send)
            return
        action = Action.PROCEED if result.state is State.CLAIMED else decide(result, request_fp)
        if action is Action.IN_PROGRESS and self.wait_s > 0:
            result, action = await self._wait(key, request_fp, owner, ctx, result, action)
            if result is None:
                ctx.log["idempotency"] = "unprotected"
                await self.app(scope, receive, send)
                return
        if action is Action.PROCEED:
            if result.took_over:
                self._count("lease_expired")
                ctx.log["idempotency"] = "lease_expired"
                if self.refuse_lost:
                    await self._refuse(result.lost_trace_id, scope, send, ctx, key, owner)
                    return
            else:
                ctx.log["idempotency"] = "claimed"
            self._count("claimed")
            await self._run(scope, receive, send, ctx, key, owner)
            return
        ctx.log["idempotency"] = action.value
        self._count(action.value)
        if action is Action.REPLAY:
            assert result.response is not None
            await self._replay(result.response, send)
        elif action is Action.MISMATCH:
            raise IdempotencyKeyReused(
                detail="this key was used with a different request; use a new key for a new operation",
                status=self.mismatch_status,
            )
        else:
            raise IdempotencyRequestInProgress(
                detail="the first request with this key is still running",
                headers={"Retry-After": "1"},
            )

    async def _claim(self, key: str, request_fp: str, owner: str, ctx: RequestContext) -> ClaimResult | None:
        """Claim through the store policy; ``None`` when the store failed and the policy is open."""
        policy = self.policy
        if not policy.allow():
            # The breaker is open: answer at once, without waiting on a store known to fail.
            self._claim_failed(None, ctx)
            return None
        claim = self.store.claim(key, request_fp, owner, self.lease_ms, self.ttl_ms, ctx.trace_id)
        try:
            return await policy.call(claim)
        except Exception as exc:
            self._claim_failed(exc, ctx)
            return None

    def _claim_failed(self, exc: Exception | None, ctx: RequestContext) -> None:
        """Count and log a failed claim (``exc`` ``None``: skipped, the breaker is open);
        raise 503 when the policy is closed."""
        if exc is not None:
            self._store_error("claim", exc)
        if self.fail_closed:
            ctx.log["idempotency"] = "store_error"
            raise DependencyUnavailable(
                detail="the idempotency store is unreachable",
                headers={"Retry-After": self.policy.retry_after()},
            ) from None

    async def _wait(
        self,
        key: str,
        request_fp: str,
        owner: str,
        ctx: RequestContext,
        result: ClaimResult,
        action: Action,
    ) -> tuple[ClaimResult | None, Action]:
        """Poll the record until the first request finishes or ``wait`` runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.wait_s
        delay = 0.005
        current: ClaimResult | None = result
        while action is Action.IN_PROGRESS:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.1)
            current = await self._claim(key, request_fp, owner, ctx)
            if current is None:
                return None, action
            action = decide(current, request_fp)
        return current, action

    async def _replay(self, response: StoredResponse, send: Send) -> None:
        headers = response.replay_headers(self.kept)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    async def _refuse(
        self, lost_trace_id: str, scope: Scope, send: Send, ctx: RequestContext, key: str, owner: str
    ) -> None:
        """Answer ``IDEMPOTENCY_OUTCOME_UNKNOWN`` for a key whose earlier attempt was lost, and
        store that answer as the key's response: every later retry gets it too, none runs."""
        ctx.log["idempotency"] = "outcome_unknown"
        ctx.log["lost_trace_id"] = lost_trace_id
        self._count("outcome_unknown")
        self.logger.warning("idempotency outcome unknown: refused to run again", lost_trace_id=lost_trace_id)
        problem = IdempotencyOutcomeUnknown(
            detail="an earlier attempt with this key stopped while it ran; it is not run again",
            extensions={"lost_trace_id": lost_trace_id},
        )
        rendered = render(problem, type_base=ctx.type_base, trace_id=ctx.trace_id, instance=scope["path"])
        ctx.problem_code = problem.code
        capture = ResponseCapture(self.max_stored_bytes, self.kept)
        capture.start(rendered.status, rendered.headers)
        # Stored before it goes out, like any response: a retry at once gets the same answer.
        await self._complete(key, owner, capture.finish(rendered.body), ctx)
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})

    async def _run(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, key: str, owner: str
    ) -> None:
        capture = ResponseCapture(self.max_stored_bytes, self.kept)
        self._hold(key, owner)
        settled = False  # completed or released: the record is no longer this request's to change

        async def settle() -> None:
            nonlocal settled
            settled = True
            self._active.pop(owner, None)
            if capture.status in self.storable:
                await self._complete(key, owner, capture.result(), ctx)
            else:
                await self._release(key, owner)

        async def send_capturing(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                capture.start(message["status"], message.get("headers") or ())
            elif kind == "http.response.body":
                capture.body(message.get("body", b""))
                # Store before the last chunk goes out: a client that has the whole response
                # and retries at once gets the replay, never a second execution.
                if not message.get("more_body", False) and not settled:
                    await settle()
            await send(message)

        try:
            await self.app(scope, receive, send_capturing)
        except Problem as problem:
            if settled or capture.status or problem.status >= 500:
                await self._abandon(settled, key, owner)
                raise
            await self._answer(problem, scope, ctx, send_capturing)
        except BaseException:
            await self._abandon(settled, key, owner)
            raise
        else:
            if not settled:
                # The application returned without finishing its response: nothing to store.
                await self._abandon(settled, key, owner)

    async def _run_now(
        self,
        memory: MemoryStore,
        scope: Scope,
        receive: Receive,
        send: Send,
        ctx: RequestContext,
        key: str,
        owner: str,
    ) -> None:
        """:meth:`_run` with the memory store, whose steps never wait: the same steps, inline."""
        capture = ResponseCapture(self.max_stored_bytes, self.kept)
        self._active[owner] = key  # _hold, inline
        renewer = self._renewer
        if renewer is None or renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_held())
        settled = False

        # A plain function that captures, settles and hands back the awaitable of the
        # real ``send``: no coroutine of its own per message.
        def send_capturing(message: Message) -> Awaitable[None]:
            nonlocal settled
            kind = message["type"]
            if kind == "http.response.start":
                capture.start(message["status"], message.get("headers") or ())
            elif kind == "http.response.body":
                if message.get("more_body", False) or settled:
                    capture.body(message.get("body", b""))
                else:  # the last chunk: store the response (or release the claim) first
                    settled = True
                    self._active.pop(owner, None)
                    if capture.status not in self.storable:
                        self._release_now(memory, key, owner)
                        return send(message)
                    response = capture.finish(message.get("body", b""))
                    try:
                        stored = memory.complete_now(key, owner, response, self.ttl_ms)
                    except Exception as exc:
                        self._complete_failed(exc, ctx)
                    else:
                        if not stored or not response.body_stored:
                            self._completed(stored, response, owner, ctx)
            return send(message)

        try:
            await self.app(scope, receive, send_capturing)
        except Problem as problem:
            if settled or capture.status or problem.status >= 500:
                await self._abandon(settled, key, owner)
                raise
            await self._answer(problem, scope, ctx, send_capturing)
        except BaseException:
            await self._abandon(settled, key, owner)
            raise
        else:
            if not settled:
                await self._abandon(settled, key, owner)

    async def _answer(self, problem: Problem, scope: Scope, ctx: RequestContext, send: Send) -> None:
        """Send a client error the handler raised as its response (so it is stored and replayed)."""
        rendered = render(problem, type_base=ctx.type_base, trace_id=ctx.trace_id, instance=scope["path"])
        ctx.problem_code = problem.code
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})

    async def _abandon(self, settled: bool, key: str, owner: str) -> None:
        if settled:
            return
        self._active.pop(owner, None)
        await self._release(key, owner)

    async def _complete(self, key: str, owner: str, response: StoredResponse, ctx: RequestContext) -> None:
        try:
            stored = await self.policy.call(self.store.complete(key, owner, response, self.ttl_ms))
        except Exception as exc:
            self._complete_failed(exc, ctx)
            return
        self._completed(stored, response, owner, ctx)

    def _complete_failed(self, exc: Exception, ctx: RequestContext) -> None:
        # The handler ran and its response goes out; the record stays in progress
        # until its lease ends, after which a retry runs the handler again (or, with
        # on_lease_expired: refuse, is answered IDEMPOTENCY_OUTCOME_UNKNOWN).
        self._store_error("complete", exc)
        self._count("not_stored")
        ctx.log["idempotency_stored"] = False
        self.logger.error(
            "idempotency response not stored: the request ran, a retry after the lease may run it again",
            store=self.store.kind,
            lease_ms=self.lease_ms,
        )

    def _completed(self, stored: bool, response: StoredResponse, owner: str, ctx: RequestContext) -> None:
        if not stored:
            self._count("fenced")
            ctx.log["idempotency"] = "fenced"
            self.logger.warning("idempotency completion fenced: the claim was taken over", owner=owner)
        elif not response.body_stored:
            ctx.log["idempotency_body_stored"] = False

    async def _release(self, key: str, owner: str) -> None:
        try:
            released = await self.policy.call(self.store.release(key, owner))
        except Exception as exc:
            self._store_error("release", exc)
            return
        if released:
            self._count("released")

    def _release_now(self, memory: MemoryStore, key: str, owner: str) -> None:
        try:
            released = memory.release_now(key, owner)
        except Exception as exc:
            self._store_error("release", exc)
            return
        if released:
            self._count("released")


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The idempotency guard for the configuration, or ``None`` when it has nothing to do."""
    config = ctx.config.idempotency
    if not config.enabled:
        return None
    url = parse_store_url(config.store or ctx.config.store)
    store = open_store(url, config)
    ctx.add_resource(store)
    guard = IdempotencyGuard(
        app,
        config,
        store,
        clients=ctx.clients,
        scope=CallerScope.from_config(config, url.url),
        max_body_bytes=ctx.config.validation.max_body_bytes,
        logger=ctx.logger,
        metrics=ctx.metrics,
    )
    ctx.add_resource(guard)
    return guard
