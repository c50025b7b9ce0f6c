"""The in-process rate limit store: exact within one process, nothing shared between processes.

State lives in one ordered table per limit. Each entry records when its state
stops mattering (a GCRA key whose theoretical arrival time has passed is the
same as a new key; a window key is empty once its window is over). Memory is
bounded without touching hot keys: each time a key is added, a few entries at
the front of its table are looked at; lapsed ones are dropped, live ones move to
the back. The table is thus swept faster than it grows, and holds little more
than the keys active within one window. The clock is monotonic.

Every decision runs without an ``await``, so on one event loop it is atomic.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Any

from bastion.ratelimit.algorithms import (
    CONCURRENCY,
    FIXED_WINDOW,
    GCRA,
    SLIDING_LOG,
    SLIDING_WINDOW,
    Limit,
    Verdict,
    concurrency,
    fixed_window,
    gcra,
    sliding_log,
    sliding_window,
)
from bastion.ratelimit.stores import Check, Decision, admitted

# Algorithms whose state is a single value, replaced on admission (see ``MemoryStore.hit``).
_SIMPLE: dict[int, Callable[[Any, int, int, Limit], Verdict]] = {
    GCRA: gcra,
    FIXED_WINDOW: fixed_window,
    SLIDING_WINDOW: sliding_window,
}

_new = tuple.__new__

_monotonic_ns = time.monotonic_ns

# Entries looked at per insertion: more than one, so that tables shrink after a burst of new keys.
_SWEEP_PER_INSERT = 4


class _Table:
    """The keys of one limit: key -> [state, when the state stops mattering]."""

    __slots__ = ("entries", "limit", "ttl_us")

    def __init__(self, limit: Limit) -> None:
        self.limit = limit
        self.ttl_us = limit.ttl_us
        self.entries: OrderedDict[str, list[Any]] = OrderedDict()

    def add(self, key: str, entry: list[Any], now: int) -> None:
        """Add a key, first sweeping a few entries at the front."""
        entries = self.entries
        for _ in range(_SWEEP_PER_INSERT):
            if not entries:
                break
            front = next(iter(entries))
            if entries[front][1] <= now:
                del entries[front]
            else:
                entries.move_to_end(front)
        entries[key] = entry


class MemoryStore:
    """Rate limit state in this process's memory."""

    name = "memory"
    sync = True

    def __init__(self, clock: Callable[[], int] | None = None) -> None:
        #: Microseconds from an arbitrary origin; tests pass a fake (default: the monotonic clock).
        self.clock = clock
        self._tables: dict[Limit, _Table] = {}

    def _table(self, limit: Limit) -> _Table:
        table = self._tables.get(limit)
        if table is None:
            table = self._tables[limit] = _Table(limit)
        return table

    def __len__(self) -> int:
        """How many keys hold state (for tests of the memory bound)."""
        return sum(len(t.entries) for t in self._tables.values())

    def _verdict(self, entry: list[Any] | None, now: int, check: Check, request_id: str) -> Verdict:
        limit = check.limit
        algorithm = limit.algorithm
        if algorithm == GCRA:
            return gcra(entry[0] if entry is not None else None, now, check.cost, limit)
        if algorithm == FIXED_WINDOW:
            return fixed_window(entry[0] if entry is not None else None, now, check.cost, limit)
        if algorithm == SLIDING_WINDOW:
            return sliding_window(entry[0] if entry is not None else None, now, check.cost, limit)
        if algorithm == SLIDING_LOG:
            stamps: deque[int] = entry[0] if entry is not None else deque()
            horizon = now - limit.period_us
            while stamps and stamps[0] <= horizon:
                stamps.popleft()
            return sliding_log(stamps, now, check.cost, limit)
        leases: dict[str, tuple[int, int]] = entry[0] if entry is not None else {}
        for lease, (expires, _) in list(leases.items()):
            if expires <= now:
                del leases[lease]
        return concurrency(sum(cost for _, cost in leases.values()), check.cost, limit)

    @staticmethod
    def _commit(
        table: _Table, entry: list[Any] | None, check: Check, verdict: Verdict, now: int, rid: str
    ) -> None:
        algorithm = check.limit.algorithm
        expires = now + table.ttl_us
        if entry is None:
            if algorithm == SLIDING_LOG:
                state: Any = deque()
            elif algorithm == CONCURRENCY:
                state = {}
            else:
                state = None
            entry = [state, expires]
            table.add(check.key, entry, now)
        else:
            entry[1] = expires
        if algorithm == SLIDING_LOG:
            entry[0].extend([now] * check.cost)
        elif algorithm == CONCURRENCY:
            entry[0][rid] = (now + check.limit.period_us, check.cost)
        else:
            entry[0] = verdict.state

    def hit(self, key: str, limit: Limit, cost: int = 1) -> Verdict:
        """Decide one rule with a single-value state (GCRA and the windows): the common, short path.

        Records the request when admitted. Sliding logs and concurrency go through
        :meth:`decide_now`. The three algorithms are inlined from
        :mod:`bastion.ratelimit.algorithms`: a function call is a fifth of a decision
        here. ``tests/ratelimit/test_algorithms.py`` holds both to the same answers.
        """
        clock = self.clock
        now = _monotonic_ns() // 1000 if clock is None else clock()
        table = self._tables.get(limit)
        if table is None:
            table = self._table(limit)
        entry = table.entries.get(key)
        algorithm = limit.algorithm
        # Timestamps are microseconds from boot: integers past 2**30, which Python keeps
        # as multi-digit numbers that cost an allocation per operation. The arithmetic
        # below works with differences from ``now`` (small numbers) wherever it can.
        if algorithm == GCRA:
            if entry is None:
                ahead = 0
            else:
                ahead = entry[0] - now
                if ahead < 0:
                    ahead = 0
            wait = ahead + cost * limit.emission_us  # new TAT - now
            tau = limit.tau_us
            if wait > tau:
                if not limit.queues(wait - tau, cost):
                    remaining = (tau - ahead) // limit.emission_us
                    return _new(
                        Verdict,
                        (
                            False,
                            entry[0] if entry is not None else now,
                            remaining if remaining > 0 else 0,
                            ahead,
                            wait - tau,
                        ),
                    )
                # Admitted for the slot ``wait - tau`` away: kept until its arrival time passes.
                new_tat = now + wait
                if entry is None:
                    table.add(key, [new_tat, new_tat], now)
                else:
                    entry[0] = new_tat
                    entry[1] = new_tat
                return _new(Verdict, (True, new_tat, 0, wait, wait - tau))
            new_tat = now + wait
            # Kept for a whole tolerance (not just until the TAT passes), so that a
            # client coming back within it finds its entry instead of re-adding it.
            if entry is None:
                table.add(key, [new_tat, now + tau], now)
            else:
                entry[0] = new_tat
                entry[1] = now + tau
            return _new(Verdict, (True, new_tat, (tau - wait) // limit.emission_us, wait, 0))
        period = limit.period_us
        into = now % period
        start = now - into
        state = entry[0] if entry is not None else None
        if algorithm == FIXED_WINDOW:
            count = state[1] if state is not None and state[0] == start else 0
            reset = period - into
            quota = limit.limit
            if count + cost > quota:
                return _new(Verdict, (False, state, quota - count, reset, reset))
            count += cost
            state = (start, count)
            if entry is None:
                table.add(key, [state, now + table.ttl_us], now)
            else:
                entry[0] = state
                entry[1] = now + table.ttl_us
            return _new(Verdict, (True, state, quota - count, reset, 0))
        # The sliding window counter; the admitted path inlined, a rejection (rare, and
        # with more arithmetic) left to the function.
        prev = cur = 0
        if state is not None:
            if state[0] == start:
                prev = state[1]
                cur = state[2]
            elif state[0] + period == start:
                prev = state[2]
        cur += cost
        if prev:
            # The previous window's count times its overlap, rounded up to whole requests:
            # weighted + cur * p > limit * p exactly when cur + ceil(weighted / p) > limit.
            period_ms = period // 1000
            used = cur - (-prev * (period_ms - into // 1000) // period_ms)
        else:
            used = cur
        if used > limit.limit:
            return sliding_window(state, now, cost, limit)
        state = (start, prev, cur)
        reset = 2 * period - into
        if entry is None:
            table.add(key, [state, now + table.ttl_us], now)
        else:
            entry[0] = state
            entry[1] = now + table.ttl_us
        return _new(Verdict, (True, state, limit.limit - used, reset, 0))

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        """Decide every check at once; nothing is recorded unless the request is admitted.

        The cheapest step that gives the answer is taken here, once for every caller: one
        rule whose state is a single value is a :meth:`hit`; several such rules, the
        step for them (:meth:`_decide_simple`); any other set, the general step
        (:meth:`_decide_general`, here without its lists for a single rule).
        """
        if len(checks) == 1:
            check = checks[0]
            limit = check[1]
            if limit.algorithm in _SIMPLE:
                verdict = self.hit(check[0], limit, check[2])
            else:
                # The general step for one rule, without its lists.
                now = _monotonic_ns() // 1000 if self.clock is None else self.clock()
                table = self._tables.get(limit) or self._table(limit)
                entry = table.entries.get(check.key)
                verdict = self._verdict(entry, now, check, request_id)
                if verdict.allowed:
                    self._commit(table, entry, check, verdict, now, request_id)
            # (The decision time only matters to a give-back, which only a queued GCRA
            # admission needs, and GCRA gives back without it.)
            return _new(Decision, (verdict[0] or check[3], [verdict], 0))
        return self._decide_simple(checks, request_id)

    def _decide_general(self, checks: Sequence[Check], request_id: str) -> Decision:
        """:meth:`decide_now` for any rules: a verdict per check, then the admitting ones recorded."""
        now = _monotonic_ns() // 1000 if self.clock is None else self.clock()
        tables = []
        entries = []
        verdicts = []
        for check in checks:
            table = self._tables.get(check.limit) or self._table(check.limit)
            entry = table.entries.get(check.key)
            tables.append(table)
            entries.append(entry)
            verdicts.append(self._verdict(entry, now, check, request_id))
        ok = admitted(checks, verdicts)
        if ok:
            # Known keys first: refreshed, they cannot be swept away by a new key's insertion.
            for existing in (True, False):
                for i, check in enumerate(checks):
                    if verdicts[i].allowed and (entries[i] is not None) is existing:
                        self._commit(tables[i], entries[i], check, verdicts[i], now, request_id)
        return _new(Decision, (ok, verdicts, now))

    def _decide_simple(self, checks: Sequence[Check], request_id: str) -> Decision:
        """:meth:`decide_now` for rules whose state is one value each (GCRA and the windows).

        A rule of another kind, met before anything is written, hands the request to the
        general step. The same answers as the general step (a property test holds the two together),
        with GCRA (the default) decided inline, in differences from ``now`` as :meth:`hit`
        does, and each admitting rule's state written straight into its entry.
        """
        clock = self.clock
        now = _monotonic_ns() // 1000 if clock is None else clock()
        tables = self._tables
        verdicts: list[Verdict] = []
        admitting = []
        ok = True
        for key, limit, cost, shadow in checks:
            table = tables.get(limit)
            if table is None:
                table = self._table(limit)
            entry = table.entries.get(key)
            if limit.algorithm == GCRA:
                if entry is None:
                    tat = None
                    ahead = 0
                else:
                    tat = entry[0]
                    ahead = tat - now
                    if ahead < 0:
                        ahead = 0
                wait = ahead + cost * limit.emission_us  # the new TAT - now
                tau = limit.tau_us
                if wait > tau:
                    if limit.queues(wait - tau, cost):
                        verdict = _new(Verdict, (True, now + wait, 0, wait, wait - tau))
                    else:
                        remaining = (tau - ahead) // limit.emission_us
                        remaining = remaining if remaining > 0 else 0
                        verdict = _new(Verdict, (False, tat, remaining, ahead, wait - tau))
                else:
                    verdict = _new(Verdict, (True, now + wait, (tau - wait) // limit.emission_us, wait, 0))
            else:
                decide = _SIMPLE.get(limit.algorithm)
                if decide is None:
                    return self._decide_general(checks, request_id)
                verdict = decide(entry[0] if entry is not None else None, now, cost, limit)
            verdicts.append(verdict)
            if verdict[0]:
                admitting.append((table, entry, key, verdict[1]))
            elif not shadow:
                ok = False
        if ok:
            # Known keys first: refreshed, they cannot be swept away by a new key's insertion.
            added = None
            for item in admitting:
                entry = item[1]
                if entry is None:
                    if added is None:
                        added = []
                    added.append(item)
                else:
                    entry[0] = item[3]
                    entry[1] = now + item[0].ttl_us
            if added is not None:
                for table, _, key, state in added:
                    table.add(key, [state, now + table.ttl_us], now)
        return _new(Decision, (ok, verdicts, now))

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        """The same as :meth:`decide_now`, for callers that treat every store alike."""
        return self.decide_now(checks, request_id)

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        """Free the request's concurrency slots."""
        for check in checks:
            if check.limit.algorithm != CONCURRENCY:
                continue
            table = self._tables.get(check.limit)
            entry = table.entries.get(check.key) if table is not None else None
            if entry is not None:
                entry[0].pop(request_id, None)

    async def give_back(self, checks: Sequence[Check], request_id: str, decision: Decision) -> None:
        """Undo an admission (a client gone while it waited): later requests find what they would have.

        Each rule that admitted the request takes back what it recorded: a GCRA arrival
        time moves back by the request's emissions, a window's count (if that window is
        still kept) drops by the cost, the log loses the request's stamps and a
        concurrency slot is freed.
        """
        at = decision[2]
        for check, verdict in zip(checks, decision[1], strict=True):
            if not verdict[0]:
                continue
            limit = check.limit
            table = self._tables.get(limit)
            entry = table.entries.get(check.key) if table is not None else None
            if entry is None:
                continue
            algorithm = limit.algorithm
            state = entry[0]
            if algorithm == GCRA:
                entry[0] = state - check.cost * limit.emission_us
            elif algorithm == FIXED_WINDOW:
                if state is not None and state[0] == at - at % limit.period_us:
                    entry[0] = (state[0], state[1] - check.cost)
            elif algorithm == SLIDING_WINDOW:
                start = at - at % limit.period_us
                if state is not None and state[0] == start:
                    entry[0] = (start, state[1], state[2] - check.cost)
                elif state is not None and state[0] == start + limit.period_us:
                    entry[0] = (state[0], state[1] - check.cost, state[2])
            elif algorithm == SLIDING_LOG:
                for _ in range(check.cost):
                    if at in state:
                        state.remove(at)
            else:
                state.pop(request_id, None)

    async def start(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Forget every key."""
        self._tables.clear()

    async def ping(self) -> bool:
        """Always reachable."""
        return True
