"""The validation guard: checks parameters and body against the compiled operation.

It runs after rate limiting (no body is read for a 429) and before idempotency
(nothing invalid is ever stored). The body is read once, never past
``validation.max_body_bytes``, kept in the request context and replayed inward.
A compressed body (``gzip``, ``deflate``) is decoded under the same limit, and
what goes inward is what was checked: the decoded bytes, with the headers saying
so. A request the router did not match to an operation passes untouched.

An operation in shadow mode (or a client outside its ``enforce_percent``) is checked
as usual, but a refusal that may be shadowed (:func:`bastion.validation.modes.shadowable`)
is logged, counted and named to the application in ``Bastion-Would-Refuse`` instead.
A ``validation.relax`` entry that matches the request (:mod:`bastion.validation.relax`)
does the same for its clients, or lets their unknown fields through, and announces it
in the response headers.
"""

from __future__ import annotations

import random
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
    replay_body,
)
from bastion.clients import ClientIdentifier
from bastion.config import ClientsConfig
from bastion.enforcement import (
    ShadowRefusals,
    client_bucket,
    enforced_share,
    enforcement_id,
    in_shadow,
)
from bastion.problems import Problem, ValidationFailed
from bastion.validation.bodies import content_coding, decode_content
from bastion.validation.lenient import Rewrite
from bastion.validation.modes import operation_shares, shadowable
from bastion.validation.operation import CompiledOperation
from bastion.validation.relax import Relaxation, RelaxTable
from bastion.validation.responses import ResponseSchemas, recording_send

if TYPE_CHECKING:
    from bastion.observability.metrics import Metrics, Tally
    from bastion.protocols import GuardContext


def _decoded_headers(headers: list[tuple[bytes, bytes]], length: int) -> list[tuple[bytes, bytes]]:
    """The request headers for a body passed on decoded: no coding, its new length."""
    dropped = (b"content-encoding", b"content-length", b"transfer-encoding")
    kept = [(k, v) for k, v in headers if k not in dropped]
    kept.append((b"content-length", str(length).encode()))
    return kept


def _rewrite_scope(scope: Scope, rewrite: Rewrite) -> None:
    """Put a rewritten query string and headers into ``scope`` (the body goes separately)."""
    if rewrite.query_string is not None:
        scope["query_string"] = rewrite.query_string
    if rewrite.headers is not None:
        scope["headers"] = rewrite.headers


def _summary(entries: list[dict[str, Any]]) -> str:
    count = len(entries)
    noun = "problem" if count == 1 else "problems"
    where = "the request body" if all(e["in"] == "body" for e in entries) else "the request"
    return f"{count} {noun} in {where}"


class ValidationGuard:
    """Rejects requests that break their operation's description, with every error at once.

    ``share`` is the percentage of clients enforced (``validation.mode`` and
    ``enforce_percent``; 0 is shadow mode), ``shares`` that of each operation that sets
    its own, by ``(METHOD, template)``. ``relax`` holds the ``validation.relax`` entries
    (``None`` without any), ``max_errors`` is ``validation.max_errors``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        failures: Tally | None = None,
        response_rate: float = 0.0,
        response_failures: Tally | None = None,
        logger: Any = None,
        share: int = 100,
        shares: dict[tuple[str, str], int] | None = None,
        clients: ClientIdentifier | None = None,
        metrics: Metrics | None = None,
        relax: RelaxTable | None = None,
        max_errors: int = 50,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        #: ``bastion_validation_failures_total{operation,code}``, or ``None`` without metrics.
        self.failures = failures
        #: The share of responses checked in shadow mode (0 when off).
        self.response_rate = response_rate
        self.response_failures = response_failures
        self.logger = logger
        self.share = share
        self.shares = dict(shares or {})
        #: Identifies the client when an ``enforce_percent`` needs it.
        self.clients = clients if clients is not None else ClientIdentifier(ClientsConfig())
        self.shadow_refusals = ShadowRefusals("validation", metrics)
        self.relax = relax
        self.max_errors = max_errors

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Check a request without a body to read here; ``False`` when there is one (or a shadow check)."""
        operation = ctx.operation
        if type(operation) is not CompiledOperation:
            return True
        if operation.has_body or self.response_rate:
            return False
        rewrite = self._check(operation, ctx, scope, None, None)
        if rewrite is not None and rewrite:
            _rewrite_scope(scope, rewrite)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        operation = ctx.operation
        if type(operation) is not CompiledOperation:
            await self.app(scope, receive, send)
            return
        body: bytes | None = None
        content_type: bytes | None = None
        raw_receive = receive
        if operation.has_body:
            try:
                scope, receive, body, content_type = await self._read(scope, receive, ctx)
            except Problem as problem:
                self._count(operation, problem.code)
                raise
            except ClientDisconnected:
                return  # nobody is left to answer
        rewrite = self._check(operation, ctx, scope, body, content_type)
        if rewrite is not None and rewrite:
            # What goes inward is what was checked: the values as the declared coercions made them.
            scope = {**scope}
            _rewrite_scope(scope, rewrite)
            if rewrite.body is not None:
                ctx.body = rewrite.body
                scope["headers"] = _decoded_headers(scope["headers"], len(rewrite.body))
                receive = replay_body(rewrite.body, raw_receive)
        if self.response_rate and operation.responses is not None and random.random() < self.response_rate:
            send = self._shadow(operation, operation.responses, send)
        await self.app(scope, receive, send)

    async def _read(
        self, scope: Scope, receive: Receive, ctx: RequestContext
    ) -> tuple[Scope, Receive, bytes, bytes | None]:
        """The body to check (decoded), its ``Content-Type``, and the scope and receive to pass on."""
        content_type: bytes | None = None
        length: bytes | None = None
        codings: list[bytes] = []
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value
            elif key == b"content-length":
                length = value
            elif key == b"content-encoding":
                codings.append(value)
        coding = content_coding(codings) if codings else None  # 415 before reading anything
        limit = self.max_body_bytes
        raw_receive = receive
        body, receive = await read_request_body(raw_receive, ctx, limit, length)
        if coding is not None:
            body = decode_content(body, coding, limit)
            scope = {**scope, "headers": _decoded_headers(scope["headers"], len(body))}
            ctx.body = body
            receive = replay_body(body, raw_receive)
        return scope, receive, body, content_type

    def _check(
        self,
        operation: CompiledOperation,
        ctx: RequestContext,
        scope: Scope,
        body: bytes | None,
        content_type: bytes | None,
    ) -> Rewrite | None:
        """Raise the problem for an invalid request, every field error in it (unless only watched);
        the request as its declared coercions rewrite it (``None`` when it declares none)."""
        relaxed = self.relax.apply(scope, ctx) if self.relax is not None else None
        rewrite = Rewrite() if operation.relaxes else None
        try:
            entries = operation.check(
                ctx.path_params, scope.get("query_string", b""), scope["headers"], body, content_type, rewrite
            )
        except Problem as problem:
            self._count(operation, problem.code)
            if shadowable(problem, operation, body, content_type) and self._watched(
                operation, scope, ctx, relaxed
            ):
                self._let_through(operation, problem.code, problem.detail, [], scope, ctx)
                return None
            raise
        if entries and relaxed is not None:
            entries = relaxed.remaining(entries, self.max_errors)
        if entries:
            if self.failures is not None:
                for entry in entries:
                    self._count(operation, entry["code"])
            summary = _summary(entries)
            if self._watched(operation, scope, ctx, relaxed):
                self._let_through(operation, ValidationFailed.code_default, summary, entries, scope, ctx)
                return rewrite
            raise ValidationFailed(summary, errors=entries)
        return rewrite

    def _watched(
        self, operation: CompiledOperation, scope: Scope, ctx: RequestContext, relaxed: Relaxation | None
    ) -> bool:
        """Whether the operation only watches this request's client (shadow mode, or outside the share)."""
        if relaxed is not None and relaxed.shadow:
            return True
        share = self.shares.get((operation.method, operation.template), self.share)
        if share >= 100:
            return False
        clients = self.clients
        clients.fill(scope, ctx)
        return in_shadow(share, client_bucket(enforcement_id(ctx, clients.believes_any_key)))

    def _let_through(
        self,
        operation: CompiledOperation,
        code: str,
        detail: str | None,
        entries: list[dict[str, Any]],
        scope: Scope,
        ctx: RequestContext,
    ) -> None:
        """Log, count and name a refusal decided in shadow mode; the request goes on."""
        ctx.log["validation_shadow"] = code
        if self.logger is not None:
            self.logger.warning(
                "request refused in shadow mode",
                operation=operation.label,
                code=code,
                detail=detail,
                errors=entries,
                trace_id=ctx.trace_id,
                client=ctx.client_id,
            )
        self.shadow_refusals.record(code, scope, ctx)

    def _shadow(self, operation: CompiledOperation, schemas: ResponseSchemas, send: Send) -> Send:
        def report(status: int, entries: list[dict[str, Any]]) -> None:
            if not entries:
                return
            if self.logger is not None:
                self.logger.warning(
                    "response does not match the description",
                    operation=operation.label,
                    status=status,
                    errors=entries,
                )
            if self.response_failures is not None:
                for entry in entries:
                    self.response_failures.count(operation.label, entry["code"])

        return recording_send(send, schemas, self.max_body_bytes, report)

    def _count(self, operation: CompiledOperation, code: str) -> None:
        if self.failures is not None:
            self.failures.count(operation.label, code)


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The validation guard for the configuration, or ``None`` when it has nothing to do."""
    config = ctx.config
    if config.openapi is None or not config.validation.enabled:
        return None
    from bastion.config import ConfigError

    shares, problems = operation_shares(ctx.description())  # compiled now, so a broken one stops start-up
    if problems:
        raise ConfigError(problems, config.openapi)
    section = config.validation
    failures = None
    if ctx.metrics is not None:
        failures = ctx.metrics.tally(
            "bastion_validation_failures_total",
            "Requests rejected by validation, by operation and error code (one per errors[] entry).",
            ["operation", "code"],
        )
    responses = config.validation.responses
    response_failures = None
    if responses.enabled and ctx.metrics is not None:
        response_failures = ctx.metrics.tally(
            "bastion_response_validation_failures_total",
            "Responses that break their description (shadow mode), by operation and error code.",
            ["operation", "code"],
        )
    return ValidationGuard(
        app,
        max_body_bytes=config.validation.max_body_bytes,
        failures=failures,
        response_rate=responses.sample_rate if responses.enabled else 0.0,
        response_failures=response_failures,
        logger=ctx.logger,
        share=enforced_share(section.mode, section.enforce_percent),
        shares=shares,
        clients=ctx.clients,
        metrics=ctx.metrics,
        relax=RelaxTable(section.relax, ctx.clients, logger=ctx.logger) if section.relax else None,
        max_errors=section.max_errors,
    )
