"""One generation of a :class:`~bastion.Bastion`: the chain one configuration built, and who runs on it.

A request takes the current generation once, at its start, and runs to its end on
that generation's chain, whatever reloads happen meanwhile. A reload builds a new
generation, opens its resources, and swaps one reference; the old generation is
*retired*: its resources close once the last request that started on it has ended.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from bastion.asgi import ASGIApp
from bastion.protocols import Resource

if TYPE_CHECKING:
    from bastion.config import Config


class Generation:
    """A guard chain, the configuration and resources it was built from, and its requests in flight."""

    __slots__ = ("_idle", "active", "chain", "config", "context", "resources")

    def __init__(self, config: Config, context: Any, chain: ASGIApp, resources: list[Resource]) -> None:
        self.config = config
        #: The build context its guard builders saw (a :class:`bastion.stack.BuildContext`).
        self.context = context
        self.chain = chain
        #: What the builders registered: opened before the generation serves, closed after it.
        self.resources = resources
        #: Requests that started on this generation and have not ended.
        self.active = 0
        self._idle: asyncio.Event | None = None

    def enter(self) -> None:
        """One more request runs on this generation (called with no ``await`` after reading it)."""
        self.active += 1

    def leave(self) -> None:
        """A request that ran on this generation has ended."""
        self.active -= 1
        if self.active == 0 and self._idle is not None:
            self._idle.set()

    async def finished(self) -> None:
        """Return once no request runs on this generation (a retired one gains no new request)."""
        if self.active == 0:
            return
        self._idle = asyncio.Event()
        await self._idle.wait()

    async def open(self, logger: Any) -> None:
        """Open every resource in order; on a failure close those opened and raise."""
        await open_all(self.resources, logger)

    async def close(self, logger: Any) -> None:
        """Close every resource, in reverse order of opening; a failure is logged, not raised."""
        await close_all(self.resources, logger)


async def open_all(resources: list[Resource], logger: Any) -> None:
    """Open ``resources`` in order; on a failure close those opened (logging) and raise."""
    opened: list[Resource] = []
    try:
        for resource in resources:
            await resource.start()
            opened.append(resource)
    except BaseException:
        await close_all(opened, logger)
        raise


async def close_all(resources: list[Resource], logger: Any) -> None:
    """Close ``resources`` in reverse order; a failure is logged and the rest still close."""
    for resource in reversed(resources):
        try:
            await resource.close()
        except Exception as exc:
            logger.error("closing resource failed", resource=resource.name, exc_info=exc)
