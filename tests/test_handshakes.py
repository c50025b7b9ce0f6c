"""WebSocket handshakes through the guards: what the chain sees, and what a refusal becomes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion import Bastion
from bastion.asgi import HANDSHAKE_KEY
from bastion.handshakes import guard_handshake
from tests.support import LogCapture


@pytest.mark.parametrize("denial", [True, False])
def test_a_refused_handshake_is_an_http_response_where_the_server_allows_one(denial: bool) -> None:
    seen: dict[str, Any] = {}

    async def refusing_guards(scope: dict[str, Any], receive: Any, send: Any) -> None:
        seen["scope"] = scope
        seen["body"] = await receive()
        await send({"type": "http.response.start", "status": 429, "headers": [(b"retry-after", b"7")]})
        await send({"type": "http.response.body", "body": b"{}", "more_body": False})

    incoming = [{"type": "websocket.connect"}]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return incoming.pop(0)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "websocket",
        "scheme": "wss",
        "path": "/ws",
        "headers": [],
        "subprotocols": ["chat"],
        "extensions": {"websocket.http.response": {}} if denial else {},
    }
    asyncio.run(guard_handshake(refusing_guards, scope, receive, send))
    http_scope = seen["scope"]
    assert (http_scope["type"], http_scope["method"], http_scope["scheme"]) == ("http", "GET", "https")
    assert "subprotocols" not in http_scope and http_scope[HANDSHAKE_KEY][0] is scope
    assert seen["body"] == {"type": "http.request", "body": b"", "more_body": False}
    assert incoming == []  # the connect message was read before answering
    if denial:
        assert [m["type"] for m in sent] == ["websocket.http.response.start", "websocket.http.response.body"]
        assert sent[0]["status"] == 429 and sent[0]["headers"] == [(b"retry-after", b"7")]
    else:
        assert sent == [{"type": "websocket.close", "code": 1008}]  # the server answers 403


class Relay:
    """An app that relays WebSockets itself, like the gateway's proxy: it records what reaches it."""

    guards_handshakes = True

    def __init__(self) -> None:
        self.reached: list[dict[str, Any]] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.reached.append(scope)
        if scope["type"] == "http" and HANDSHAKE_KEY in scope:
            _, ws_receive, ws_send = scope[HANDSHAKE_KEY]
            await ws_receive()
            await ws_send({"type": "websocket.accept"})


def _websocket_scope() -> dict[str, Any]:
    return {
        "type": "websocket",
        "scheme": "ws",
        "path": "/ws",
        "query_string": b"",
        "headers": [(b"host", b"api.example.com")],
        "client": ("203.0.113.7", 5555),
        "extensions": {"websocket.http.response": {}},
    }


async def _handshake(app: Any) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "websocket.connect"}]

    async def receive() -> dict[str, Any]:
        return incoming.pop(0) if incoming else {"type": "websocket.disconnect", "code": 1000}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(_websocket_scope(), receive, send)
    return sent


def test_bastion_runs_the_handshakes_of_a_relaying_app_through_its_guards() -> None:
    relay = Relay()
    rules = [{"name": "per-client", "key": "ip", "limit": "1/minute"}]
    app = Bastion(
        relay, {"store": "memory://", "rate_limits": {"rules": rules}}, env={}, log_stream=LogCapture()
    )

    async def twice() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return await _handshake(app), await _handshake(app)

    first, second = asyncio.run(twice())
    assert [m["type"] for m in first] == ["websocket.accept"]
    assert relay.reached[0]["type"] == "http" and relay.reached[0]["method"] == "GET"
    assert len(relay.reached) == 1  # the second never reached the app
    assert second[0]["type"] == "websocket.http.response.start" and second[0]["status"] == 429
    assert b'"RATE_LIMITED"' in second[1]["body"]


def test_an_app_that_does_not_relay_websockets_gets_them_untouched() -> None:
    class Plain(Relay):
        guards_handshakes = False

        async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
            self.reached.append(scope)
            await receive()
            await send({"type": "websocket.accept"})

    plain = Plain()
    app = Bastion(plain, {"store": "memory://"}, env={}, log_stream=LogCapture())
    assert [m["type"] for m in asyncio.run(_handshake(app))] == ["websocket.accept"]
    assert plain.reached[0]["type"] == "websocket" and HANDSHAKE_KEY not in plain.reached[0]
