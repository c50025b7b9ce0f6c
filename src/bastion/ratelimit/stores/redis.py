"""The Redis rate limit store: one Lua script decides all of a request's rules in one round trip.

- The script reads the time with ``TIME``, so every gateway process uses the
  Redis server's clock and clock skew between hosts changes nothing.
- It is sent with ``EVALSHA``; when the server answers ``NOSCRIPT`` (restarted,
  flushed, failed over), the script is sent again with ``EVAL``, which also caches it.
- Every key carries the hash tag ``{key_prefix}``: all of a request's keys land
  in one Redis Cluster slot, which is what lets one script touch them atomically.
- Every key gets a ``PEXPIRE`` as long as its state can matter.
- Decisions made by concurrent requests in the same event loop turn are written
  to Redis together in one pipeline (each request still costs one script call):
  under load, many requests share one network round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError

from bastion.ratelimit.algorithms import CONCURRENCY, Verdict
from bastion.ratelimit.stores import Check, Decision

SCRIPT = files("bastion.ratelimit").joinpath("lua/decide.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_Pending = tuple[list[Any], "asyncio.Future[Any]"]


def _script_args(op: str, checks: Sequence[Check], request_id: str, prefix: str, now: str = "") -> list[Any]:
    args: list[Any] = ["EVALSHA", SCRIPT_SHA, len(checks)]
    args.extend(prefix + check.key for check in checks)
    args.append(op)
    args.append(request_id)
    args.append(now)
    for check in checks:
        args.extend(check.limit.args())
        args.append(check.cost)
        args.append(1 if check.shadow else 0)
    return args


def _decision(reply: list[int]) -> Decision:
    verdicts = [
        Verdict(reply[i] == 1, None, int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
        for i in range(2, len(reply), 4)
    ]
    return Decision(reply[0] == 1, verdicts)


class RedisStore:
    """Rate limit state in Redis, shared by every process that uses the same server and prefix."""

    name = "redis"
    sync = False

    def __init__(self, url: str, *, key_prefix: str = "bastion:rl", timeout_s: float = 0.05) -> None:
        self.url = url
        self.prefix = "{" + key_prefix + "}:"
        # The guard bounds each decision with its own timeout; the socket timeouts only
        # make sure a dead connection is noticed and dropped from the pool.
        self.redis: Redis = Redis.from_url(
            url,
            socket_timeout=max(1.0, timeout_s * 20),
            socket_connect_timeout=max(0.2, timeout_s * 4),
            max_connections=64,
        )
        self._queue: list[_Pending] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Not available: Redis needs I/O."""
        raise NotImplementedError("the Redis store decides asynchronously")

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide every check in one script call (one round trip, shared with concurrent callers)."""
        reply = await self._call(_script_args("d", checks, request_id, self.prefix))
        return _decision(reply)

    async def decide_at(self, checks: Sequence[Check], request_id: str, now_us: int) -> Decision:
        """Decide as if the server clock read ``now_us``: for tests that replay a timeline."""
        reply = await self._call(_script_args("d", checks, request_id, self.prefix, str(now_us)))
        return _decision(reply)

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        """Free the request's concurrency slots."""
        held = [c for c in checks if c.limit.algorithm == CONCURRENCY]
        if held:
            await self._call(_script_args("r", held, request_id, self.prefix))

    async def _call(self, args: list[Any]) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._start_flush)
        return await future

    def _start_flush(self) -> None:
        self._flush_scheduled = False
        batch, self._queue = self._queue, []
        task = asyncio.get_running_loop().create_task(self._flush(batch))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            if len(batch) == 1:
                results: list[Any] = [await self._run_one(batch[0][0])]
            else:
                results = await self._run_many([args for args, _ in batch])
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

    async def _run_one(self, args: list[Any]) -> Any:
        try:
            return await self.redis.execute_command(*args)  # type: ignore[no-untyped-call]
        except NoScriptError:
            return await self.redis.execute_command(  # type: ignore[no-untyped-call]
                "EVAL", SCRIPT, *args[2:]
            )

    async def _run_many(self, many: list[list[Any]]) -> list[Any]:
        pipe = self.redis.pipeline(transaction=False)
        for args in many:
            pipe.execute_command(*args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        missing = [i for i, r in enumerate(results) if isinstance(r, NoScriptError)]
        if missing:
            pipe = self.redis.pipeline(transaction=False)
            for i in missing:
                pipe.execute_command("EVAL", SCRIPT, *many[i][2:])
            for i, result in zip(missing, await pipe.execute(raise_on_error=False), strict=True):
                results[i] = result
        return results

    async def start(self) -> None:
        """Load the script (a failure here is not fatal: decisions load it on demand)."""
        # Redis may come up later; EVAL loads the script then.
        with contextlib.suppress(Exception):
            await self.redis.script_load(SCRIPT)

    async def close(self) -> None:
        """Wait for writes in flight, then close the connection pool."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.redis.aclose()

    async def ping(self) -> bool:
        """Whether Redis answers ``PING``."""
        try:
            return bool(await self.redis.ping())
        except Exception:
            return False
