"""The Redis script and the pure algorithms give the same answers on the same timeline."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.ratelimit.algorithms import Limit
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.memory import MemoryStore
from bastion.ratelimit.stores.redis import SCRIPT, _decision, _script_args

ALGORITHMS = ["gcra", "fixed_window", "sliding_window", "sliding_log", "concurrency"]


@pytest.fixture(scope="module")
def client() -> Iterator[redis.Redis]:
    from tests.conftest import REDIS_URL, require_service

    require_service("redis", REDIS_URL, 6379)
    connection = redis.Redis.from_url(REDIS_URL)
    connection.script_load(SCRIPT)
    yield connection
    connection.close()


rules = st.lists(
    st.tuples(
        st.sampled_from(ALGORITHMS),
        st.integers(1, 10),
        st.integers(1, 4000),
        st.one_of(st.none(), st.integers(1, 10)),
        st.booleans(),
    ),
    min_size=1,
    max_size=3,
)
timeline = st.lists(st.tuples(st.integers(0, 2_500_000), st.integers(1, 2)), min_size=1, max_size=25)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=rules, steps=timeline)
def test_script_matches_memory_store(client: redis.Redis, spec: list, steps: list[tuple[int, int]]) -> None:
    prefix = "{test-" + uuid.uuid4().hex + "}:"
    checks = []
    for i, (alg, n, period_ms, burst, shadow) in enumerate(spec):
        limit = Limit.build(alg, n, period_ms * 1000, burst if alg == "gcra" else None)
        capacity = limit.burst if alg == "gcra" else n
        checks.append(Check(f"rule{i}|k", limit, 1, shadow and i > 0))
        checks[-1] = checks[-1]._replace(cost=min(capacity, 1))
    now = 1_700_000_000_000_000
    memory = MemoryStore(lambda: now)
    try:
        for step, (delta, cost) in enumerate(steps):
            now += delta
            request = [
                c._replace(cost=min(cost, c.limit.burst if c.limit.algorithm == 0 else c.limit.limit))
                for c in checks
            ]
            rid = f"r{step}"
            expected = memory.decide_now(request, rid)
            reply = client.execute_command(*_script_args("d", request, rid, prefix, str(now)))
            got = _decision(reply[0])
            assert got.admitted == expected.admitted, (step, got, expected)
            for g, e in zip(got.verdicts, expected.verdicts, strict=True):
                assert (g.allowed, g.remaining, g.reset_us, g.retry_us) == (
                    e.allowed,
                    e.remaining,
                    e.reset_us,
                    e.retry_us,
                ), (step, g, e)
    finally:
        keys = client.keys(prefix.replace("{", "\\{").replace("}", "\\}") + "*")
        if keys:
            client.delete(*keys)
