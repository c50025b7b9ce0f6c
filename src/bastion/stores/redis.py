"""What the Redis stores share: the connection pool, Lua script calls, and how calls are batched.

- The pool comes from the URL; its socket timeouts derive from the store's
  ``timeout_s`` and only make sure a dead connection is noticed and dropped: the
  guards bound each step by the timeout itself, and so does the reply deadline here.
- Scripts are sent with ``EVALSHA``; the calls the server answers ``NOSCRIPT``
  (restarted, flushed, failed over) are sent again with ``EVAL``, which caches the script.
- Calls are written as RESP straight to a pooled connection: redis-py's command
  machinery costs more per call than a script takes to run.
- :class:`Batcher`: one call on the wire per store; the callers that come meanwhile
  go out together in the next one, so under a burst a worker needs one connection
  and one round trip, not one of each per request.
- On a Redis Cluster (``redis+cluster://HOST:PORT``), each call goes to the master
  of its keys' slot (every key of one call shares one hash tag): the calls of one
  batch are grouped by node, one write per node, the nodes written concurrently.
  ``MOVED`` makes the client read the slot map again and ``ASK`` is followed with
  ``ASKING``; both resend only the redirected calls, a bounded number of times. A
  call that fails on a node (a failover) has the map read again before the next.

A store keeps only what is its own: its scripts, how it packs its arguments and
how it reads its replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from importlib.resources import files
from typing import Any, Generic, NamedTuple, TypeVar

from redis.asyncio import ConnectionPool, Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode
from redis.crc import key_slot
from redis.exceptions import AskError, MovedError, NoScriptError, ResponseError

T = TypeVar("T")

#: A script argument, encoded the way redis-py encodes it.
Arg = bytes | str | int


def bulk(value: bytes) -> bytes:
    """``value`` as a RESP bulk string."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


def pack(values: Sequence[Arg]) -> bytes:
    """``values`` as consecutive RESP bulk strings (``str`` as UTF-8, ``int`` in decimal)."""
    parts = []
    for value in values:
        if isinstance(value, str):
            value = value.encode()
        elif isinstance(value, int):
            value = b"%d" % value
        parts.append(b"$%d\r\n%s\r\n" % (len(value), value))
    return b"".join(parts)


class Script:
    """A Lua script, its SHA-1 and the packed heads of its ``EVALSHA`` and ``EVAL`` calls."""

    __slots__ = ("eval_head", "evalsha_head", "sha", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self.sha = hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()
        self.evalsha_head = b"$7\r\nEVALSHA\r\n" + bulk(self.sha.encode())
        self.eval_head = b"$4\r\nEVAL\r\n" + bulk(text.encode())

    @classmethod
    def packaged(cls, package: str, name: str) -> Script:
        """The script ``lua/<name>.lua`` shipped in ``package``."""
        return cls(files(package).joinpath(f"lua/{name}.lua").read_text(encoding="utf-8"))

    def call(self, keys: Sequence[Arg], args: Sequence[Arg]) -> ScriptCall:
        """A call of this script on ``keys`` with ``args``."""
        body = bulk(b"%d" % len(keys)) + pack(keys) + pack(args)
        return ScriptCall(self, 1 + len(keys) + len(args), body, keys[0] if keys else b"")


class ScriptCall(NamedTuple):
    """One script call, packed: ``size`` RESP elements (numkeys, keys, args) in ``body``.

    ``key`` is one of its keys: on a cluster its slot names the node the call goes to.
    """

    script: Script
    size: int
    body: bytes
    key: Arg = b""

    def packed(self, head: bytes) -> bytes:
        """The whole command, with ``head`` (the script's ``EVALSHA`` or ``EVAL`` head)."""
        return b"*%d\r\n%s%s" % (2 + self.size, head, self.body)


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


_CLUSTER = "+cluster"
# Redirections (MOVED, ASK) followed per call at most, so a slot migrating back and
# forth cannot hold a call.
_REDIRECTS = 3
_ASKING = b"*1\r\n$6\r\nASKING\r\n"


class RedisResource:
    """A Redis connection pool for one store: script calls within a deadline, background
    calls tracked, and one way to close and ping.

    ``timeout_s`` bounds each exchange (a connection, the write, every reply); a
    frozen server costs a call that long, not the socket timeout.
    """

    def __init__(self, url: str, *, timeout_s: float, max_connections: int = 64) -> None:
        self.url = url
        self.timeout_s = timeout_s
        options: dict[str, Any] = {
            "socket_timeout": max(1.0, timeout_s * 20),
            "socket_connect_timeout": max(0.2, timeout_s * 4),
            "max_connections": max_connections,
        }
        scheme, _, rest = url.partition("://")
        self.cluster: RedisCluster | None = None
        self._pool: ConnectionPool | None = None
        self.redis: Redis | RedisCluster
        if scheme.lower().endswith(_CLUSTER):
            self.redis = self.cluster = RedisCluster.from_url(
                f"{scheme[: -len(_CLUSTER)]}://{rest}", **options
            )
        else:
            self.redis = Redis.from_url(url, **options)
            self._pool = self.redis.connection_pool
        self._stale = False
        self._tasks: set[asyncio.Task[None]] = set()

    def track(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background, kept until it ends so :meth:`close` can wait for it."""
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

    async def load(self, *scripts: Script) -> None:
        """Load ``scripts`` if Redis answers; if it does not yet, the first ``EVAL`` loads each."""
        with contextlib.suppress(Exception):
            for script in scripts:
                await self.redis.script_load(script.text)

    async def run(self, calls: Sequence[ScriptCall]) -> list[Any]:
        """Send ``calls`` in one write and return one reply per call (an error reply as
        its :class:`~redis.exceptions.ResponseError`); a lost connection or the deadline raises."""
        if self.cluster is not None:
            return await self._run_cluster(self.cluster, calls)
        if len(calls) == 1:
            call = calls[0]
            replies = await self._send(call.packed(call.script.evalsha_head), 1)
        else:
            replies = await self._send(b"".join(c.packed(c.script.evalsha_head) for c in calls), len(calls))
        missing = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
        if missing:
            again = b"".join(calls[i].packed(calls[i].script.eval_head) for i in missing)
            for i, reply in zip(missing, await self._send(again, len(missing)), strict=True):
                replies[i] = reply
        return replies

    async def _send(self, packed: bytes, count: int) -> list[Any]:
        pool = self._pool
        assert pool is not None
        async with _ReplyDeadline(self.timeout_s):
            connection = await pool.get_connection()  # type: ignore[no-untyped-call]
            try:
                return await _exchange(connection, packed, [False] * count)
            finally:
                await pool.release(connection)

    async def _run_cluster(self, cluster: RedisCluster, calls: Sequence[ScriptCall]) -> list[Any]:
        async with _ReplyDeadline(self.timeout_s):
            await cluster.initialize()
            manager = cluster.nodes_manager
            if self._stale:
                # A call failed on a node: the topology may have changed (a failover).
                self._stale = False
                await manager.initialize()
            replies: list[Any] = [None] * len(calls)
            pending: Sequence[int] = range(len(calls))
            scripted: set[int] = set()
            asked: dict[int, ClusterNode] = {}
            for _ in range(1 + _REDIRECTS):
                groups: dict[str, tuple[ClusterNode, list[int]]] = {}
                for i in pending:
                    node = asked.get(i) or manager.get_node_from_slot(key_slot(_encode(calls[i].key)))
                    groups.setdefault(node.name, (node, []))[1].append(i)
                sends = [
                    self._node_send(node, calls, picks, scripted, asked) for node, picks in groups.values()
                ]
                try:
                    results = [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
                except BaseException:
                    self._stale = True
                    raise
                retry: list[int] = []
                moved = False
                for (_, picks), got in zip(groups.values(), results, strict=True):
                    for i, reply in zip(picks, got, strict=True):
                        replies[i] = reply
                        asked.pop(i, None)
                        if isinstance(reply, MovedError):
                            moved = True
                        elif isinstance(reply, AskError):
                            target = manager.get_node(reply.host, reply.port)
                            if target is None:
                                continue
                            asked[i] = target
                        elif isinstance(reply, NoScriptError) and i not in scripted:
                            scripted.add(i)
                        else:
                            continue
                        retry.append(i)
                if not retry:
                    break
                if moved:
                    # Slots changed owner (a resharding, a failover): read the whole map again.
                    await manager.initialize()
                pending = retry
            return replies

    async def _node_send(
        self,
        node: ClusterNode,
        calls: Sequence[ScriptCall],
        picks: list[int],
        scripted: set[int],
        asked: dict[int, ClusterNode],
    ) -> list[Any]:
        """The calls ``picks`` in one write to ``node``: ``EVAL`` for those in ``scripted``,
        after ``ASKING`` for those in ``asked``; one reply per call."""
        parts = []
        for i in picks:
            call = calls[i]
            if i in asked:
                parts.append(_ASKING)
            parts.append(call.packed(call.script.eval_head if i in scripted else call.script.evalsha_head))
        connection = node.acquire_connection()
        try:
            return await _exchange(connection, b"".join(parts), [i in asked for i in picks])
        finally:
            node.release(connection)


async def _exchange(connection: Any, packed: bytes, asking: Sequence[bool]) -> list[Any]:
    """Write ``packed`` on ``connection`` and read one reply per call (an error reply as its
    exception); a call marked in ``asking`` is preceded by an ``ASKING`` whose reply is skipped.
    Any failure disconnects: a reply may be half read, so the connection cannot be reused."""
    try:
        await connection.send_packed_command(packed, check_health=False)
        replies: list[Any] = []
        for asked in asking:
            if asked:
                await connection.read_response()
            try:
                replies.append(await connection.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return replies
    except BaseException:
        await connection.disconnect()
        raise


def _encode(key: Arg) -> bytes:
    if isinstance(key, bytes):
        return key
    return key.encode() if isinstance(key, str) else b"%d" % key


_Pending = tuple[T, "asyncio.Future[Any]"]


class Batcher(Generic[T]):
    """One call on the wire at a time; the items that come meanwhile go out together next.

    ``run`` sends a batch of items (one call, a pipeline: the store's choice) and
    returns one result per item, an exception for an item that failed. A batch holds
    at most ``max_batch`` items: a call holds Redis for its whole run and must stay well
    inside the timeout. A batch that fails as a whole fails each of its callers; the
    queue then goes on, so no caller waits for a call that will never be made.
    """

    __slots__ = ("_busy", "_queue", "_run", "_track", "max_batch")

    def __init__(
        self,
        run: Callable[[list[T]], Awaitable[list[Any]]],
        track: Callable[[Coroutine[Any, Any, None]], None],
        *,
        max_batch: int,
    ) -> None:
        self._run = run
        self._track = track
        self.max_batch = max_batch
        self._queue: list[_Pending[T]] = []
        self._busy = False

    async def call(self, item: T) -> Any:
        """``item``'s result: sent now if the wire is free, else with the next batch."""
        if self._busy:
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            self._queue.append((item, future))
            return await future
        self._busy = True
        try:
            result = (await self._run([item]))[0]
        finally:
            self._next_batch()
        if isinstance(result, Exception):
            raise result
        return result

    def _next_batch(self) -> None:
        if not self._queue:
            self._busy = False
            return
        batch, self._queue = self._queue[: self.max_batch], self._queue[self.max_batch :]
        self._track(self._flush(batch))

    async def _flush(self, batch: list[_Pending[T]]) -> None:
        try:
            results = await self._run([item for item, _ in batch])
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
