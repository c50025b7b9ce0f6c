"""Header bytes and counts: one renderer for every decision, whatever the store.

``RateLimit-Policy`` and ``RateLimit`` are held to the draft (draft-ietf-httpapi-ratelimit-headers,
revision 10's text) written out plainly below, and parsed with ``http_sf`` to prove every value is
a valid Structured Fields List.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import http_sf
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.config.ratelimit import RuleConfig
from bastion.ratelimit.algorithms import CONCURRENCY, GCRA, Limit, Verdict
from bastion.ratelimit.headers import HeaderSet
from bastion.ratelimit.plans import Plan
from bastion.ratelimit.rules import compile_rule

from .conftest import Make
from .helpers import client

RATELIMIT_HEADERS = (b"ratelimit-policy", b"ratelimit", b"x-ratelimit-limit", b"x-ratelimit-remaining")


def seconds(us: int) -> int:
    return -(-us // 1_000_000) if us > 0 else 0


def policy(name: str, limit: Limit) -> str:
    """One ``RateLimit-Policy`` member: quota, and the window in whole seconds (at least 1), or
    for a concurrency limit the quota unit instead (it has no window)."""
    if limit.algorithm == CONCURRENCY:
        return f'"{name}";q={limit.limit};qu="concurrent-requests"'
    quota = limit.burst if limit.algorithm == GCRA else limit.limit
    window_us = limit.tau_us if limit.algorithm == GCRA else limit.period_us
    return f'"{name}";q={quota};w={max(1, seconds(window_us))}'


def reference(
    names: list[str],
    limits: list[Limit],
    costs: list[int],
    verdicts: list[Verdict],
    admitted: bool,
    mode: str,
) -> list[tuple[bytes, bytes]]:
    """The headers as the draft and the legacy convention spell them, written out plainly."""
    if not admitted:
        verdicts = [
            v._replace(remaining=v.remaining + c) if v.allowed else v
            for v, c in zip(verdicts, costs, strict=True)
        ]
    members = []
    for name, limit, verdict in zip(names, limits, verdicts, strict=True):
        member = f'"{name}";r={verdict.remaining}'
        if limit.algorithm != CONCURRENCY:
            member += f";t={seconds(verdict.reset_us)}"
        members.append(member)
    tightest = 0
    for i, verdict in enumerate(verdicts):
        best = verdicts[tightest]
        if verdict.remaining < best.remaining or (
            verdict.remaining == best.remaining and verdict.reset_us > best.reset_us
        ):
            tightest = i
    headers = []
    if mode in ("both", "draft"):
        policies = ", ".join(policy(n, limit) for n, limit in zip(names, limits, strict=True))
        headers += [(b"ratelimit-policy", policies.encode()), (b"ratelimit", ", ".join(members).encode())]
    if mode in ("both", "legacy"):
        headers += [
            (b"x-ratelimit-limit", str(limits[tightest].quota).encode()),
            (b"x-ratelimit-remaining", str(verdicts[tightest].remaining).encode()),
            (b"x-ratelimit-reset", str(seconds(verdicts[tightest].reset_us)).encode()),
        ]
    return headers


# Rule names are printable ASCII without quotes or backslashes ("%" among them).
names = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, blacklist_characters='"\\'),
    min_size=1,
    max_size=12,
)
limits = st.builds(
    lambda algorithm, n, period_ms: Limit.build(algorithm, n, period_ms * 1000),
    st.sampled_from(["gcra", "fixed_window", "sliding_window", "sliding_log", "concurrency"]),
    st.integers(1, 100),
    st.integers(1, 200_000),
)
verdicts = st.builds(
    lambda allowed, remaining, reset_us: Verdict(allowed, None, remaining, reset_us, 0),
    st.booleans(),
    st.integers(0, 10**7),
    st.integers(-5, 10**9),
)


@settings(max_examples=400, deadline=None)
@given(
    data=st.lists(
        st.tuples(names, limits, st.integers(1, 3), verdicts),
        min_size=1,
        max_size=4,
        unique_by=lambda d: d[0],
    ),
    admitted=st.booleans(),
    mode=st.sampled_from(["both", "draft", "legacy", "none"]),
)
def test_rendered_bytes_are_the_conventions_for_every_decision(
    data: list[tuple[str, Limit, int, Verdict]], admitted: bool, mode: str
) -> None:
    rule_names = [d[0] for d in data]
    rule_limits = [d[1] for d in data]
    costs = [d[2] for d in data]
    given_verdicts = [d[3] for d in data]
    headers = HeaderSet(
        rule_names, rule_limits, costs, draft=mode in ("both", "draft"), legacy=mode in ("both", "legacy")
    )
    expected = reference(rule_names, rule_limits, costs, given_verdicts, admitted, mode)
    rendered = list(headers.render(given_verdicts, admitted))
    assert rendered == expected
    if mode in ("both", "draft"):
        assert_valid_fields(dict(rendered), rule_names, rule_limits)


def assert_valid_fields(headers: dict[bytes, bytes], names: list[str], limits: list[Limit]) -> None:
    """Both fields parse as Structured Fields Lists of sf-string items with the draft's parameters."""
    policies = http_sf.parse(headers[b"ratelimit-policy"], tltype="list")
    current = http_sf.parse(headers[b"ratelimit"], tltype="list")
    assert [item for item, _ in policies] == names
    assert [item for item, _ in current] == names
    for (_, params), (_, now), limit in zip(policies, current, limits, strict=True):
        assert isinstance(params["q"], int) and params["q"] >= 0
        assert isinstance(now["r"], int) and now["r"] >= 0
        assert "pk" not in params and "pk" not in now
        if limit.algorithm == CONCURRENCY:
            assert set(params) == {"q", "qu"} and params["qu"] == "concurrent-requests"
            assert set(now) == {"r"}
        else:
            assert set(params) == {"q", "w"} and isinstance(params["w"], int) and params["w"] >= 1
            assert set(now) == {"r", "t"} and isinstance(now["t"], int) and now["t"] >= 0


def rule(name: str, limit: str, algorithm: str = "gcra", **extra: Any) -> Any:
    return compile_rule(
        RuleConfig.model_validate({"name": name, "limit": limit, "algorithm": algorithm, **extra})
    )


def test_tiers_get_their_own_constant_bytes() -> None:
    rules = (
        rule("global", "100/second", key="global"),
        rule("per-client", "10/minute", tiers={"paid": "50/minute"}),
    )
    plan = Plan(rules, draft=True, legacy=True)
    free, paid = plan.tier(None), plan.tier("paid")
    assert plan.tier("paid") is paid
    assert free.headers.policy == b'"global";q=100;w=1, "per-client";q=10;w=60'
    assert paid.headers.policy == b'"global";q=100;w=1, "per-client";q=50;w=60'
    assert paid.headers.quotas == (b"100", b"50")


def test_percent_in_a_rule_name_is_kept() -> None:
    headers = HeaderSet(["50%", "b"], [Limit.build("gcra", 10, 1_000_000)] * 2, [1, 1])
    rendered = headers.render([Verdict(True, None, 3, 1, 0), Verdict(True, None, 4, 2, 0)], True)
    assert dict(rendered)[b"ratelimit"] == b'"50%";r=3;t=1, "b";r=4;t=1'


def sent_headers(response: Any) -> list[tuple[bytes, bytes]]:
    return [
        (k.lower(), v)
        for k, v in response.headers.raw
        if k.lower().startswith((b"ratelimit", b"x-ratelimit"))
    ]


def pairs(*values: bytes) -> list[tuple[bytes, bytes]]:
    """The rate limit headers in the order they are sent (those of the header setting)."""
    names = (
        b"ratelimit-policy",
        b"ratelimit",
        b"x-ratelimit-limit",
        b"x-ratelimit-remaining",
        b"x-ratelimit-reset",
    )
    if len(values) == 3:
        names = names[2:]
    return list(zip(names, values, strict=False))


KEY = {"X-API-Key": "k1"}

# Per case: the rules, the header setting, the request's headers, and each response's status and
# rate limit headers, byte for byte. GCRA resets count from each request's own arrival: exact to
# the second.
CASES: dict[
    str, tuple[list[dict[str, Any]], str, dict[str, str], list[tuple[int, list[tuple[bytes, bytes]]]]]
] = {
    "one rule": (
        [{"name": "per-client", "limit": "2/minute"}],
        "both",
        {},
        [
            (200, pairs(b'"per-client";q=2;w=60', b'"per-client";r=1;t=30', b"2", b"1", b"30")),
            (200, pairs(b'"per-client";q=2;w=60', b'"per-client";r=0;t=60', b"2", b"0", b"60")),
            (429, pairs(b'"per-client";q=2;w=60', b'"per-client";r=0;t=60', b"2", b"0", b"60")),
        ],
    ),
    "two rules, refused by one: the other reports the quota not consumed": (
        [
            {"name": "global", "key": "global", "limit": "100/minute"},
            {"name": "per-client", "limit": "1/minute"},
        ],
        "both",
        {},
        [
            (
                200,
                pairs(
                    b'"global";q=100;w=60, "per-client";q=1;w=60',
                    b'"global";r=99;t=1, "per-client";r=0;t=60',
                    b"1",
                    b"0",
                    b"60",
                ),
            ),
            (
                429,
                pairs(
                    b'"global";q=100;w=60, "per-client";q=1;w=60',
                    b'"global";r=99;t=2, "per-client";r=0;t=60',
                    b"1",
                    b"0",
                    b"60",
                ),
            ),
        ],
    ),
    "three rules, draft only": (
        [
            {"name": "a", "key": "global", "limit": "10/second"},
            {"name": "b", "limit": "3/minute"},
            {"name": "c", "key": "ip", "limit": "5/minute", "cost": 2},
        ],
        "draft",
        {},
        [
            (
                200,
                pairs(
                    b'"a";q=10;w=1, "b";q=3;w=60, "c";q=5;w=60', b'"a";r=9;t=1, "b";r=2;t=20, "c";r=3;t=24'
                ),
            ),
            (
                200,
                pairs(
                    b'"a";q=10;w=1, "b";q=3;w=60, "c";q=5;w=60', b'"a";r=8;t=1, "b";r=1;t=40, "c";r=1;t=48'
                ),
            ),
            (
                429,
                pairs(
                    b'"a";q=10;w=1, "b";q=3;w=60, "c";q=5;w=60', b'"a";r=8;t=1, "b";r=1;t=60, "c";r=1;t=48'
                ),
            ),
        ],
    ),
    "shadow rule over its limit, legacy only": (
        [{"name": "watch", "limit": "1/minute", "mode": "shadow"}, {"name": "real", "limit": "10/minute"}],
        "legacy",
        {},
        [(200, pairs(b"1", b"0", b"60")), (200, pairs(b"1", b"0", b"60"))],
    ),
    "an unverified key also counts per IP": (
        [{"name": "per-client", "limit": "2/minute"}],
        "both",
        KEY,
        [
            (
                200,
                pairs(
                    b'"per-client";q=2;w=60, "per-client@ip";q=2;w=60',
                    b'"per-client";r=1;t=30, "per-client@ip";r=1;t=30',
                    b"2",
                    b"1",
                    b"30",
                ),
            ),
        ],
    ),
    "concurrency": (
        [
            {"name": "g", "key": "global", "limit": "100/minute"},
            {"name": "c", "algorithm": "concurrency", "limit": "1/second"},
        ],
        "both",
        {},
        [
            (
                200,
                pairs(
                    b'"g";q=100;w=60, "c";q=1;qu="concurrent-requests"',
                    b'"g";r=99;t=1, "c";r=0',
                    b"1",
                    b"0",
                    b"0",
                ),
            )
        ],
    ),
    "no headers": ([{"name": "per-client", "limit": "1/minute"}], "none", {}, [(200, []), (429, [])]),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_header_bytes_on_every_store(make: Make, case: str) -> None:
    rules, mode, request_headers, expected = CASES[case]
    bastion = make({"rate_limits": {"rules": rules, "headers": mode}})
    async with client(bastion) as http:
        got = []
        for _ in expected:
            response = await http.get("/x", headers=request_headers)
            got.append((response.status_code, sent_headers(response)))
    assert got == expected


COUNTING = r"""
import asyncio, io, os, sys
from bastion import Bastion
sys.path.insert(0, os.getcwd())
from tests.ratelimit.helpers import client, ok_app

async def main():
    rules = [
        {"name": "global", "key": "global", "limit": "1000/second"},
        {"name": "per-ip", "key": "ip", "limit": "3/minute"},
        {"name": "watch", "key": "ip", "limit": "1/minute", "mode": "shadow"},
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
    'bastion_rate_limit_decisions_total{outcome="allowed",rule="watch"} 1.0',
    'bastion_rate_limit_decisions_total{outcome="limited",rule="per-ip"} 2.0',
    'bastion_rate_limit_decisions_total{outcome="shadow_limited",rule="watch"} 4.0',
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
