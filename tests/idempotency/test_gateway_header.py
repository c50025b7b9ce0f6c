"""The gateway forwards ``Idempotency-Key`` upstream, so the upstream can deduplicate too."""

from __future__ import annotations

import httpx

from bastion.gateway.server import build_gateway
from tests.gateway.conftest import Server, upstream  # noqa: F401 - the session fixture
from tests.support import LogCapture


async def test_the_upstream_sees_the_idempotency_key(upstream: Server) -> None:  # noqa: F811
    app = build_gateway({"upstream": upstream.base, "store": "memory://"}, env={}, log_stream=LogCapture())
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5555))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example.com") as http:
            response = await http.post("/echo/k", content=b"{}", headers={"Idempotency-Key": '"order-7"'})
            replay = await http.post("/echo/k", content=b"{}", headers={"Idempotency-Key": '"order-7"'})
    finally:
        await app.bastion.shutdown()
    sent = [value for name, value in response.json()["headers"] if name == "idempotency-key"]
    assert sent == ['"order-7"']  # as the client sent it
    assert replay.headers["idempotent-replayed"] == "true"
