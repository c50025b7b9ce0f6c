"""The idempotency guard: claims the key, replays or rejects duplicates, stores the response.

It is the innermost guard, just around the application, so nothing rejected by an
outer guard (rate limits, validation) is ever stored. For a request with a key:

1. The key is parsed (RFC 8941 string or bare token) and scoped to the client and
   the operation; the request is fingerprinted (method, path, query, Content-Type, body:
   :mod:`bastion.idempotency.fingerprints`).
2. The store claims the record atomically. A completed record with the same
   fingerprint is replayed (``Idempotent-Replayed: true``); a different fingerprint
   is ``IDEMPOTENCY_KEY_REUSED``; a request still running is
   ``IDEMPOTENCY_REQUEST_IN_PROGRESS`` (or, with ``wait``, awaited and replayed).
3. The owner runs the application (:mod:`bastion.idempotency.execution`). Every
   response message is forwarded at once and copied on the way; before the last one
   goes out, the response is stored (statuses in ``store_statuses``) or the claim is
   released (any other status, an exception), always checked against the owner token.
   While the handler runs, the lease is renewed every quarter lease, so only a dead or
   stalled process loses its claim.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from typing import TYPE_CHECKING, Any

from bastion.asgi import (
    SCOPE_KEY,
    ASGIApp,
    ClientDisconnected,
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
    State,
    StatusPolicy,
    decide,
    match_bare_key,
    parse_key,
    record_key,
)
from bastion.idempotency.events import Events
from bastion.idempotency.execution import Execution
from bastion.idempotency.fingerprints import Fields, described_fields, fields_of, fingerprint, raw_fingerprint
from bastion.idempotency.leases import Leases
from bastion.idempotency.records import Records
from bastion.idempotency.requirements import OFF, REQUIRED, Requirements
from bastion.idempotency.scope import CallerScope
from bastion.idempotency.stores import IdempotencyStore, open_store
from bastion.observability.metrics import Metrics
from bastion.problems import (
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
    IdempotencyRequestInProgress,
)
from bastion.stores import StorePolicy, parse_store_url

if TYPE_CHECKING:
    from bastion.protocols import GuardContext


class IdempotencyGuard:
    """Pure ASGI guard that makes unsafe requests with an ``Idempotency-Key`` run at most once.

    One flow for every store (:class:`~bastion.idempotency.records.Records`): a store that
    answers at once (``store.sync``) is called inline, any other awaited at the same points
    through its policy (timeout and circuit breaker).
    """

    def __init__(
        self,
        app: ASGIApp,
        config: IdempotencyConfig,
        store: IdempotencyStore,
        *,
        max_body_bytes: int,
        logger: Any,
        metrics: Metrics | None = None,
        clients: ClientIdentifier | None = None,
        scope: CallerScope | None = None,
        fields: dict[tuple[str, str], Fields] | None = None,
    ) -> None:
        self.app = app
        #: The fields of operations whose fingerprint is restricted, by ``(METHOD, template)``.
        self.fields = fields or {}
        #: Scopes keys to the caller's credentials (default: a secret derived from the store's name).
        self.scope = scope if scope is not None else CallerScope.from_config(config, store.name)
        #: Scopes keys to the client (default: the default ``clients`` settings).
        self.clients = clients if clients is not None else ClientIdentifier(ClientsConfig())
        self.store = store
        self.logger = logger
        self.requirements = Requirements(config.methods, config.require)
        #: The methods the guard may handle: a request with any other passes untouched.
        self.all_methods = self.requirements.all_methods
        self.header = config.header.lower().encode("latin-1")
        self.wait_s = config.wait.seconds
        self.mismatch_status = config.on_mismatch
        #: ``on_lease_expired: refuse``: a claim taken over from a lost attempt is not run again.
        self.refuse_lost = config.on_lease_expired == "refuse"
        self.max_body_bytes = max_body_bytes
        # Owner tokens: a random per-process prefix and a counter, unique across processes
        # without a random draw per request.
        self._owner_prefix = os.urandom(8).hex() + ":"
        self._owner_seq = itertools.count()
        self.events = Events(metrics, store, logger)
        #: Timeout, circuit breaker and open/closed for every call to a store that waits for I/O.
        policy = StorePolicy.from_settings(config)
        #: The leases of running handlers, renewed (a resource: it stops renewing at shutdown).
        self.leases = Leases(store, policy, lease=config.lease, events=self.events, logger=logger)
        #: Claims and settles records, inline with a store that answers at once.
        self.records = Records(
            store,
            policy,
            lease_ms=config.lease.ms,
            ttl_ms=config.ttl.ms,
            leases=self.leases,
            events=self.events,
            logger=logger,
        )
        #: Runs the application as a claim's owner, stores its response, replays stored ones.
        self.execution = Execution(
            app,
            records=self.records,
            leases=self.leases,
            events=self.events,
            kept=HeaderFilter(config.never_replay_headers),
            statuses=StatusPolicy(config.store_statuses),
            max_stored_bytes=config.max_stored_bytes,
            logger=logger,
        )

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Whether the request passes untouched: a method the guard never handles.

        (Anything else goes to ``__call__``, which works out the operation's mode once.)
        """
        return scope["method"] not in self.all_methods

    # -- the request path, in its order ----------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        if method not in self.all_methods:
            await self.app(scope, receive, send)
            return
        ctx: RequestContext = scope[SCOPE_KEY]
        mode = self.requirements.mode(method, ctx)
        if mode == OFF:
            await self.app(scope, receive, send)
            return
        # The key (and the Content-Type, fingerprinted with the body).
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
                self.events.count("missing")
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
                self.events.count("invalid")
                raise IdempotencyKeyInvalid(detail=str(exc)) from None
        # The body, then the record's key (scoped) and the request's fingerprint.
        try:
            body, receive = await read_request_body(receive, ctx, self.max_body_bytes)
        except ClientDisconnected:
            return  # nobody is left to answer, and nothing was claimed
        if ctx.client_id is None:
            self.clients.fill(scope, ctx)
        path = scope["path"]
        key = record_key(ctx.client_id or "", method, ctx.route or path, idem_key, self.scope.of(headers))
        query = scope.get("query_string", b"")
        request_fp = fingerprint(
            method, path, query, bytes(content_type), body, fields_of(self.fields, ctx.operation)
        )
        owner = self._owner_prefix + str(next(self._owner_seq))
        # The claim, then what to do with the request.
        result = await self.records.claim(key, request_fp, owner, ctx)
        if result is CLAIMED:  # a new key: the common case, with nothing to decide
            ctx.log["idempotency"] = "claimed"
            self.events.count("claimed")
            await self.execution.run(scope, receive, send, ctx, key, owner)
            return
        if result is None:  # store down and on_store_error is open
            ctx.log["idempotency"] = "unprotected"
            self.events.count("unprotected")
            await self.app(scope, receive, send)
            return
        action = decide(result, request_fp)
        if action is Action.MISMATCH:
            # A record stored before JSON bodies were read canonically has the fingerprint of
            # the body's bytes: the same bytes are still the same request.
            legacy = raw_fingerprint(method, path, query, bytes(content_type), body)
            if legacy == result.fingerprint:
                request_fp = legacy
                if result.state is State.IN_PROGRESS:
                    # Claimed again under the record's own fingerprint, so that a lease that ran
                    # out (its process died) can be taken over.
                    result = await self.records.claim(key, request_fp, owner, ctx)
                    if result is None:
                        ctx.log["idempotency"] = "unprotected"
                        self.events.count("unprotected")
                        await self.app(scope, receive, send)
                        return
                action = decide(result, request_fp)
        if action is Action.IN_PROGRESS and self.wait_s > 0:
            result, action = await self._wait(key, request_fp, owner, ctx, result, action)
            if result is None:
                ctx.log["idempotency"] = "unprotected"
                await self.app(scope, receive, send)
                return
        if action is Action.PROCEED:
            if result.took_over:
                self.events.count("lease_expired")
                ctx.log["idempotency"] = "lease_expired"
                if self.refuse_lost:
                    await self.execution.refuse(result.lost_trace_id, scope, send, ctx, key, owner)
                    return
            else:
                ctx.log["idempotency"] = "claimed"
            self.events.count("claimed")
            await self.execution.run(scope, receive, send, ctx, key, owner)
            return
        ctx.log["idempotency"] = action.value
        self.events.count(action.value)
        if action is Action.REPLAY:
            assert result.response is not None
            await self.execution.replay(result.response, send)
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
            current = await self.records.claim(key, request_fp, owner, ctx)
            if current is None:
                return None, action
            action = decide(current, request_fp)
        return current, action


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The idempotency guard for the configuration, or ``None`` when it has nothing to do."""
    config = ctx.config.idempotency
    if not config.enabled:
        return None
    url = parse_store_url(config.store or ctx.config.store)
    # Kept across reloads (records and pools) while what shapes the store is unchanged.
    shape = (url.url, config.table, config.key_prefix, config.timeout.ms, config.max_memory)
    store = ctx.shared(("idempotency", *shape), lambda: open_store(url, config))
    guard = IdempotencyGuard(
        app,
        config,
        store,
        clients=ctx.clients,
        scope=CallerScope.from_config(config, url.url),
        fields=described_fields(ctx.description(), ctx.config.openapi or "openapi"),
        max_body_bytes=ctx.config.validation.max_body_bytes,
        logger=ctx.logger,
        metrics=ctx.metrics,
    )
    ctx.add_resource(guard.leases)
    return guard
