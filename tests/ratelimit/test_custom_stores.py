"""The guard has one decision path: any store that keeps the protocol gets the same headers and counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.asgi import SCOPE_KEY, RequestContext
from bastion.config.ratelimit import RuleConfig
from bastion.observability.metrics import Metrics
from bastion.problems import RateLimited
from bastion.ratelimit.algorithms import CONCURRENCY, Limit, Verdict
from bastion.ratelimit.guard import RateLimitGuard
from bastion.ratelimit.rules import compile_rule
from bastion.ratelimit.stores import Check, Decision, admitted
from bastion.ratelimit.stores.memory import MemoryStore

from .helpers import ok_app


class CountingStore:
    """A store of its own: a plain count per key, never reset (concurrency slots are freed)."""

    name = "counting"
    sync = True

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        verdicts = []
        for check in checks:
            used = self.counts.get(check.key, 0)
            allowed = used + check.cost <= check.limit.limit
            left = check.limit.limit - used - (check.cost if allowed else 0)
            verdicts.append(Verdict(allowed, None, left, check.limit.period_us, 0 if allowed else 2_500_000))
        ok = admitted(checks, verdicts)
        if ok:
            for check, verdict in zip(checks, verdicts, strict=True):
                if verdict.allowed:
                    self.counts[check.key] = self.counts.get(check.key, 0) + check.cost
        return Decision(ok, verdicts)

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        return self.decide_now(checks, request_id)

    async def release(self, checks: Sequence[Check], request_id: str) -> None:
        for check in checks:
            if check.limit.algorithm == CONCURRENCY:
                self.counts[check.key] -= check.cost

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def ping(self) -> bool:
        return True


class WaitingCountingStore(CountingStore):
    """The same store, answering only after a turn of the event loop (as a networked store does)."""

    name = "waiting"
    sync = False

    def decide_now(self, checks: Sequence[Check], request_id: str) -> Decision:
        raise NotImplementedError("decides asynchronously")

    async def decide(self, checks: Sequence[Check], request_id: str) -> Decision:
        await asyncio.sleep(0)
        return CountingStore.decide_now(self, checks, request_id)


RULES = {
    "one": [{"name": "per-client", "limit": "3/minute"}],
    "several with shadow": [
        {"name": "global", "key": "global", "limit": "7/minute"},
        {"name": "per-client", "limit": "3/minute", "cost": 2},
        {"name": "watch", "key": "ip", "limit": "1/minute", "mode": "shadow"},
    ],
    "concurrency": [
        {"name": "global", "key": "global", "limit": "100/minute"},
        {"name": "slots", "algorithm": "concurrency", "limit": "1/second"},
    ],
}


async def run(store: Any, rules: list[dict[str, Any]]) -> tuple[list[Any], list[str]]:
    """Requests from two clients, as the boundary sends them: ``admit`` first, else ``__call__``."""
    metrics = Metrics(env={})
    compiled = [compile_rule(RuleConfig.model_validate(rule)) for rule in rules]
    guard = RateLimitGuard(ok_app, compiled, store, metrics=metrics)
    answers: list[Any] = []
    for i in range(8):
        ctx = RequestContext("t" * 32, "s" * 16, "r", route="/x")
        scope = {
            "type": "http",
            "method": "GET",
            "path": "/x",
            "headers": [],
            "client": (f"10.0.0.{i % 2}", 1234),
            SCOPE_KEY: ctx,
        }
        sent: list[Any] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        async def send(message: Any, sent: list[Any] = sent) -> None:
            sent.append(message)

        try:
            if not guard.admit(scope, ctx):
                await guard(scope, receive, send)
            status: Any = "admitted"
        except RateLimited as exc:
            status = (429, exc.headers["Retry-After"], exc.extensions["policies"])
        answers.append((status, list(ctx.response_headers), ctx.log))
    counts = [
        line
        for line in metrics.exposition().decode().splitlines()
        if line.startswith("bastion_rate_limit_decisions_total{")
    ]
    return answers, counts


@pytest.mark.parametrize("rules", list(RULES))
async def test_a_waiting_store_gets_what_a_sync_store_gets(rules: str) -> None:
    sync = await run(CountingStore(), RULES[rules])
    waiting = await run(WaitingCountingStore(), RULES[rules])
    assert waiting == sync
    assert sync[1]


async def test_the_custom_store_answers_are_the_headers() -> None:
    (first, *_, last), _ = await run(CountingStore(), RULES["one"])
    assert first == (
        "admitted",
        [
            (b"ratelimit-policy", b'"per-client";q=3;w=60'),
            (b"ratelimit", b'"per-client";r=2;t=60'),
            (b"x-ratelimit-limit", b"3"),
            (b"x-ratelimit-remaining", b"2"),
            (b"x-ratelimit-reset", b"60"),
        ],
        {},
    )
    assert last[0] == (429, "3", ["per-client"])


class Clock:
    def __init__(self, now: int = 10**12) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


simple_limits = st.builds(
    lambda alg, n, period_ms, burst: Limit.build(
        alg, n, period_ms * 1000, (burst if alg == "gcra" and burst else None)
    ),
    st.sampled_from(["gcra", "fixed_window", "sliding_window"]),
    st.integers(1, 10),
    st.integers(1, 3000),
    st.one_of(st.none(), st.integers(1, 10)),
)
# A sliding log that always admits: added to a request, it sends the memory store down its
# general step without changing any answer.
NEVER_FULL = Limit.build("sliding_log", 10**6, 1000)


@settings(max_examples=200, deadline=None)
@given(
    limits=st.lists(simple_limits, min_size=1, max_size=3),
    shadows=st.lists(st.booleans(), min_size=3, max_size=3),
    steps=st.lists(
        st.tuples(st.integers(0, 700_000), st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=40
    ),
)
def test_the_memory_store_short_steps_answer_as_its_general_step(
    limits: list[Limit], shadows: list[bool], steps: list[tuple[int, int, int]]
) -> None:
    short_clock, general_clock = Clock(), Clock()
    short, general = MemoryStore(short_clock), MemoryStore(general_clock)
    for advance, client, cost in steps:
        short_clock.now += advance
        general_clock.now += advance
        checks = [
            Check(f"rule{i}|{client if i else '*'}", limit, cost, shadows[i])
            for i, limit in enumerate(limits)
        ]
        expected = general.decide_now([*checks, Check("pad", NEVER_FULL, 1, False)], "r")
        got = short.decide_now(checks, "r")
        assert got.admitted == expected.admitted
        # The state of a refusal is never written: only the numbers must agree there.
        assert [v if v.allowed else v[:1] + v[2:] for v in got.verdicts] == [
            v if v.allowed else v[:1] + v[2:] for v in expected.verdicts[:-1]
        ]
