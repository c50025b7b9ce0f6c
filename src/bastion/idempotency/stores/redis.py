"""The Redis store: each step is one Lua script, so each is one atomic round trip.

- A first request costs two round trips (claim, complete); a replay one (the
  claim's reply carries the stored response).
- Scripts are sent with ``EVALSHA``; on ``NOSCRIPT`` (a restarted, flushed or
  failed-over server) the script is sent again with ``EVAL``, which caches it.
- Each script touches one key, and each key carries a hash tag (``{digest}``),
  so the store works unchanged on Redis Cluster.
- Leases use the server's clock (``TIME``), so hosts with skewed clocks agree.
- Records expire with ``PEXPIRE``: Redis itself cleans up.
"""

from __future__ import annotations

import hashlib
from importlib.resources import files
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError

from bastion.idempotency.core import CLAIMED, TOOK_OVER, ClaimResult, State, StoredResponse


class _Script:
    """A Lua script from ``idempotency/lua`` and its SHA-1."""

    __slots__ = ("sha", "text")

    def __init__(self, name: str) -> None:
        self.text = files("bastion.idempotency").joinpath(f"lua/{name}.lua").read_text(encoding="utf-8")
        self.sha = hashlib.sha1(self.text.encode(), usedforsecurity=False).hexdigest()


CLAIM = _Script("claim")
COMPLETE = _Script("complete")
RELEASE = _Script("release")
RENEW = _Script("renew")


class RedisStore:
    """Idempotency records in Redis, shared by every process that uses the same server and prefix."""

    kind = "redis"

    def __init__(self, url: str, *, key_prefix: str = "bastion:idem", max_connections: int = 64) -> None:
        self.url = url
        self.prefix = key_prefix + ":{"
        self.name = "idempotency:redis"
        # A blocking pool: a burst of requests queues for a connection instead of failing.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=1,
        )
        self.redis: Redis = Redis.from_pool(pool)

    def _key(self, key: str) -> str:
        return self.prefix + key + "}"

    async def _eval(self, script: _Script, key: str, *args: Any) -> Any:
        try:
            return await self.redis.execute_command("EVALSHA", script.sha, 1, key, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            return await self.redis.execute_command("EVAL", script.text, 1, key, *args)  # type: ignore[no-untyped-call]

    async def claim(self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int) -> ClaimResult:
        """Claim ``key`` in one script call; a completed record comes back in the same reply."""
        reply = await self._eval(CLAIM, self._key(key), fingerprint, owner, lease_ms, ttl_ms)
        kind = reply[0]
        if kind == 1:
            return TOOK_OVER if reply[1] == 1 else CLAIMED
        stored_fp = reply[1].decode() if isinstance(reply[1], bytes) else str(reply[1])
        if kind == 2:
            return ClaimResult(State.IN_PROGRESS, stored_fp, None, int(reply[2]))
        response = StoredResponse(
            int(reply[2]),
            StoredResponse.headers_from_blob(reply[3] or b"[]"),
            reply[4] or b"",
            reply[5] == 1,
        )
        return ClaimResult(State.COMPLETED, stored_fp, response)

    async def complete(self, key: str, owner: str, response: StoredResponse, ttl_ms: int) -> bool:
        """Store the response if ``owner`` still holds the claim (one script call)."""
        reply = await self._eval(
            COMPLETE,
            self._key(key),
            owner,
            response.status,
            response.headers_blob(),
            response.body,
            1 if response.body_stored else 0,
            ttl_ms,
        )
        return bool(reply == 1)

    async def release(self, key: str, owner: str) -> bool:
        """Drop the claim if ``owner`` still holds it."""
        return bool(await self._eval(RELEASE, self._key(key), owner) == 1)

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        return bool(await self._eval(RENEW, self._key(key), owner, lease_ms) == 1)

    async def start(self) -> None:
        """Load the scripts when Redis answers; if it does not yet, the first call loads them."""
        try:
            for script in (CLAIM, COMPLETE, RELEASE, RENEW):
                await self.redis.script_load(script.text)
        except Exception:  # noqa: S110 - Redis may come up later; EVAL then loads each script
            pass

    async def close(self) -> None:
        """Close the connection pool."""
        await self.redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers ``PING``."""
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False
