"""Store URLs: ``memory://``, ``sqlite:///PATH``, ``redis://HOST:PORT/DB``, ``postgresql://...``.

Capabilities keep their own store implementations (``idempotency/stores``,
``ratelimit/stores``); this module parses the URL that picks one, so that every
capability accepts the same URLs and reports a bad one the same way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

StoreKind = Literal["memory", "sqlite", "redis", "postgres"]

_SCHEMES: dict[str, StoreKind] = {
    "memory": "memory",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "postgresql": "postgres",
    "postgres": "postgres",
}


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL: which kind of store, and the URL to hand its driver."""

    kind: StoreKind
    url: str
    path: str = ""

    @property
    def redacted(self) -> str:
        """The URL without its password, for logs and metrics labels."""
        parts = urlsplit(self.url)
        if parts.password is None:
            return self.url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return parts._replace(netloc=netloc).geturl()


def parse_store_url(url: str) -> StoreURL:
    """Parse and check a store URL; raises :class:`ValueError` naming what is wrong."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{url!r} is not a store URL; use memory://, sqlite:///PATH, "
            "redis://HOST:PORT/DB or postgresql://HOST/DB"
        )
    kind = _SCHEMES.get(scheme.lower())
    if kind is None:
        raise ValueError(f"unknown store scheme {scheme!r}; use memory, sqlite, redis or postgresql")
    if kind == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"{url!r}: a SQLite URL is sqlite:///relative.db or sqlite:////abs.db")
        path = rest[1:]
        return StoreURL(kind, url, path)
    if kind in ("redis", "postgres") and not rest and scheme != "unix":
        raise ValueError(f"{url!r} names no host")
    return StoreURL(kind, url)


class RedisResource:
    """What the Redis stores share: background calls tracked, and one way to close and ping.

    Subclasses set ``self.redis`` (a ``redis.asyncio.Redis``) and ``self._tasks`` in
    their constructor, and start background work with :meth:`_track`.
    """

    redis: Any
    _tasks: set[asyncio.Task[None]]

    def _track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, kept until it ends so ``close`` can wait for it."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Wait for calls in flight, then close the connection pool."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers ``PING``."""
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False
