"""Idempotency scope: one caller's record is never replayed to another, nor its per-caller headers."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send
from bastion.config.idempotency import IdempotencyConfig
from bastion.idempotency.scope import CallerScope
from tests.idempotency.conftest import store_settings as every_store  # noqa: F401 - each test runs on every store
from tests.support import LogCapture, client

ORDER = {"item": "book"}


class AccountApp:
    """``POST /orders`` for the caller named by ``Authorization``; answers with per-caller headers."""

    def __init__(self) -> None:
        self.runs: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body", False):
            pass
        headers = dict(scope["headers"])
        caller = headers.get(b"authorization", b"anonymous").decode()
        self.runs.append(caller)
        out = [
            (b"content-type", b"application/json"),
            (b"set-cookie", f"session={caller}".encode()),
            (b"authentication-info", b'nextnonce="abc"'),
            (b"www-authenticate", b"Bearer"),
            (b"proxy-authenticate", b"Basic"),
            (b"x-session-token", f"token-of-{caller}".encode()),
            (b"x-order", b"kept"),
        ]
        body = orjson.dumps({"order": len(self.runs), "caller": caller})
        await send({"type": "http.response.start", "status": 201, "headers": out})
        await send({"type": "http.response.body", "body": body})


async def post(http: Any, authorization: str) -> Any:
    """An order with key ``1`` from the caller ``authorization``, carrying no cookie from earlier answers."""
    http.cookies.clear()
    return await http.post(
        "/orders", json=ORDER, headers={"Idempotency-Key": "1", "Authorization": authorization}
    )


def guarded(app: AccountApp, settings: dict[str, Any], **extra: Any) -> Bastion:
    idempotency = {"require": ["POST /orders"], **settings, **extra}
    return Bastion(app, {"store": "memory://", "idempotency": idempotency}, env={}, log_stream=LogCapture())


async def test_two_callers_behind_one_address_never_share_a_key(every_store: dict[str, Any]) -> None:  # noqa: F811
    app = AccountApp()
    bastion = guarded(app, every_store)
    async with client(bastion) as http:
        alice = await post(http, "alice")
        bob = await post(http, "bob")
        alice_again = await post(http, "alice")
    await bastion.shutdown()
    assert app.runs == ["alice", "bob"]  # each order ran once
    assert bob.json()["caller"] == "bob"
    assert "idempotent-replayed" not in bob.headers
    assert alice_again.headers["idempotent-replayed"] == "true"
    assert alice_again.json() == alice.json()


async def test_a_replay_carries_no_per_caller_header(every_store: dict[str, Any]) -> None:  # noqa: F811
    app = AccountApp()
    bastion = guarded(app, every_store, never_replay_headers=["X-Session-Token"])
    async with client(bastion) as http:
        first = await post(http, "alice")
        replay = await post(http, "alice")
    await bastion.shutdown()
    assert first.headers["x-session-token"] == "token-of-alice"
    assert first.headers["authentication-info"]
    assert replay.headers["idempotent-replayed"] == "true"
    for name in (
        "set-cookie",
        "authentication-info",
        "www-authenticate",
        "proxy-authenticate",
        "x-session-token",
    ):
        assert name not in replay.headers, name
    assert replay.headers["x-order"] == "kept"


@pytest.mark.parametrize("every_store", ["memory"], indirect=True)
async def test_the_session_cookie_names_the_caller(every_store: dict[str, Any]) -> None:  # noqa: F811
    app = AccountApp()
    bastion = guarded(app, every_store, scope_cookies=["sid"])
    async with client(bastion) as http:

        async def post(cookie: str) -> Any:
            http.cookies.clear()
            return await http.post("/orders", json=ORDER, headers={"Idempotency-Key": "1", "Cookie": cookie})

        first = await post("sid=alice; theme=dark")
        other_cookie_changed = await post("theme=light; sid=alice; _ga=1")
        other_session = await post("sid=bob; theme=dark")
    await bastion.shutdown()
    assert first.status_code == other_session.status_code == 201
    assert other_cookie_changed.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in other_session.headers
    assert len(app.runs) == 2


@pytest.mark.parametrize("every_store", ["memory"], indirect=True)
async def test_the_whole_cookie_header_counts_without_session_cookie_names(
    every_store: dict[str, Any],  # noqa: F811
) -> None:
    app = AccountApp()
    bastion = guarded(app, every_store)
    async with client(bastion) as http:
        runs = []
        for cookie in ("sid=alice", "sid=bob", "sid=alice"):
            http.cookies.clear()
            response = await http.post(
                "/orders", json=ORDER, headers={"Idempotency-Key": "1", "Cookie": cookie}
            )
            runs.append(response.headers.get("idempotent-replayed", "ran"))
    await bastion.shutdown()
    assert runs == ["ran", "ran", "true"]


def test_the_caller_hash_is_keyed_by_the_secret() -> None:
    headers = [(b"authorization", b"Basic YWxpY2U6aHVudGVyMg=="), (b"accept", b"*/*")]
    one = CallerScope.from_config(IdempotencyConfig(scope_secret="one"), "redis://h/0")  # type: ignore[arg-type]
    two = CallerScope.from_config(IdempotencyConfig(scope_secret="two"), "redis://h/0")  # type: ignore[arg-type]
    derived = CallerScope.from_config(IdempotencyConfig(), "redis://h/0")
    assert one.of(headers) != two.of(headers)
    assert one.of(headers) == CallerScope.from_config(IdempotencyConfig(scope_secret="one"), "x").of(headers)  # type: ignore[arg-type]
    # Without a configured secret every process on the same store derives the same one.
    assert derived.of(headers) == CallerScope.from_config(IdempotencyConfig(), "redis://h/0").of(headers)
    assert derived.of(headers) != CallerScope.from_config(IdempotencyConfig(), "redis://other/0").of(headers)
    assert one.of([(b"accept", b"*/*")]) == ""
    assert "YWxpY2U6aHVudGVyMg" not in one.of(headers)


def test_the_caller_hash_is_hmac_sha256_of_the_length_prefixed_values() -> None:
    import hmac

    for secret in ("short", "s" * 100):  # a key longer than a block is hashed first (RFC 2104)
        scope = CallerScope.from_config(IdempotencyConfig(scope_secret=secret), "u")  # type: ignore[arg-type]
        values = [b"authorization:Bearer t", b"cookie:sid=1"]
        message = b"".join(b"%d;%b" % (len(v), v) for v in values)
        headers = [(b"authorization", b"Bearer t"), (b"cookie", b"sid=1")]
        assert scope.of(headers) == hmac.new(secret.encode(), message, "sha256").hexdigest()
