"""One generation of a :class:`~bastion.Bastion`: the chain one configuration built, and who runs on it.

A request takes the current generation once, at its start, and runs to its end on
that generation's chain, whatever reloads happen meanwhile. A reload builds a new
generation, opens its resources, and swaps one reference; the old generation is
*retired*: its resources close once the last request that started on it has ended,
except those a generation still in use shares (:meth:`bastion.stack.BuildContext.shared`).
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

    __slots__ = ("_idle", "active", "chain", "config", "context", "fresh", "resources")

    def __init__(
        self, config: Config, context: Any, chain: ASGIApp, fresh: list[Resource], carried: list[Resource]
    ) -> None:
        self.config = config
        #: The build context its guard builders saw (a :class:`bastion.stack.BuildContext`).
        self.context = context
        self.chain = chain
        #: What the builders registered anew: opened before the generation serves.
        self.fresh = fresh
        #: Every resource the chain uses: the fresh ones and those carried over, already open.
        self.resources = [*fresh, *carried]
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
        """Open the fresh resources in order; on a failure close those opened and raise."""
        await open_all(self.fresh, logger)

    async def close(self, logger: Any, keep: list[Generation]) -> None:
        """Close every resource none of ``keep`` uses, in reverse order; a failure is logged, not raised."""
        used = {id(resource) for generation in keep for resource in generation.resources}
        await close_all([r for r in self.resources if id(r) not in used], logger)


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
