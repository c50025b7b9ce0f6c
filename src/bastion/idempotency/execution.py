"""The owner's side of a claim: run the application, store its response, or replay one.

The guard (:mod:`bastion.idempotency.guard`) decides what a request gets; this runs what
it decided. Every response message is forwarded at once and copied on the way; before
the last one goes out, the response is stored (statuses in ``store_statuses``) or the
claim released (any other, an exception), always checked against the owner token.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from bastion.asgi import ASGIApp, Message, Receive, RequestContext, Scope, Send
from bastion.idempotency.core import HeaderFilter, ResponseCapture, StatusPolicy, StoredResponse
from bastion.idempotency.events import Events
from bastion.idempotency.leases import Leases
from bastion.idempotency.records import Records
from bastion.problems import IdempotencyOutcomeUnknown, Problem, render


class Execution:
    """Runs requests as their claim's owner and answers retries from the store."""

    __slots__ = ("app", "events", "kept", "leases", "logger", "max_stored_bytes", "records", "storable")

    def __init__(
        self,
        app: ASGIApp,
        *,
        records: Records,
        leases: Leases,
        events: Events,
        kept: HeaderFilter,
        statuses: StatusPolicy,
        max_stored_bytes: int,
        logger: Any,
    ) -> None:
        self.app = app
        self.records = records
        self.leases = leases
        self.events = events
        #: Which response headers are stored and replayed.
        self.kept = kept
        #: The statuses stored for replay.
        self.storable = statuses.statuses
        self.max_stored_bytes = max_stored_bytes
        self.logger = logger

    async def run(
        self, scope: Scope, receive: Receive, send: Send, ctx: RequestContext, key: str, owner: str
    ) -> None:
        """Run the application as the claim's owner; settle the claim before its last chunk goes out."""
        capture = ResponseCapture(self.max_stored_bytes, self.kept)
        storable = self.storable
        self.leases.hold(owner, key)
        settled = False  # completed or released: the record is no longer this request's to change

        # A plain function that copies each message and hands back the awaitable of the real
        # ``send``: no coroutine of its own per message.
        def send_capturing(message: Message) -> Awaitable[None]:
            nonlocal settled
            kind = message["type"]
            if kind == "http.response.start":
                capture.start(message["status"], message.get("headers") or ())
            elif kind == "http.response.body":
                if message.get("more_body", False) or settled:
                    capture.body(message.get("body", b""))
                else:
                    # The last chunk: store the response (or release the claim) before it goes
                    # out, so a client that has it all and retries at once gets the replay.
                    settled = True
                    response = (
                        capture.finish(message.get("body", b"")) if capture.status in storable else None
                    )
                    step = self.records.settle(key, owner, response, ctx)
                    if step is not None:
                        return _then_send(step, send, message)
            return send(message)

        try:
            await self.app(scope, receive, send_capturing)
        except Problem as problem:
            if not (settled or capture.status or problem.status >= 500):
                await self._answer(problem, scope, ctx, send_capturing)
                return
            if not settled:
                await self._settle(key, owner, None, ctx)
            raise
        except BaseException:
            if not settled:
                await self._settle(key, owner, None, ctx)
            raise
        if not settled:
            # The application returned without finishing its response: nothing to store.
            await self._settle(key, owner, None, ctx)

    async def _answer(self, problem: Problem, scope: Scope, ctx: RequestContext, send: Send) -> None:
        """Send a client error the handler raised as its response (so it is stored and replayed)."""
        rendered = render(problem, type_base=ctx.type_base, trace_id=ctx.trace_id, instance=scope["path"])
        ctx.problem_code = problem.code
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})

    async def _settle(
        self, key: str, owner: str, response: StoredResponse | None, ctx: RequestContext
    ) -> None:
        """Store ``response`` (``None``: release the claim), awaiting the store if it waits."""
        step = self.records.settle(key, owner, response, ctx)
        if step is not None:
            await step

    async def replay(self, response: StoredResponse, send: Send) -> None:
        """Send a stored response as the answer to a retry, marked ``Idempotent-Replayed``."""
        headers = response.replay_headers(self.kept)
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        await send({"type": "http.response.body", "body": response.body, "more_body": False})

    async def refuse(
        self, lost_trace_id: str, scope: Scope, send: Send, ctx: RequestContext, key: str, owner: str
    ) -> None:
        """Answer ``IDEMPOTENCY_OUTCOME_UNKNOWN`` for a key whose earlier attempt was lost, and
        store that answer as the key's response: every later retry gets it too, none runs."""
        ctx.log["idempotency"] = "outcome_unknown"
        ctx.log["lost_trace_id"] = lost_trace_id
        self.events.count("outcome_unknown")
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
        await self._settle(key, owner, capture.finish(rendered.body), ctx)
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})


async def _then_send(step: Awaitable[None], send: Send, message: Message) -> None:
    """Await the store ``step``, then send ``message`` (the last chunk goes out after the store)."""
    await step
    await send(message)
