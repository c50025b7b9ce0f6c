"""The Redis rate limit store: one Lua script decides all of a request's rules in one round trip.

- The script reads the time with ``TIME``, so every gateway process uses the
  Redis server's clock and clock skew between hosts changes nothing.
- It is sent with ``EVALSHA``; when the server answers ``NOSCRIPT`` (restarted,
  flushed, failed over), the script is sent again with ``EVAL``, which also caches it
  (:mod:`bastion.stores.redis`, shared with the idempotency store).
- Every key carries the hash tag ``{key_prefix}``: all of a request's keys land
  in one Redis Cluster slot, which is what lets one script touch them atomically.
- Every key gets a ``PEXPIRE`` as long as its state can matter.
- One script call is on the wire at a time per store; the requests that arrive
  meanwhile go out together in the next call, which decides each of them in turn,
  each atomically. Under load, many requests share one round trip and one call.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bastion.ratelimit.algorithms import CONCURRENCY, Verdict
from bastion.ratelimit.stores import Check, Decision
from bastion.stores.redis import Batcher, RedisResource, Script, ScriptCall, bulk, pack

DECIDE = Script.packaged("bastion.ratelimit", "decide")
SCRIPT = DECIDE.text

# Requests per script call at most: a call holds Redis for its whole run, and must
# stay well inside the timeout.
_MAX_BATCH = 128
# Script arguments per rule: the limit's five numbers, cost, shadow, and the queue's two.
_PER_RULE = 9


def _script_args(op: str, checks: Sequence[Check], request_id: str, prefix: str, now: str = "") -> list[Any]:
    """One request's script call as a list of arguments (for clients other than this store)."""
    args: list[Any] = ["EVALSHA", DECIDE.sha, len(checks)]
    # The algorithm is part of the key: a rule moved to another algorithm starts afresh
    # instead of meeting a key of the wrong Redis type.
    args.extend(f"{prefix}{check.limit.algorithm}:{check.key}" for check in checks)
    args.extend([1, op, request_id, now, len(checks)])
    for check in checks:
        args.extend(check.limit.args())
        args.append(check.cost)
        args.append(1 if check.shadow else 0)
        args.append(check.limit.max_delay_us)
        args.append(check.limit.queue_limit)
    return args


class _Command:
    """One request's part of a script call, packed once (RESP): its keys and its arguments."""

    __slots__ = ("args", "keys", "nkeys")

    def __init__(self, nkeys: int, keys: bytes, args: bytes) -> None:
        self.nkeys = nkeys
        self.keys = keys
        self.args = args


def _script_call(commands: Sequence[_Command], tag: bytes) -> ScriptCall:
    """One script call carrying the decisions of several requests, on keys tagged ``tag``."""
    nkeys = sum(c.nkeys for c in commands)
    nargs = 1 + sum(4 + (c.nkeys * _PER_RULE) for c in commands)
    parts = [bulk(b"%d" % nkeys)]
    parts.extend(c.keys for c in commands)
    parts.append(bulk(b"%d" % len(commands)))
    parts.extend(c.args for c in commands)
    return ScriptCall(DECIDE, 1 + nkeys + nargs, b"".join(parts), tag)


def _decision(reply: list[int]) -> Decision:
    verdicts = [
        Verdict(reply[i] == 1, None, int(reply[i + 1]), int(reply[i + 2]), int(reply[i + 3]))
        for i in range(2, len(reply), 4)
    ]
    return Decision(reply[0] == 1, verdicts, int(reply[1]))


class RedisStore(RedisResource):
    """Rate limit state in Redis, shared by every process that uses the same server and prefix."""

    name = "redis"
    sync = False

    def __init__(self, url: str, *, key_prefix: str = "bastion:rl", timeout_s: float = 0.05) -> None:
        super().__init__(url, timeout_s=timeout_s)
        self.prefix = "{" + key_prefix + "}:"
        self._tag = self.prefix.encode("utf-8", "surrogateescape")
        self._segments: dict[tuple[Any, int, bool], bytes] = {}
        # The requests queued behind the call on the wire share the next script call.
        self._calls: Batcher[_Command] = Batcher(self._run_batch, self.track, max_batch=_MAX_BATCH)

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Not available: Redis needs I/O."""
        raise NotImplementedError("the Redis store decides asynchronously")

    def _pack(self, op: bytes, checks: Sequence[Check], request_id: str, now: bytes = b"") -> _Command:
        keys = []
        for check in checks:
            key = f"{self.prefix}{check.limit.algorithm}:{check.key}"
            keys.append(bulk(key.encode("utf-8", "surrogateescape")))
        args = [bulk(op), bulk(request_id.encode()), bulk(now), bulk(b"%d" % len(checks))]
        segments = self._segments
        for check in checks:
            ident = (check.limit, check.cost, check.shadow)
            segment = segments.get(ident)
            if segment is None:
                limit = check.limit
                numbers = (
                    *limit.args(),
                    check.cost,
                    1 if check.shadow else 0,
                    limit.max_delay_us,
                    limit.queue_limit,
                )
                segment = pack(numbers)
                if len(segments) < 10_000:
                    segments[ident] = segment
            args.append(segment)
        return _Command(len(checks), b"".join(keys), b"".join(args))

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide every check in one script call (one round trip, shared with concurrent callers)."""
        return _decision(await self._calls.call(self._pack(b"d", checks, request_id)))

    async def decide_at(self, checks: Sequence[Check], request_id: str, now_us: int) -> Decision:
        """Decide as if the server clock read ``now_us``: for tests that replay a timeline."""
        return _decision(await self._calls.call(self._pack(b"d", checks, request_id, b"%d" % now_us)))

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        """Free the request's concurrency slots."""
        held = [c for c in checks if c.limit.algorithm == CONCURRENCY]
        if held:
            await self._calls.call(self._pack(b"r", held, request_id))

    async def give_back(self, checks: Sequence[Check], request_id: str, decision: Decision) -> None:
        """Undo an admission whose request never ran, in one script call (see ``decide.lua``)."""
        taken = [c for c, v in zip(checks, decision.verdicts, strict=True) if v.allowed]
        if taken:
            await self._calls.call(self._pack(b"g", taken, request_id, b"%d" % decision.at_us))

    async def _run_batch(self, commands: list[_Command]) -> list[Any]:
        """One script call for every queued request; one reply (or error) per request."""
        reply = (await self.run([_script_call(commands, self._tag)]))[0]
        if isinstance(reply, Exception):
            return [reply] * len(commands)
        return list(reply)

    async def start(self) -> None:
        """Load the script (a failure here is not fatal: decisions load it on demand)."""
        await self.load(DECIDE)
