"""The dashboard's live against shadow refusals."""

from __future__ import annotations

import io
from typing import Any

import httpx

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send


async def ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


async def test_shadow_refusals_are_shown_beside_live_ones() -> None:
    rules: list[dict[str, Any]] = [
        {"name": "watch", "match": "GET /watched", "limit": "1/minute", "mode": "shadow"},
        {"name": "live", "match": "GET /live", "limit": "1/minute"},
    ]
    config = {
        "store": "memory://",
        "observability": {"dashboard": {"enabled": True}},
        "rate_limits": {"rules": rules},
    }
    app = Bastion(ok, config, env={}, log_stream=io.BytesIO())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50123))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        before = (await http.get("/_bastion/dashboard/data")).json()
        statuses = [(await http.get("/watched")).status_code for _ in range(4)]
        statuses += [(await http.get("/live")).status_code for _ in range(3)]
        data = (await http.get("/_bastion/dashboard/data")).json()
    assert before["refusals"] == []
    assert statuses == [200] * 5 + [429] * 2
    assert data["refusals"] == [{"guard": "rate_limit", "code": "RATE_LIMITED", "live": 2.0, "shadow": 3.0}]
