"""The short paths for rules whose state is one value: the same answers and bytes as the general ones."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config.ratelimit import RuleConfig
from bastion.ratelimit.algorithms import Limit, Verdict
from bastion.ratelimit.guard import Plan, RateLimitGuard
from bastion.ratelimit.headers import render_headers
from bastion.ratelimit.rules import compile_rule
from bastion.ratelimit.stores import Check, Decision, admitted
from bastion.ratelimit.stores.memory import MemoryStore

from .helpers import ok_app


class Clock:
    def __init__(self, now: int = 10**12) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def general_decide(store: MemoryStore, checks: list[Check]) -> Decision:
    """``decide_now`` as written for every algorithm: a verdict per check, then the commits."""
    assert store.clock is not None
    now = store.clock()
    tables = [store._table(check.limit) for check in checks]
    entries = [table.entries.get(check.key) for table, check in zip(tables, checks, strict=True)]
    verdicts = [store._verdict(entry, now, check, "r") for entry, check in zip(entries, checks, strict=True)]
    ok = admitted(checks, verdicts)
    if ok:
        for existing in (True, False):
            for i, check in enumerate(checks):
                if verdicts[i].allowed and (entries[i] is not None) is existing:
                    store._commit(tables[i], entries[i], check, verdicts[i], now, "r")
    return Decision(ok, verdicts)


simple_limits = st.builds(
    lambda alg, n, period_ms, burst: Limit.build(
        alg, n, period_ms * 1000, (burst if alg == "gcra" and burst else None)
    ),
    st.sampled_from(["gcra", "fixed_window", "sliding_window"]),
    st.integers(1, 10),
    st.integers(1, 3000),
    st.one_of(st.none(), st.integers(1, 10)),
)


@settings(max_examples=200, deadline=None)
@given(
    limits=st.lists(simple_limits, min_size=2, max_size=3),
    shadows=st.lists(st.booleans(), min_size=3, max_size=3),
    steps=st.lists(
        st.tuples(st.integers(0, 700_000), st.integers(0, 3), st.integers(1, 3)), min_size=1, max_size=40
    ),
)
def test_several_simple_rules_decide_as_the_general_path(
    limits: list[Limit], shadows: list[bool], steps: list[tuple[int, int, int]]
) -> None:
    fast_clock, general_clock = Clock(), Clock()
    fast, general = MemoryStore(fast_clock), MemoryStore(general_clock)
    for advance, client, cost in steps:
        fast_clock.now += advance
        general_clock.now += advance
        checks = [
            Check(f"rule{i}|{client if i else '*'}", limit, cost, shadows[i])
            for i, limit in enumerate(limits)
        ]
        assert fast.decide_now(checks, "r") == general_decide(general, checks)
        for limit in limits:
            assert dict(fast._tables[limit].entries) == dict(general._tables[limit].entries)
            assert list(fast._tables[limit].entries) == list(general._tables[limit].entries)


def rule(name: str, limit: str, algorithm: str = "gcra", **extra: Any) -> Any:
    return compile_rule(
        RuleConfig.model_validate({"name": name, "limit": limit, "algorithm": algorithm, **extra})
    )


# Rule names are printable ASCII without quotes or backslashes ("%" among them).
names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\'),
    min_size=1,
    max_size=12,
)
verdicts = st.builds(
    lambda remaining, reset_us: Verdict(True, None, remaining, reset_us, 0),
    st.integers(0, 10**7),
    st.integers(-5, 10**9),
)


@settings(max_examples=200, deadline=None)
@given(
    data=st.lists(st.tuples(names, verdicts), min_size=1, max_size=3, unique_by=lambda item: item[0]),
    algorithm=st.sampled_from(["gcra", "fixed_window", "sliding_window"]),
    headers=st.sampled_from(["both", "draft", "legacy"]),
)
def test_cached_header_bytes_equal_freshly_formatted_ones(
    data: list[tuple[str, Verdict]], algorithm: str, headers: str
) -> None:
    rules = tuple(rule(name, f"{7 * (i + 1)}/minute", algorithm) for i, (name, _) in enumerate(data))
    guard = RateLimitGuard(ok_app, list(rules), MemoryStore(), headers=headers)
    plan = Plan(rules)
    assert plan.fast
    found = plan.tier(None)
    ctx: Any = SimpleNamespace(response_headers=[])
    given_verdicts = [verdict for _, verdict in data]
    guard._admitted(plan, found, ctx, given_verdicts)
    expected = render_headers(
        plan.names,
        [r.policies[r.default] for r in rules],
        [r.default for r in rules],
        given_verdicts,
        draft=headers != "legacy",
        legacy=headers != "draft",
    )
    assert ctx.response_headers == expected


def test_tiers_get_their_own_constant_bytes() -> None:
    rules = (
        rule("global", "100/second", key="global"),
        rule("per-client", "10/minute", tiers={"paid": "50/minute"}),
    )
    plan = Plan(rules)
    free, paid = plan.tier(None), plan.tier("paid")
    assert plan.tier("paid") is paid
    assert free.policy == b'"global";q=100;w=1, "per-client";q=10;w=60'
    assert paid.policy == b'"global";q=100;w=1, "per-client";q=50;w=60'
    assert paid.quotas == (b"100", b"50")
    assert plan.keys == ("global|*", "")


def test_percent_in_a_rule_name_is_kept() -> None:
    rules = (rule("50%", "10/second"), rule("b", "10/second"))
    guard = RateLimitGuard(ok_app, list(rules), MemoryStore())
    plan = Plan(rules)
    ctx: Any = SimpleNamespace(response_headers=[])
    guard._admitted(plan, plan.tier(None), ctx, [Verdict(True, None, 3, 1, 0), Verdict(True, None, 4, 2, 0)])
    assert dict(ctx.response_headers)[b"ratelimit"] == b'"50%";r=3;t=1, "b";r=4;t=1'


def test_sliding_log_and_concurrency_rules_take_the_general_path() -> None:
    assert not Plan((rule("log", "5/second", "sliding_log"),)).fast
    assert not Plan((rule("a", "5/second"), rule("c", "5/s", "concurrency"))).fast
    assert Plan((rule("a", "5/second"), rule("w", "5/second", "fixed_window"))).fast


COUNTING = r"""
import asyncio, io, os, sys
from bastion import Bastion
sys.path.insert(0, os.getcwd())
from tests.ratelimit.helpers import client, ok_app

async def main():
    rules = [
        {"name": "global", "key": "global", "limit": "1000/second"},
        {"name": "per-ip", "key": "ip", "limit": "3/minute"},
    ]
    config = {"store": "memory://", "rate_limits": {"rules": rules}}
    bastion = Bastion(ok_app, config, env=dict(os.environ), log_stream=io.BytesIO())
    async with client(bastion) as http:
        statuses = [(await http.get("/x")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429], statuses
    print(bastion.metrics.exposition().decode())

asyncio.run(main())
"""

EXPECTED_COUNTS = [
    'bastion_rate_limit_decisions_total{outcome="allowed",rule="global"} 3.0',
    'bastion_rate_limit_decisions_total{outcome="allowed",rule="per-ip"} 3.0',
    'bastion_rate_limit_decisions_total{outcome="limited",rule="per-ip"} 2.0',
]


@pytest.mark.parametrize("multiprocess", [False, True])
def test_decisions_are_exposed_alike_with_and_without_multiprocess_mode(
    multiprocess: bool, tmp_path: Path
) -> None:
    env = {key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"}
    if multiprocess:
        env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path)
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", COUNTING], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = [
        line for line in result.stdout.splitlines() if line.startswith("bastion_rate_limit_decisions_total")
    ]
    assert sorted(lines) == EXPECTED_COUNTS
    if multiprocess:
        assert any(tmp_path.iterdir())


def test_pending_decisions_add_up_over_collections() -> None:
    from prometheus_client import CollectorRegistry, Counter

    from bastion.ratelimit.guard import PendingDecisions

    registry = CollectorRegistry()
    counter = Counter("decisions", "d", ["rule", "outcome"], registry=registry)
    pending = PendingDecisions(counter, deferred=True)
    pending.register_before(registry, counter)
    slot = pending.slot("a", "allowed")
    assert pending.slot("a", "allowed") == slot
    for added, total in ((3, 3), (2, 5)):
        for _ in range(added):
            pending.count(slot)
        assert registry.get_sample_value("decisions_total", {"rule": "a", "outcome": "allowed"}) == total
    assert pending.counts == {slot: 0}
