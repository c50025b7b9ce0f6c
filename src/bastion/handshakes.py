"""WebSocket handshakes through the guards, as the GET requests they are.

An app that relays WebSockets itself (the gateway's proxy) says so with
``guards_handshakes = True``; :class:`~bastion.Bastion` then runs each handshake
through its HTTP guard chain: it gets a trace id, counts against the rate limits
that match it, and is checked against its operation when the OpenAPI description
has one (a path absent from the description is not refused: WebSocket endpoints
are rarely described). The app at the end of the chain finds the WebSocket's own
``(scope, receive, send)`` under :data:`~bastion.asgi.HANDSHAKE_KEY`.

A guard's refusal (``429`` over a limit, say) is sent as the handshake's HTTP
response, with its headers and problem body, where the server offers ASGI's
WebSocket denial response, and as a close before accept (which the server
answers with ``403``) where it does not. For any other app, WebSockets pass by
the guards untouched, as before.
"""

from __future__ import annotations

from typing import Any

from bastion.asgi import HANDSHAKE_KEY, Message, Receive, Scope, Send

#: The server lets the app answer a handshake with an HTTP response of its own.
_DENIAL = "websocket.http.response"


async def guard_handshake(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """Run a WebSocket handshake through ``app`` (bastion's guards) as the GET request it is.

    The guards see an HTTP scope; the proxy at the end of the chain finds the
    WebSocket's own scope, ``receive`` and ``send`` under :data:`HANDSHAKE_KEY` and
    relays the connection. Whatever the guards answer instead (a problem) goes to the
    client as the handshake's response.
    """
    http_scope = {key: value for key, value in scope.items() if key != "subprotocols"}
    http_scope["type"] = "http"
    http_scope["method"] = "GET"
    http_scope["scheme"] = "https" if scope.get("scheme") == "wss" else "http"
    http_scope.setdefault("query_string", b"")
    http_scope[HANDSHAKE_KEY] = (scope, receive, send)
    denial = _DENIAL in (scope.get("extensions") or {})
    connected = False
    refused = False

    async def no_body() -> Message:
        # A handshake has no body; a guard that asks for one gets an empty one.
        return {"type": "http.request", "body": b"", "more_body": False}

    async def answer(message: Message) -> None:
        # Reached only when a guard (or the boundary) answers instead of the upstream.
        nonlocal connected, refused
        if not connected:
            connected = True
            if (await receive())["type"] != "websocket.connect":
                return
        kind = message["type"]
        if denial:
            if kind == "http.response.start":
                await send({**message, "type": "websocket.http.response.start"})
            elif kind == "http.response.body":
                await send({**message, "type": "websocket.http.response.body"})
        elif not refused:
            refused = True
            await send({"type": "websocket.close", "code": 1008})

    await app(http_scope, no_body, answer)
