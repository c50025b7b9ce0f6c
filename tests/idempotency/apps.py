"""Small ASGI applications for the idempotency tests."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from bastion.asgi import Receive, Scope, Send
from bastion.problems import Conflict


class OrdersApp:
    """``POST /orders``: counts executions; the ``X-Mode`` header (not part of the fingerprint)
    makes it fail, raise, stall or answer with a cookie."""

    def __init__(self) -> None:
        self.executions = 0
        self.gate: asyncio.Event | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        headers = dict(scope["headers"])
        mode = headers.get(b"x-mode", b"").decode()
        self.executions += 1
        number = self.executions
        if mode == "slow" and self.gate is not None:
            await self.gate.wait()
        if mode == "raise":
            raise RuntimeError("the handler failed")
        if mode == "conflict":
            raise Conflict(code="ORDER_CONFLICT", detail="that order conflicts")
        status = 500 if mode == "fail" else 201
        response: dict[str, Any] = {"order": number, "request": orjson.loads(body) if body else None}
        out = [(b"content-type", b"application/json"), (b"location", f"/orders/{number}".encode())]
        if mode == "cookie":
            out.append((b"set-cookie", b"session=secret"))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": orjson.dumps(response)})
