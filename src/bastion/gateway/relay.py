"""The response side of the proxy: the upstream's answer streamed to the client, or replaced by a problem.

A response is handed on chunk by chunk as it arrives, so large downloads and
server-sent events are never held in memory; a long one stops being read as soon
as the client leaves. An error response that ``errors.normalize_upstream`` covers
is read (up to ``gateway.normalize_max_bytes``) and, when it is not a problem
already, replaced by one, its original logged. A body that breaks off before the
response has started becomes ``502 UPSTREAM_UNAVAILABLE`` or ``504
UPSTREAM_TIMEOUT``; after, the connection is cut (the status is gone already).
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

from bastion import normalize
from bastion.asgi import Receive, RequestContext, Scope, Send
from bastion.config.gateway import GatewayConfig
from bastion.gateway.headers import response_headers
from bastion.gateway.seam import UpstreamResponse
from bastion.observability.metrics import Tally
from bastion.problems import UpstreamTimeout, UpstreamUnavailable, request_instance


class ResponseRelay:
    """Hands upstream responses on to the client, and counts what went wrong on the way."""

    def __init__(
        self,
        config: GatewayConfig,
        normalize_upstream: normalize.NormalizePolicy,
        failures: tuple[type[BaseException], ...],
    ) -> None:
        self.config = config
        #: ``errors.normalize_upstream``: which error responses become problems (5xx by default).
        self.normalize_upstream = normalize_upstream
        #: What reading a response body raises when the upstream fails (the transport's errors).
        self.failures = failures
        #: The structured logger (the original of a replaced error response goes there).
        self.logger: Any = None
        #: ``bastion_gateway_upstream_errors_total`` by kind, when metrics are on.
        self.errors: Tally | None = None

    def count(self, kind: str) -> None:
        """Count one upstream error of ``kind``: unavailable, timeout, aborted or normalized."""
        if self.errors is not None:
            self.errors.count(kind)

    async def respond(
        self,
        scope: Scope,
        ctx: RequestContext | None,
        response: UpstreamResponse,
        receive: Receive,
        send: Send,
        *,
        body_done: bool,
    ) -> None:
        """Send ``response`` to the client; ``body_done`` says whether the request body was all read."""
        status = response.status
        headers = response_headers(response.raw_headers)
        if status >= 400 and ctx is not None:
            media_type = normalize.content_type(headers)
            if normalize.needs_normalizing(self.normalize_upstream, status, media_type):
                await self._normalized(scope, ctx, response, status, headers, media_type, send)
                return
        content = response.content
        try:
            first = await content.readany()
        except self.failures as exc:
            self.read_failed(exc, ctx)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        if content.at_eof():
            await send({"type": "http.response.body", "body": first, "more_body": False})
            return
        if first:
            await send({"type": "http.response.body", "body": first, "more_body": True})
        # A long response (a download, an event stream): stop reading the upstream as
        # soon as the client goes away, or an endless stream would be read for nobody.
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive, response)) if body_done else None
        try:
            while True:
                try:
                    chunk = await content.readany()
                except self.failures as exc:
                    if watcher is not None and watcher.done():
                        return
                    self.count("aborted")
                    raise UpstreamUnavailable(detail="The upstream API broke off its response.") from exc
                if content.at_eof():
                    await send({"type": "http.response.body", "body": chunk, "more_body": False})
                    return
                if chunk:
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            if watcher is not None:
                watcher.cancel()

    def read_failed(self, exc: BaseException, ctx: RequestContext | None) -> NoReturn:
        """The problem for a response head that came but whose body did not (counted)."""
        if isinstance(exc, TimeoutError):
            self.count("timeout")
            if ctx is not None:
                ctx.log["upstream_error"] = "read timeout"
            raise UpstreamTimeout(
                detail=f"The upstream API did not answer within {self.config.read_timeout}."
            ) from exc
        self.count("unavailable")
        raise UpstreamUnavailable(detail="The upstream API broke off its response.") from exc

    async def _normalized(
        self,
        scope: Scope,
        ctx: RequestContext,
        response: UpstreamResponse,
        status: int,
        headers: list[tuple[bytes, bytes]],
        media_type: bytes,
        send: Send,
    ) -> None:
        limit = self.config.normalize_max_bytes
        chunks: list[bytes] = []
        size = 0
        content = response.content
        while size <= limit:
            try:
                chunk = await content.readany()
            except self.failures as exc:
                self.read_failed(exc, ctx)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        body = b"".join(chunks)
        truncated = size > limit or not content.at_eof()
        if not normalize.replaces(self.normalize_upstream, status, media_type, body, complete=not truncated):
            await send({"type": "http.response.start", "status": status, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})
            return
        problem, rendered = normalize.replacement(
            status, headers, type_base=ctx.type_base, trace_id=ctx.trace_id, instance=request_instance(scope)
        )
        ctx.problem_code = problem.code
        ctx.log["upstream_status"] = status
        self.count("normalized")
        if self.logger is not None:
            normalize.log_original(
                self.logger, ctx.trace_id, status, media_type, body[:limit], truncated=truncated
            )
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})


async def _wait_for_disconnect(receive: Receive, response: UpstreamResponse) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            response.close()
            return
