"""Rate limit algorithms as pure functions over integer microseconds.

Nothing here reads a clock or touches a store: each function takes the current
state, the time and the request's cost, and returns a :class:`Verdict` with the
state to write back if the request is admitted. The memory store calls these
functions directly; the Redis Lua script (``lua/decide.lua``) is a line-by-line
transcription, and the tests hold the two to the same answers.

All arithmetic is on integers. Times are microseconds; where a product of a count
and a period could pass 2^53 (the limit of exact integers in Lua), the sliding
window counter works in whole milliseconds instead, rounding in the direction
that admits less, never more.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

GCRA = 0
FIXED_WINDOW = 1
SLIDING_WINDOW = 2
SLIDING_LOG = 3
CONCURRENCY = 4

ALGORITHM_CODES = {
    "gcra": GCRA,
    "fixed_window": FIXED_WINDOW,
    "sliding_window": SLIDING_WINDOW,
    "sliding_log": SLIDING_LOG,
    "concurrency": CONCURRENCY,
}

US_PER_SECOND = 1_000_000


#: Limits built so far, by their numbers: equal numbers give the one object, so a store
#: keyed by limit (identity) keeps its state when a reload compiles the rules again.
_BUILT: dict[tuple[int, int, int, int, int, int], Limit] = {}
#: Past this many distinct limits, new ones are not kept (their state lasts one configuration).
_MAX_BUILT = 10_000


# Identity equality: a limit is a dictionary key on the hot path, and a generated
# __hash__ over six fields costs more than the decision it looks up.
@dataclass(frozen=True, slots=True, eq=False)
class Limit:
    """One concrete limit: an algorithm with its numbers, ready for a decision.

    ``limit`` requests per ``period_us``; for GCRA ``burst`` requests may arrive at
    once (default: ``limit``); for the concurrency limiter ``limit`` requests may be
    in flight and ``period_us`` is the lease after which a lost slot frees itself.
    A GCRA limit with ``max_delay_us`` queues instead of refusing: a request that
    would be admitted within ``max_delay_us`` is admitted for its slot (see :func:`gcra`),
    with at most ``queue_limit`` requests waiting per key.
    """

    algorithm: int
    limit: int
    period_us: int
    burst: int
    #: GCRA: the time one request's worth of quota takes to come back (rounded up).
    emission_us: int
    #: GCRA: the tolerance, ``burst`` emissions.
    tau_us: int
    #: GCRA: the longest wait for a slot instead of a refusal (0: refuse, never queue).
    max_delay_us: int = 0
    #: GCRA with ``max_delay_us``: how many requests may wait for a slot per key.
    queue_limit: int = 0

    @classmethod
    def build(
        cls,
        algorithm: str | int,
        limit: int,
        period_us: int,
        burst: int | None = None,
        *,
        max_delay_us: int = 0,
        queue_limit: int = 0,
    ) -> Limit:
        """Derive the fixed numbers of a limit once, at configuration time."""
        code = ALGORITHM_CODES[algorithm] if isinstance(algorithm, str) else algorithm
        if limit < 1 or period_us < 1:
            raise ValueError("a limit needs at least one request and a non-empty period")
        if max_delay_us and (code != GCRA or queue_limit < 1):
            raise ValueError("only a gcra limit queues, and it needs a queue_limit of at least 1")
        capacity = burst if burst is not None else limit
        numbers = (code, limit, period_us, capacity, max_delay_us, queue_limit if max_delay_us else 0)
        found = _BUILT.get(numbers)
        if found is not None:
            return found
        # Rounding the emission interval up makes the limit a hair stricter, never looser.
        emission = -(-period_us // limit)
        built = cls(code, limit, period_us, capacity, emission, emission * capacity, *numbers[4:])
        if len(_BUILT) < _MAX_BUILT:
            _BUILT[numbers] = built
        return built

    @property
    def quota(self) -> int:
        """The quota advertised in ``RateLimit-Policy`` (``q``)."""
        return self.burst if self.algorithm == GCRA else self.limit

    @property
    def window_s(self) -> int | None:
        """The window advertised in ``RateLimit-Policy`` (``w``), in whole seconds."""
        if self.algorithm == CONCURRENCY:
            return None
        window = self.tau_us if self.algorithm == GCRA else self.period_us
        return max(1, -(-window // US_PER_SECOND))

    @property
    def ttl_us(self) -> int:
        """How long after its last use a key's state can still matter."""
        if self.algorithm == GCRA:
            # A queue puts the theoretical arrival time up to ``max_delay_us`` further ahead.
            return self.tau_us + self.max_delay_us
        if self.algorithm == SLIDING_WINDOW:
            return 2 * self.period_us
        return self.period_us

    def args(self) -> tuple[int, int, int, int, int]:
        """The numbers the Lua script needs, in its order (the queue's two go after cost and shadow)."""
        return (self.algorithm, self.limit, self.period_us, self.emission_us, self.tau_us)

    def queues(self, delay_us: int, cost: int) -> bool:
        """Whether a request whose slot is ``delay_us`` away may wait for it (GCRA with a queue).

        How many requests already wait is implied by how far the theoretical arrival
        time is ahead: the k-th in the queue waits more than ``(k - 1)`` times its
        cost's emission, so ``delay_us <= queue_limit * cost * emission_us`` admits at
        most ``queue_limit`` waiting requests, with no state besides the time.
        """
        return delay_us <= self.max_delay_us and delay_us <= self.queue_limit * cost * self.emission_us


class Verdict(NamedTuple):
    """The answer for one rule: admitted or not, the state to keep, and header numbers.

    ``remaining`` is the quota left after this request (if admitted); ``reset_us``
    is the time until the quota is whole again; ``retry_us``, for a rejection, the
    earliest time at which the same request would be admitted, and for an admission
    the time the request waits for the slot it took (0 unless the limit queues).
    """

    allowed: bool
    state: Any
    remaining: int
    reset_us: int
    retry_us: int


# NamedTuple's generated __new__ is a Python frame; the hot path builds verdicts directly.
_new = tuple.__new__


def gcra(tat: int | None, now: int, cost: int, limit: Limit) -> Verdict:
    """Generic cell rate algorithm: ``tat`` is the theoretical arrival time (``None`` when new).

    With a queue (``limit.max_delay_us``), a request whose slot is at most that far away
    is admitted for that slot: the arrival time advances as for an admission now, and
    ``retry_us`` is the wait. Nothing is remaining then.
    """
    base = tat if tat is not None and tat > now else now
    new_tat = base + cost * limit.emission_us
    allow_at = new_tat - limit.tau_us
    if allow_at > now:
        if limit.queues(allow_at - now, cost):
            return _new(Verdict, (True, new_tat, 0, new_tat - now, allow_at - now))
        remaining = (now + limit.tau_us - base) // limit.emission_us
        return _new(Verdict, (False, tat, max(remaining, 0), base - now, allow_at - now))
    remaining = (now + limit.tau_us - new_tat) // limit.emission_us
    return _new(Verdict, (True, new_tat, remaining, new_tat - now, 0))


def fixed_window(state: tuple[int, int] | None, now: int, cost: int, limit: Limit) -> Verdict:
    """Fixed window: ``state`` is ``(window start, count)``; windows align to the period."""
    period = limit.period_us
    start = now - now % period
    count = state[1] if state is not None and state[0] == start else 0
    reset = start + period - now
    if count + cost > limit.limit:
        return _new(Verdict, (False, state, limit.limit - count, reset, reset))
    count += cost
    return _new(Verdict, (True, (start, count), limit.limit - count, reset, 0))


def sliding_window(state: tuple[int, int, int] | None, now: int, cost: int, limit: Limit) -> Verdict:
    """Sliding window counter: the previous window's count weighted by how much of it still overlaps.

    ``state`` is ``(window start, previous count, current count)``. The weighting is
    done in whole milliseconds with the elapsed time rounded down, so the previous
    window weighs a little more, never less, than its exact share.
    """
    period = limit.period_us
    start = now - now % period
    prev = cur = 0
    if state is not None:
        if state[0] == start:
            prev, cur = state[1], state[2]
        elif state[0] == start - period:
            prev = state[2]
    period_ms = period // 1000
    elapsed_ms = (now - start) // 1000
    weighted = prev * (period_ms - elapsed_ms)  # previous count x overlap, in count-milliseconds
    capacity = limit.limit * period_ms
    if weighted + (cur + cost) * period_ms > capacity:
        spare = limit.limit - cur - cost
        if spare >= 0:
            # Admitted once prev * (period - e) <= spare * period.
            wait_ms = period_ms - (spare * period_ms) // prev
            retry = start + wait_ms * 1000 - now
        else:
            # Only in the next window, once the current count has decayed enough. (A cost
            # above the limit is never admitted; it is told the next window, as fixed windows do.)
            wait_ms = max(0, period_ms - ((limit.limit - cost) * period_ms) // cur) if cur else 0
            retry = start + period + wait_ms * 1000 - now
        used = -(-(weighted + cur * period_ms) // period_ms)
        reset = start + (2 * period if cur else period) - now
        return _new(Verdict, (False, state, max(limit.limit - used, 0), reset, max(retry, 1)))
    cur += cost
    used = -(-(weighted + cur * period_ms) // period_ms)
    reset = start + 2 * period - now
    return _new(Verdict, (True, (start, prev, cur), max(limit.limit - used, 0), reset, 0))


def sliding_log(stamps: Sequence[int], now: int, cost: int, limit: Limit) -> Verdict:
    """Sliding window log (exact): ``stamps`` are the admission times still inside the window.

    One stamp per unit of cost, oldest first; the caller drops stamps older than
    ``now - period`` before asking. The returned state is the number of stamps to
    append (the cost) when admitted, else 0.
    """
    count = len(stamps)
    period = limit.period_us
    if count + cost > limit.limit:
        # The request fits once the oldest (count + cost - limit) stamps have left the window.
        oldest_needed = stamps[count + cost - limit.limit - 1]
        reset = stamps[-1] + period - now
        return _new(Verdict, (False, 0, limit.limit - count, reset, max(oldest_needed + period - now, 1)))
    reset = period
    return _new(Verdict, (True, cost, limit.limit - count - cost, reset, 0))


def concurrency(in_flight: int, cost: int, limit: Limit) -> Verdict:
    """Concurrency limiter: at most ``limit`` units in flight; ``in_flight`` excludes lapsed leases.

    A rejection cannot know when a slot frees up; it suggests one second.
    """
    if in_flight + cost > limit.limit:
        return _new(Verdict, (False, 0, max(limit.limit - in_flight, 0), 0, US_PER_SECOND))
    return _new(Verdict, (True, cost, limit.limit - in_flight - cost, 0, 0))


def retry_after_seconds(retry_us: int) -> int:
    """``Retry-After`` in whole seconds: rounded up, and never 0."""
    return max(1, -(-retry_us // US_PER_SECOND))
