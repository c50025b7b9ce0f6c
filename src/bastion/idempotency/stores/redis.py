"""The Redis store: each step is one Lua script, so each is one atomic round trip.

- A first request costs two round trips (claim, complete); a replay one (the
  claim's reply carries the stored response).
- Scripts are sent with ``EVALSHA``; on ``NOSCRIPT`` (a restarted, flushed or
  failed-over server) the script is sent again with ``EVAL``, which caches it.
- Each script touches one key, and each key carries a hash tag (``{digest}``),
  so the store works unchanged on Redis Cluster.
- Leases use the server's clock (``TIME``), so hosts with skewed clocks agree.
- Records expire with ``PEXPIRE``: Redis itself cleans up.
- One call is on the wire at a time; the calls of concurrent requests made
  meanwhile go to Redis together in one pipeline (each request still costs one
  script call): under a burst, a worker needs one connection and one round trip,
  not one of each per request.
"""

from __future__ import annotations

from typing import Any

from bastion.idempotency.core import CLAIMED, ClaimResult, State, StoredResponse, took_over
from bastion.idempotency.stores import WaitingStore
from bastion.stores.redis import Arg, Batcher, RedisResource, Script, ScriptCall

CLAIM = Script.packaged("bastion.idempotency", "claim")
COMPLETE = Script.packaged("bastion.idempotency", "complete")
RELEASE = Script.packaged("bastion.idempotency", "release")
RENEW = Script.packaged("bastion.idempotency", "renew")

# Script calls per pipeline at most: the pipeline's replies must all come within the timeout.
_MAX_BATCH = 128


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
        super().__init__(url, timeout_s=timeout_s, max_connections=max_connections)
        self.prefix = key_prefix + ":{"
        self.name = "idempotency:redis"
        # Each request's step is its own script call; a batch goes out as one pipeline.
        self._calls: Batcher[ScriptCall] = Batcher(self.run, self.track, max_batch=_MAX_BATCH)

    async def _eval(self, script: Script, key: str, *args: Arg) -> Any:
        return await self._calls.call(script.call((self.prefix + key + "}",), args))

    async def claim(
        self, key: str, fingerprint: str, owner: str, lease_ms: int, ttl_ms: int, trace_id: str = ""
    ) -> ClaimResult:
        """Claim ``key`` in one script call; a completed record comes back in the same reply."""
        reply = await self._eval(CLAIM, key, fingerprint, owner, lease_ms, ttl_ms, trace_id)
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
            key,
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
        return bool(await self._eval(RELEASE, key, owner) == 1)

    async def renew(self, key: str, owner: str, lease_ms: int) -> bool:
        """Extend the lease if ``owner`` still holds the claim."""
        return bool(await self._eval(RENEW, key, owner, lease_ms) == 1)

    async def start(self) -> None:
        """Load the scripts when Redis answers; if it does not yet, the first call loads them."""
        await self.load(CLAIM, COMPLETE, RELEASE, RENEW)
