"""The Redis store: each step is one Lua script, so each is one atomic round trip.

- A first request costs two round trips (claim, complete); a replay one (the
  claim's reply carries the stored response).
- Scripts are sent with ``EVALSHA``; on ``NOSCRIPT`` (a restarted, flushed or
  failed-over server) the script is sent again with ``EVAL``, which caches it.
- Each script touches one key, and each key carries a hash tag (``{digest}``),
  so the store works unchanged on Redis Cluster.
- Leases use the server's clock (``TIME``), so hosts with skewed clocks agree.
- Records expire with ``PEXPIRE``: Redis itself cleans up.
- Calls made by concurrent requests in the same event loop turn go to Redis
  together in one pipeline (each request still costs one script call): under a
  burst, a worker needs one connection and one round trip, not one of each per request.
"""

from __future__ import annotations

import asyncio
import hashlib
from importlib.resources import files
from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import NoScriptError

from bastion.idempotency.core import CLAIMED, ClaimResult, State, StoredResponse, took_over
from bastion.idempotency.stores import WaitingStore
from bastion.stores import RedisResource


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

_Call = tuple[_Script, str, tuple[Any, ...]]
_Pending = tuple[_Call, "asyncio.Future[Any]"]


class RedisStore(RedisResource, WaitingStore):
    """Idempotency records in Redis, shared by every process that uses the same server and prefix."""

    kind = "redis"

    def __init__(
        self,
        url: str,
        *,
        key_prefix: str = "bastion:idem",
        max_connections: int = 64,
        timeout_s: float = 0.25,
    ) -> None:
        self.url = url
        self.prefix = key_prefix + ":{"
        self.name = "idempotency:redis"
        # A blocking pool: a burst of requests queues for a connection instead of failing.
        # The guard bounds each step by ``timeout`` (idempotency.timeout); the socket
        # timeouts only free a connection whose reply never comes, a while after that.
        pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(1.0, timeout_s * 20),
            socket_timeout=max(1.0, timeout_s * 20),
            socket_connect_timeout=max(0.2, timeout_s * 4),
        )
        self.redis: Redis = Redis.from_pool(pool)
        self.timeout_s = timeout_s
        self._queue: list[_Pending] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def _key(self, key: str) -> str:
        return self.prefix + key + "}"

    async def _eval(self, script: _Script, key: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append(((script, key, args), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        self._track(self._flush(batch))

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            # The batch's answer within ``timeout``: a frozen server costs each request that
            # long, not the socket timeout (redis-py drops a connection cut off mid-reply).
            async with asyncio.timeout(self.timeout_s):
                if len(batch) == 1:
                    results: list[Any] = [await self._run_one(batch[0][0])]
                else:
                    results = await self._run_many([call for call, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run_one(self, call: _Call) -> Any:
        script, key, args = call
        try:
            return await self.redis.execute_command("EVALSHA", script.sha, 1, key, *args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            return await self.redis.execute_command("EVAL", script.text, 1, key, *args)  # type: ignore[no-untyped-call]

    async def _run_many(self, calls: list[_Call]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for script, key, args in calls:
            pipe.execute_command("EVALSHA", script.sha, 1, key, *args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            pipe = self.redis.pipeline(transaction=False)
            for i in missing:
                script, key, args = calls[i]
                pipe.execute_command("EVAL", script.text, 1, key, *args)
            for i, result in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = result
        return results

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key`` in one script call; a completed record comes back in the same reply."""
        reply = await self._eval(CLAIM, self._key(key), fingerprint, owner, lease_ms, ttl_ms, trace_id)
        kind = reply[0]
        if kind == 1:
            return took_over(reply[2]) if reply[1] == 1 else CLAIMED
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
