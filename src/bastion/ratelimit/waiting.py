"""Waiting for a queued slot while watching the client: a client that leaves gives its slot back.

A request admitted for a slot in the future (a rule with ``throttle``) sleeps until
the slot before the application sees it. Meanwhile ``receive`` is watched for
``http.disconnect``: nobody would read the answer, so the request's slots go back to
the store at once. Any body message read while watching is kept, and the application
gets them first, in order, through :attr:`Waited.receive`; a ``receive`` still
pending when the wait ends is handed over too, so no message is lost or reordered.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable

from bastion.asgi import Message, Receive


class Waited:
    """What a finished wait leaves for the application: the messages read while waiting, then the rest."""

    __slots__ = ("_buffered", "_pending", "_receive")

    def __init__(self, receive: Receive, buffered: deque[Message], pending: asyncio.Future[Message] | None):
        self._receive = receive
        self._buffered = buffered
        self._pending = pending

    async def receive(self) -> Message:
        """The next message: those read while waiting first, then the server's."""
        if self._buffered:
            return self._buffered.popleft()
        pending = self._pending
        if pending is not None:
            self._pending = None
            return await pending
        return await self._receive()

    def close(self) -> None:
        """Drop a ``receive`` the application never took over (its response has ended)."""
        pending = self._pending
        self._pending = None
        if pending is not None and not pending.done():
            pending.cancel()


async def wait_for_slot(
    delay_s: float, receive: Receive, give_back: Callable[[], Awaitable[None]]
) -> Waited | None:
    """Sleep ``delay_s`` while watching ``receive``; ``None`` when the client left (slot given back).

    A cancelled wait (the server gave up on the request) gives the slot back too.
    """
    timer: asyncio.Future[None] = asyncio.ensure_future(asyncio.sleep(delay_s))
    buffered: deque[Message] = deque()
    pending: asyncio.Future[Message] | None = None
    try:
        while not timer.done():
            if pending is None:
                pending = asyncio.ensure_future(receive())
            await asyncio.wait((timer, pending), return_when=asyncio.FIRST_COMPLETED)
            if pending.done():
                message = pending.result()
                pending = None
                if message["type"] == "http.disconnect":
                    timer.cancel()
                    await give_back()
                    return None
                buffered.append(message)
    except BaseException:
        timer.cancel()
        if pending is not None:
            pending.cancel()
        # Shielded so that a cancelled request still returns its slot.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(give_back())
        raise
    return Waited(receive, buffered, pending)
