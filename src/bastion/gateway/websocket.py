"""WebSocket upgrades through the gateway: one upstream connection per client connection.

The handshake goes through the guards first, as the GET request it is
(:mod:`bastion.handshakes`). Then the upstream handshake happens; only when it succeeds is the client's
accepted (with the subprotocol the upstream chose), so a refused upgrade is
refused to the client too. Then messages are relayed both ways until either side
closes, and the close code crosses over.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import aiohttp

from bastion.asgi import Receive, RequestContext, Scope, Send
from bastion.tracing import format_traceparent

if TYPE_CHECKING:
    from bastion.gateway.proxy import ProxyApp

# uvicorn's default largest message; the upstream side allows the same.
_MAX_MESSAGE = 16 * 1024 * 1024
_INTERNAL_ERROR = 1011


async def proxy_websocket(
    proxy: ProxyApp,
    session: aiohttp.ClientSession | None,
    scope: Scope,
    receive: Receive,
    send: Send,
    ctx: RequestContext | None = None,
) -> None:
    """Relay one WebSocket connection between the client (ASGI) and the upstream.

    ``ctx`` is the handshake's request context when it went through the guards: its
    trace id goes upstream, and its status says how the handshake ended. Without a
    ``session`` (a transport that carries no WebSockets) the upgrade is refused.
    """
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    if not proxy.config.websockets or session is None:
        if ctx is not None:
            ctx.status = 403
        await send({"type": "websocket.close", "code": 1008})
        return
    protocols = [
        p.strip()
        for key, value in scope["headers"]
        if key == b"sec-websocket-protocol"
        for p in value.decode("latin-1").split(",")
        if p.strip()
    ]
    try:
        upstream = await session.ws_connect(
            proxy.websocket_url(scope),
            headers=proxy.upstream_headers(scope, ctx, websocket=True),
            protocols=protocols,
            autoping=True,
            max_msg_size=_MAX_MESSAGE,
            timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        if proxy.logger is not None:
            proxy.logger.warning(
                "upstream refused the websocket upgrade", path=scope["path"], error=repr(exc)
            )
        # Before accept, a close makes the server answer the handshake with 403.
        if ctx is not None:
            ctx.status = 403
            ctx.log["upstream_error"] = type(exc).__name__
        await send({"type": "websocket.close", "code": 1008})
        return
    accept: dict[str, Any] = {"type": "websocket.accept"}
    if upstream.protocol:
        accept["subprotocol"] = upstream.protocol
    if ctx is not None:
        ctx.status = 101
        # The guards' headers (trace id, rate limits) go with the handshake's response.
        traceparent = format_traceparent(ctx.trace_id, ctx.span_id, ctx.trace_flags)
        headers = [(b"traceparent", traceparent), (b"x-request-id", ctx.request_id.encode())]
        accept["headers"] = headers + list(ctx.response_headers)
    await send(accept)
    to_upstream = asyncio.ensure_future(_client_to_upstream(receive, upstream))
    to_client = asyncio.ensure_future(_upstream_to_client(upstream, send))
    try:
        await asyncio.wait({to_upstream, to_client}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (to_upstream, to_client):
            task.cancel()
        await asyncio.gather(to_upstream, to_client, return_exceptions=True)
        if not upstream.closed:
            await upstream.close()


async def _client_to_upstream(receive: Receive, upstream: aiohttp.ClientWebSocketResponse) -> None:
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "websocket.receive":
            text = message.get("text")
            if text is not None:
                await upstream.send_str(text)
            else:
                await upstream.send_bytes(message.get("bytes") or b"")
        elif kind == "websocket.disconnect":
            await upstream.close(code=int(message.get("code", 1000)))
            return


async def _upstream_to_client(upstream: aiohttp.ClientWebSocketResponse, send: Send) -> None:
    try:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.TEXT:
                await send({"type": "websocket.send", "text": message.data})
            elif message.type == aiohttp.WSMsgType.BINARY:
                await send({"type": "websocket.send", "bytes": message.data})
            elif message.type == aiohttp.WSMsgType.ERROR:
                break
    finally:
        code = upstream.close_code or 1000
        if code == 1006:
            code = _INTERNAL_ERROR
        # The client may be gone already; then there is nobody to tell.
        with contextlib.suppress(Exception):
            await send({"type": "websocket.close", "code": code})
