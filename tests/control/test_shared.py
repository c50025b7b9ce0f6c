"""Resources shared across reloads: kept while their key is unchanged, closed once no chain uses them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bastion import Bastion, stack
from bastion.asgi import ASGIApp
from bastion.protocols import GuardContext
from tests.support import LogCapture


class Probe:
    """A resource that records when it opens and closes."""

    def __init__(self, name: str, events: list[str]) -> None:
        self.name = name
        self.events = events

    async def start(self) -> None:
        self.events.append(f"start {self.name}")

    async def close(self) -> None:
        self.events.append(f"close {self.name}")

    async def ping(self) -> bool:
        return True


async def nothing(scope: Any, receive: Any, send: Any) -> None:
    """The app is never called here."""


async def test_a_shared_resource_survives_reloads_while_its_key_is_unchanged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[str] = []
    builders = stack._capability_builders()

    def probe(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
        prefix = ctx.config.idempotency.key_prefix
        assert isinstance(ctx, stack.BuildContext)
        ctx.shared(("probe", prefix), lambda: Probe(prefix, events))
        return None

    monkeypatch.setattr(stack, "_capability_builders", lambda: [probe, *builders])
    bastion = Bastion(nothing, {"idempotency": {"key_prefix": "a"}}, env={}, log_stream=LogCapture())
    await bastion.startup()
    first = [r for r in bastion.resources if isinstance(r, Probe)]
    assert await bastion.reload({"idempotency": {"key_prefix": "a"}})
    await asyncio.sleep(0)
    # The same object, neither closed nor opened again.
    assert [r for r in bastion.resources if isinstance(r, Probe)] == first
    assert events == ["start a"]
    assert await bastion.reload({"idempotency": {"key_prefix": "b"}})
    for _ in range(10):
        await asyncio.sleep(0)
    # The new one opens before the swap; the old one closes after, once no chain uses it.
    assert events == ["start a", "start b", "close a"]
    await bastion.shutdown()
    assert events == ["start a", "start b", "close a", "close b"]
