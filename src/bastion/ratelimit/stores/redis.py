"""The Redis rate limit store: one Lua script decides all of a request's rules in one round trip.

- The script reads the time with ``TIME``, so every gateway process uses the
  Redis server's clock and clock skew between hosts changes nothing.
- It is sent with ``EVALSHA``; when the server answers ``NOSCRIPT`` (restarted,
  flushed, failed over), the script is sent again with ``EVAL``, which also caches it.
- Every key carries the hash tag ``{key_prefix}``: all of a request's keys land
  in one Redis Cluster slot, which is what lets one script touch them atomically.
- Every key gets a ``PEXPIRE`` as long as its state can matter.
- One script call is on the wire at a time per store; the requests that arrive
  meanwhile go out together in the next call, which decides each of them in turn,
  each atomically. Under load, many requests share one round trip and one call.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Sequence
from importlib.resources import files
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

from bastion.ratelimit.algorithms import CONCURRENCY, Verdict
from bastion.ratelimit.stores import Check, Decision
from bastion.stores import RedisResource

SCRIPT = files("bastion.ratelimit").joinpath("lua/decide.lua").read_text(encoding="utf-8")
SCRIPT_SHA = hashlib.sha1(SCRIPT.encode(), usedforsecurity=False).hexdigest()

_Pending = tuple["_Command", "asyncio.Future[Any]"]

# Requests per script call at most: a call holds Redis for its whole run, and must
# stay well inside the timeout.
_MAX_BATCH = 128


def _script_args(op: str, checks: Sequence[Check], request_id: str, prefix: str, now: str = "") -> list[Any]:
    """One request's script call as a list of arguments (for clients other than this store)."""
    args: list[Any] = ["EVALSHA", SCRIPT_SHA, len(checks)]
    # The algorithm is part of the key: a rule moved to another algorithm starts afresh
    # instead of meeting a key of the wrong Redis type.
    args.extend(f"{prefix}{check.limit.algorithm}:{check.key}" for check in checks)
    args.extend([1, op, request_id, now, len(checks)])
    for check in checks:
        args.extend(check.limit.args())
        args.append(check.cost)
        args.append(1 if check.shadow else 0)
    return args


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)


_EVALSHA = b"$7\r\nEVALSHA\r\n" + _bulk(SCRIPT_SHA.encode())
_EVAL = b"$4\r\nEVAL\r\n" + _bulk(SCRIPT.encode())


class _Command:
    """One request's part of a script call, packed once (RESP): its keys and its arguments."""

    __slots__ = ("args", "keys", "nkeys")

    def __init__(self, nkeys: int, keys: bytes, args: bytes) -> None:
        self.nkeys = nkeys
        self.keys = keys
        self.args = args


def _script_call(head: bytes, commands: Sequence[_Command]) -> bytes:
    """One EVALSHA (or EVAL) carrying the decisions of several requests."""
    nkeys = sum(c.nkeys for c in commands)
    nargs = 1 + sum(4 + (c.nkeys * 7) for c in commands)
    parts = [b"*%d\r\n" % (3 + nkeys + nargs), head, _bulk(b"%d" % nkeys)]
    parts.extend(c.keys for c in commands)
    parts.append(_bulk(b"%d" % len(commands)))
    parts.extend(c.args for c in commands)
    return b"".join(parts)


class _ReplyDeadline:
    """Like ``asyncio.timeout``, but a reply that arrived in time wins over the deadline.

    The timeout covers Redis's answer, not the wait for a turn of a busy event loop:
    a slow process must not be mistaken for a slow store. When the loop lags, the
    deadline's timer and the reply's arrival come due in the same loop iteration and
    the timer would run first; so the timer only schedules the cancellation, one turn
    later, after the reader has had its turn.
    """

    __slots__ = ("_expired", "_finished", "_handle", "_task", "seconds")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expired = False
        self._finished = False
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[Any] | None = None

    async def __aenter__(self) -> None:
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.seconds, loop.call_soon, self._expire)

    def _expire(self) -> None:
        if not self._finished and self._task is not None:
            self._expired = True
            self._task.cancel()

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        self._finished = True
        if self._handle is not None:
            self._handle.cancel()
        if (
            self._expired
            and kind is asyncio.CancelledError
            and self._task is not None
            and self._task.uncancel() == 0
        ):
            raise TimeoutError(f"Redis did not answer within {self.seconds} s") from exc


def _decision(reply: list[int]) -> Decision:
    verdicts = [
        Verdict(reply[i] == 1, None, int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
        for i in range(2, len(reply), 4)
    ]
    return Decision(reply[0] == 1, verdicts)


class RedisStore(RedisResource):
    """Rate limit state in Redis, shared by every process that uses the same server and prefix."""

    name = "redis"
    sync = False

    def __init__(self, url: str, *, key_prefix: str = "bastion:rl", timeout_s: float = 0.05) -> None:
        self.url = url
        self.prefix = "{" + key_prefix + "}:"
        self.timeout_s = timeout_s
        # The guard bounds each decision with its own timeout; the socket timeouts only
        # make sure a dead connection is noticed and dropped from the pool.
        self.redis: Redis = Redis.from_url(
            url,
            socket_timeout=max(1.0, timeout_s * 20),
            socket_connect_timeout=max(0.2, timeout_s * 4),
            max_connections=64,
        )
        self._queue: list[_Pending] = []
        self._busy = False
        self._segments: dict[tuple[Any, int, bool], bytes] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Not available: Redis needs I/O."""
        raise NotImplementedError("the Redis store decides asynchronously")

    def _pack(self, op: bytes, checks: Sequence[Check], request_id: str, now: bytes = b"") -> _Command:
        keys = []
        for check in checks:
            key = f"{self.prefix}{check.limit.algorithm}:{check.key}"
            keys.append(_bulk(key.encode("utf-8", "surrogateescape")))
        args = [_bulk(op), _bulk(request_id.encode()), _bulk(now), _bulk(b"%d" % len(checks))]
        segments = self._segments
        for check in checks:
            ident = (check.limit, check.cost, check.shadow)
            segment = segments.get(ident)
            if segment is None:
                numbers = (*check.limit.args(), check.cost, 1 if check.shadow else 0)
                segment = b"".join(_bulk(b"%d" % n) for n in numbers)
                if len(segments) < 10_000:
                    segments[ident] = segment
            args.append(segment)
        return _Command(len(checks), b"".join(keys), b"".join(args))

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide every check in one script call (one round trip, shared with concurrent callers)."""
        return _decision(await self._call(self._pack(b"d", checks, request_id)))

    async def decide_at(self, checks: Sequence[Check], request_id: str, now_us: int) -> Decision:
        """Decide as if the server clock read ``now_us``: for tests that replay a timeline."""
        return _decision(await self._call(self._pack(b"d", checks, request_id, b"%d" % now_us)))

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        """Free the request's concurrency slots."""
        held = [c for c in checks if c.limit.algorithm == CONCURRENCY]
        if held:
            await self._call(self._pack(b"r", held, request_id))

    async def _call(self, args: _Command) -> Any:
        if self._busy:
            # A call is on the wire: join the batch that goes out when it returns.
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append((args, future))
            return await future
        self._busy = True
        try:
            return await self._run_one(args)
        finally:
            self._next_batch()

    def _next_batch(self) -> None:
        if not self._queue:
            self._busy = False
            return
        batch, self._queue = self._queue[:_MAX_BATCH], self._queue[_MAX_BATCH:]
        self._track(self._flush(batch))

    async def _flush(self, batch: list[_Pending]) -> None:
        try:
            results = await self._run_many([args for args, _ in batch])
        except BaseException as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            self._next_batch()
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _run_one(self, command: _Command) -> Any:
        result = (await self._run_many([command]))[0]
        if isinstance(result, Exception):
            raise result
        return result

    async def _run_many(self, many: list[_Command]) -> list[Any]:
        """One script call for every queued request; one reply (or error) per request."""
        reply = await self._send(_script_call(_EVALSHA, many))
        if isinstance(reply, NoScriptError):
            # The server lost its script cache (restart, flush, failover): send the script itself.
            reply = await self._send(_script_call(_EVAL, many))
        if isinstance(reply, Exception):
            return [reply] * len(many)
        return list(reply)

    async def _send(self, command: bytes) -> Any:
        # Straight to a pooled connection: redis-py's command machinery costs more per
        # call than the script takes to run.
        pool = self.redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await connection.send_packed_command(command, check_health=False)
            async with _ReplyDeadline(self.timeout_s):
                try:
                    return await connection.read_response()
                except ResponseError as exc:
                    return exc
        except BaseException:
            # A reply may be half read: the connection cannot be reused.
            await connection.disconnect()
            raise
        finally:
            await pool.release(connection)

    async def start(self) -> None:
        """Load the script (a failure here is not fatal: decisions load it on demand)."""
        # Redis may come up later; EVAL loads the script then.
        with contextlib.suppress(Exception):
            await self.redis.script_load(SCRIPT)
