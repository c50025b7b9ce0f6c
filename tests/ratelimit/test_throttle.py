"""Queue instead of refuse (``throttle``): exact slots, a bounded queue, and slots given back."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.asgi import SCOPE_KEY, Message, Receive, RequestContext, Scope, Send
from bastion.config import ConfigError, load_config
from bastion.config.ratelimit import RuleConfig
from bastion.observability.metrics import Metrics
from bastion.problems import RateLimited
from bastion.ratelimit.algorithms import Limit, Verdict, gcra
from bastion.ratelimit.guard import RateLimitGuard
from bastion.ratelimit.rules import compile_rule
from bastion.ratelimit.stores import Check, Decision
from bastion.ratelimit.stores.memory import MemoryStore
from bastion.ratelimit.stores.redis import SCRIPT, RedisStore, _decision, _script_args
from tests.conftest import REDIS_URL, require_service

from .conftest import Make
from .helpers import client

SECOND = 1_000_000
T0 = 1_700_000_000_000_000  # a simulated clock reading, in microseconds


def throttled(
    limit: int, period_us: int, max_delay_us: int, queue_limit: int, burst: int | None = 1
) -> Limit:
    return Limit.build("gcra", limit, period_us, burst, max_delay_us=max_delay_us, queue_limit=queue_limit)


class Timeline:
    """One store on a simulated clock: memory with a fake clock, Redis through ``decide_at``."""

    def __init__(self, store: MemoryStore | RedisStore) -> None:
        self.store = store
        self.now = T0

    async def decide(self, checks: list[Check], rid: str, at: int | None = None) -> Decision:
        if at is not None:
            self.now = at
        if isinstance(self.store, MemoryStore):
            return self.store.decide_now(checks, rid)
        return await self.store.decide_at(checks, rid, self.now)

    async def give_back(self, checks: list[Check], rid: str, decision: Decision) -> None:
        await self.store.give_back(checks, rid, decision)


@pytest.fixture(params=["memory", "redis"])
async def timelines(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    """Makes fresh :class:`Timeline` s on the store under test (Redis: a fresh key prefix each)."""
    opened: list[RedisStore] = []

    async def make() -> Timeline:
        if request.param == "memory":
            timeline: Timeline

            def clock() -> int:
                return timeline.now

            timeline = Timeline(MemoryStore(clock))
            return timeline
        require_service("redis", REDIS_URL, 6379)
        store = RedisStore(REDIS_URL, key_prefix="bastion-test-" + uuid.uuid4().hex)
        await store.start()
        opened.append(store)
        return Timeline(store)

    yield make
    for store in opened:
        await store.close()


# -- the pure algorithm ---------------------------------------------------------------------------

queued_limits = st.builds(
    lambda n, period_ms, burst, delay_ms, queue: throttled(
        n, period_ms * 1000, delay_ms * 1000, queue, burst
    ),
    st.integers(1, 10),
    st.integers(1, 3000),
    st.one_of(st.none(), st.integers(1, 10)),
    st.integers(1, 5000),
    st.integers(1, 20),
)
arrivals = st.lists(st.tuples(st.integers(0, 400_000), st.integers(1, 3)), min_size=1, max_size=60)


def replay(limit: Limit, steps: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """``(arrival, slot, cost)`` of every admission of the pure algorithm on one key."""
    tat = None
    now = T0
    admitted = []
    for gap, cost in steps:
        now += gap
        cost = min(cost, limit.burst)
        verdict = gcra(tat, now, cost, limit)
        if verdict.allowed:
            tat = verdict.state
            assert 0 <= verdict.retry_us <= limit.max_delay_us
            admitted.append((now, now + verdict.retry_us, cost))
        else:
            assert verdict.retry_us > 0
    return admitted


@settings(max_examples=300, deadline=None)
@given(
    limit=queued_limits,
    gaps=st.lists(st.integers(0, 400_000), min_size=1, max_size=60),
    cost=st.integers(1, 3),
)
def test_queued_admissions_never_pass_the_rate_nor_the_queue(
    limit: Limit, gaps: list[int], cost: int
) -> None:
    # (A rule's cost is the same for every request.)
    admitted = replay(limit, [(gap, cost) for gap in gaps])
    slots = [slot for _, slot, _ in admitted]
    assert slots == sorted(slots)  # first come, first served
    for i in range(len(admitted)):
        units = 0
        for j in range(i, len(admitted)):
            units += admitted[j][2]
            # At most the burst at once, then one unit per emission interval.
            assert units <= limit.burst + (slots[j] - slots[i]) // limit.emission_us
    for arrival, _, _ in admitted:
        # Requests waiting at an arrival (this one included): never more than the queue holds.
        waiting = sum(1 for a, slot, _ in admitted if a <= arrival < slot)
        assert waiting <= limit.queue_limit


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 10),
    period_ms=st.integers(10, 3000),
    delay_ms=st.integers(1, 6000),
    queue=st.integers(1, 30),
    steps=st.lists(st.integers(0, 300_000), min_size=1, max_size=60),
)
def test_admissions_never_exceed_the_limit_in_any_window(
    n: int, period_ms: int, delay_ms: int, queue: int, steps: list[int]
) -> None:
    limit = throttled(n, period_ms * 1000, delay_ms * 1000, queue)
    slots = [slot for _, slot, _ in replay(limit, [(gap, 1) for gap in steps])]
    for i, start in enumerate(slots):
        in_window = sum(1 for slot in slots[i:] if slot < start + limit.period_us)
        assert in_window <= n


@settings(max_examples=200, deadline=None)
@given(limit=queued_limits, steps=arrivals)
def test_the_memory_store_paths_queue_as_the_pure_algorithm(
    limit: Limit, steps: list[tuple[int, int]]
) -> None:
    now = [T0]
    short, paired, general = (MemoryStore(lambda: now[0]) for _ in range(3))
    never_full = Limit.build("sliding_log", 10**6, 1000)
    roomy = Limit.build("gcra", 10**6, 1000)
    tat = None
    for gap, cost in steps:
        now[0] += gap
        cost = min(cost, limit.burst)
        expected = gcra(tat, now[0], cost, limit)
        if expected.allowed:
            tat = expected.state
        check = Check("k", limit, cost, False)
        assert short.decide_now([check], "r").verdicts == [expected]
        pair = paired.decide_now([check, Check("other", roomy, 1, False)], "r")
        assert pair.verdicts[0] == expected
        decided = general.decide_now([check, Check("pad", never_full, 1, False)], "r")
        assert decided.verdicts[0] == expected


# -- the Redis script agrees --------------------------------------------------------------------


@pytest.fixture(scope="module")
def sync_redis() -> Iterator[redis.Redis]:
    require_service("redis", REDIS_URL, 6379)
    connection = redis.Redis.from_url(REDIS_URL)
    connection.script_load(SCRIPT)
    yield connection
    connection.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=queued_limits, steps=arrivals, others=st.booleans())
def test_the_script_queues_as_the_memory_store(
    sync_redis: redis.Redis, limit: Limit, steps: list[tuple[int, int]], others: bool
) -> None:
    prefix = "{test-" + uuid.uuid4().hex + "}:"
    now = T0
    memory = MemoryStore(lambda: now)
    extra = [Check("window|k", Limit.build("fixed_window", 30, 2_000_000), 1, False)] if others else []
    try:
        for step, (gap, cost) in enumerate(steps):
            now += gap
            request = [Check("gcra|k", limit, min(cost, limit.burst), False), *extra]
            expected = memory.decide_now(request, f"r{step}")
            got = _decision(
                sync_redis.execute_command(*_script_args("d", request, f"r{step}", prefix, str(now)))[0]
            )
            assert got.admitted == expected.admitted
            assert [v[:1] + v[2:] for v in got.verdicts] == [v[:1] + v[2:] for v in expected.verdicts]
    finally:
        keys = sync_redis.keys(prefix.replace("{", "\\{").replace("}", "\\}") + "*")
        if keys:
            sync_redis.delete(*keys)


# -- the stores: exact counts, the queue limit, give-backs ---------------------------------------


async def test_n_clients_over_the_limit_get_exactly_the_limit_per_window(timelines: Any) -> None:
    timeline = await timelines()
    # 10 a second, one at a time, up to 2 s of waiting: 50 clients arrive together.
    check = [Check("all|*", throttled(10, SECOND, 2 * SECOND, 100), 1, False)]
    decisions = [await timeline.decide(check, f"c{i}", T0) for i in range(50)]
    slots = sorted(T0 + d.verdicts[0].retry_us for d in decisions if d.admitted)
    assert len(slots) == 21  # now, then one every 100 ms for 2 s
    for window in range(2):
        start = T0 + window * SECOND
        assert sum(1 for slot in slots if start <= slot < start + SECOND) == 10
    assert len(set(slots)) == len(slots)  # each slot is taken once
    refused = [d.verdicts[0] for d in decisions if not d.admitted]
    assert all(v.retry_us > 2 * SECOND for v in refused)
    # The next window, as the clock reaches it, admits its ten again (the queue has drained).
    later = [await timeline.decide(check, f"l{i}", T0 + 3 * SECOND) for i in range(30)]
    assert sum(d.admitted for d in later) == 21


async def test_requests_beyond_the_queue_limit_are_refused(timelines: Any) -> None:
    timeline = await timelines()
    check = [Check("all|*", throttled(1, 60 * SECOND, 3600 * SECOND, 3), 1, False)]
    decisions = [await timeline.decide(check, f"c{i}", T0) for i in range(10)]
    assert [d.admitted for d in decisions] == [True] * 4 + [False] * 6
    assert [d.verdicts[0].retry_us for d in decisions[:4]] == [0, 60 * SECOND, 120 * SECOND, 180 * SECOND]
    # One minute on, the first waiting request has gone: one place in the queue is free.
    decisions = [await timeline.decide(check, f"d{i}", T0 + 60 * SECOND) for i in range(3)]
    assert [d.admitted for d in decisions] == [True, False, False]
    assert decisions[0].verdicts[0].retry_us == 180 * SECOND


def every_algorithm(cost: int = 1) -> list[Check]:
    return [
        Check("queue|*", throttled(1, 60 * SECOND, 600 * SECOND, 5), cost, False),
        Check("fixed|*", Limit.build("fixed_window", 10, SECOND), cost, False),
        Check("sliding|*", Limit.build("sliding_window", 10, SECOND), cost, False),
        Check("log|*", Limit.build("sliding_log", 10, SECOND), cost, False),
        Check("slots|*", Limit.build("concurrency", 10, 60 * SECOND), cost, False),
    ]


@pytest.mark.parametrize("later", [0, 200_000, 700_000, 1_300_000])
async def test_a_slot_given_back_is_as_if_the_request_never_came(timelines: Any, later: int) -> None:
    checks = every_algorithm()
    given_back, never_came = await timelines(), await timelines()
    start = T0 + 500_000  # half-way through a window
    assert (await given_back.decide(checks, "r1", start)).admitted
    assert (await never_came.decide(checks, "r1", start)).admitted
    waiting = await given_back.decide(checks, "r2", start + 100_000)
    assert waiting.admitted and waiting.verdicts[0].retry_us > 0
    await given_back.give_back(checks, "r2", waiting)
    got = await given_back.decide(checks, "r3", start + 100_000 + later)
    expected = await never_came.decide(checks, "r3", start + 100_000 + later)
    assert got.admitted == expected.admitted
    assert [v[:1] + v[2:] for v in got.verdicts] == [v[:1] + v[2:] for v in expected.verdicts]


async def test_two_store_instances_share_one_queue_exactly(redis_url: str) -> None:
    prefix = "bastion-test-" + uuid.uuid4().hex
    stores = [RedisStore(redis_url, key_prefix=prefix) for _ in range(2)]
    for store in stores:
        await store.start()
    check = [Check("shared|*", throttled(1, 60 * SECOND, 3600 * SECOND, 4), 1, False)]
    try:
        # On one simulated clock: the instances take turns, and the queue is one.
        decisions = [await stores[i % 2].decide_at(check, f"c{i}", T0) for i in range(12)]
        assert [d.verdicts[0].retry_us for d in decisions if d.admitted] == [
            i * 60 * SECOND for i in range(5)
        ]
        assert sum(d.admitted for d in decisions) == 5
        # On the server's clock, all at once from both: still five, each on its own slot.
        check = [check[0]._replace(key="live|*")]
        decided = await asyncio.gather(*(stores[i % 2].decide(check, f"d{i}") for i in range(40)))
        admitted = [d for d in decided if d.admitted]
        assert len(admitted) == 5
        slots = sorted(d.at_us + d.verdicts[0].retry_us for d in admitted)
        assert all(b - a >= 60 * SECOND for a, b in itertools.pairwise(slots))
        # A give-back through one instance frees the place for the other.
        last = max(admitted, key=lambda d: d.verdicts[0].retry_us)
        await stores[0].give_back(check, "gone", last)
        assert (await stores[1].decide(check, "again")).admitted
        assert not (await stores[0].decide(check, "full")).admitted
    finally:
        for store in stores:
            await store.close()


# -- the guard: waiting, the histogram, disconnects, the body --------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


def request_scope(path: str = "/x") -> tuple[Scope, RequestContext]:
    ctx = RequestContext("t" * 32, "s" * 16, "r", route=path)
    scope = {
        "type": "http",
        "method": "POST",
        "path": path,
        "headers": [],
        "client": ("10.0.0.1", 1234),
        SCOPE_KEY: ctx,
    }
    return scope, ctx


class Recorder:
    """An app that reads the whole body and records it, in order."""

    def __init__(self) -> None:
        self.bodies: list[list[bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        chunks = []
        while True:
            message = await receive()
            assert message["type"] == "http.request"
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        self.bodies.append(chunks)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


def guard_for(rule: dict[str, Any], app: Any) -> tuple[RateLimitGuard, Metrics, Clock]:
    clock = Clock()
    metrics = Metrics(env={})
    compiled = [compile_rule(RuleConfig.model_validate(rule))]
    return RateLimitGuard(app, compiled, MemoryStore(clock), metrics=metrics), metrics, clock


def body_receive(*chunks: bytes) -> Receive:
    """Sends ``chunks`` as body messages, then waits (a client that stays) until cancelled."""
    messages: list[Message] = [
        {"type": "http.request", "body": chunk, "more_body": i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]

    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


async def call(guard: RateLimitGuard, receive: Receive) -> tuple[Any, RequestContext]:
    scope, ctx = request_scope()
    sent: list[Message] = []

    async def send(message: Message) -> None:
        sent.append(message)

    try:
        await asyncio.wait_for(guard(scope, receive, send), 10)
    except RateLimited as exc:
        return (429, exc.headers["Retry-After"]), ctx
    return (sent[0]["status"] if sent else None), ctx


async def test_the_guard_waits_and_records_each_wait() -> None:
    app = Recorder()
    rule = {"name": "q", "limit": "20/second", "burst": 1, "throttle": {"max_delay": "1s", "queue_limit": 2}}
    guard, metrics, _ = guard_for(rule, app)
    results = await asyncio.gather(*(call(guard, body_receive(b"x")) for _ in range(4)))
    assert [status for status, _ in results] == [200, 200, 200, (429, "1")]
    assert [ctx.log.get("rate_limit_queued_ms") for _, ctx in results[:3]] == [None, 50.0, 100.0]
    registry = metrics.registry
    assert registry.get_sample_value("bastion_ratelimit_queued_seconds_count", {"rule": "q"}) == 2
    assert registry.get_sample_value("bastion_ratelimit_queued_seconds_sum", {"rule": "q"}) == pytest.approx(
        0.15
    )
    assert len(app.bodies) == 3


async def test_shadow_decisions_never_wait() -> None:
    app = Recorder()
    rule = {"name": "q", "limit": "1/minute", "mode": "shadow", "throttle": {"max_delay": "10m"}}
    guard, metrics, _ = guard_for(rule, app)
    for _ in range(3):
        status, ctx = await call(guard, body_receive(b"x"))
        assert status == 200
        assert "rate_limit_queued_ms" not in ctx.log
    assert metrics.registry.get_sample_value("bastion_ratelimit_queued_seconds_count", {"rule": "q"}) is None


async def test_body_messages_read_while_waiting_reach_the_app_in_order() -> None:
    app = Recorder()
    rule = {"name": "q", "limit": "20/second", "burst": 1, "throttle": {"max_delay": "1s"}}
    guard, _, _ = guard_for(rule, app)
    assert (await call(guard, body_receive(b"first")))[0] == 200
    status, ctx = await call(guard, body_receive(b"a", b"", b"bc", b"d"))
    assert status == 200
    assert ctx.log["rate_limit_queued_ms"] == 50.0
    assert app.bodies[1] == [b"a", b"", b"bc", b"d"]


async def test_a_client_gone_while_waiting_gives_its_slot_back_to_the_memory_store() -> None:
    app = Recorder()
    rule = {"name": "q", "limit": "1/minute", "throttle": {"max_delay": "10m", "queue_limit": 1}}
    guard, metrics, _ = guard_for(rule, app)
    assert (await call(guard, body_receive(b"x")))[0] == 200
    store = guard.store
    assert isinstance(store, MemoryStore)
    (table,) = store._tables.values()
    tat = table.entries["q|ip:10.0.0.1"][0]

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    for _ in range(3):
        status, ctx = await call(guard, gone)
        assert status is None  # queued (a refusal would be a 429), then gone
        assert ctx.log["rate_limit"] == "client_gone_while_queued"
        assert table.entries["q|ip:10.0.0.1"][0] == tat
    # A request cancelled while it waits (the server gave up on it) gives its slot back too.
    scope, _ = request_scope()
    task = asyncio.create_task(guard(scope, body_receive(b"x"), lambda m: asyncio.sleep(0)))
    for _ in range(1000):
        if table.entries["q|ip:10.0.0.1"][0] != tat:
            break
        await asyncio.sleep(0)
    assert table.entries["q|ip:10.0.0.1"][0] > tat
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert table.entries["q|ip:10.0.0.1"][0] == tat
    assert len(app.bodies) == 1
    # Only the waits of requests that went on are in the histogram.
    assert metrics.registry.get_sample_value("bastion_ratelimit_queued_seconds_count", {"rule": "q"}) is None


async def test_a_client_gone_while_waiting_gives_its_slot_back(make: Make, store_url: str) -> None:
    """Through the whole stack, on each store: a queue of one, emptied by each client that leaves."""
    rule = {
        "name": "q",
        "key": "global",
        "limit": "1/minute",
        "throttle": {"max_delay": "10m", "queue_limit": 1},
    }
    prefix = "bastion-test-" + uuid.uuid4().hex
    bastion = make({"rate_limits": {"rules": [rule], "key_prefix": prefix}})
    async with client(bastion) as http:
        assert (await http.post("/x")).status_code == 200
    tat = None
    if store_url.startswith("redis"):
        connection = redis.Redis.from_url(store_url)
        key = "{" + prefix + "}:0:q|*"
        tat = connection.get(key)

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    for _ in range(3):
        scope = {
            "type": "http",
            "method": "POST",
            "path": "/x",
            "raw_path": b"/x",
            "query_string": b"",
            "headers": [],
            "client": ("127.0.0.1", 5000),
            "server": ("127.0.0.1", 80),
            "scheme": "http",
            "http_version": "1.1",
            "asgi": {"version": "3.0"},
        }
        sent: list[Message] = []

        async def send(message: Message, sent: list[Message] = sent) -> None:
            sent.append(message)

        await asyncio.wait_for(bastion(scope, gone, send), 10)
        # Queued, then gone: no answer. Had the first one kept its place, the queue of one
        # would be full and the next would be answered 429.
        assert sent == []
        if tat is not None:
            assert connection.get(key) == tat
    if tat is not None:
        connection.close()


async def test_a_store_without_give_back_still_works() -> None:
    """A custom store from before give-backs: a client gone while waiting leaves its slot to lapse."""

    class OldStore:
        name = "old"
        sync = True

        def __init__(self) -> None:
            self.inner = MemoryStore(Clock())

        def decide_now(self, checks: list[Check], request_id: str) -> Decision:
            return self.inner.decide_now(checks, request_id)

        async def decide(self, checks: list[Check], request_id: str) -> Decision:
            return self.decide_now(checks, request_id)

    rule = {"name": "q", "limit": "1/minute", "throttle": {"max_delay": "10m", "queue_limit": 1}}
    guard = RateLimitGuard(Recorder(), [compile_rule(RuleConfig.model_validate(rule))], OldStore())  # type: ignore[arg-type]
    assert (await call(guard, body_receive(b"x")))[0] == 200

    async def gone() -> Message:
        return {"type": "http.disconnect"}

    assert (await call(guard, gone))[0] is None
    assert (await call(guard, gone))[0][0] == 429


async def test_a_queued_request_gets_its_body_through_the_stack(make: Make) -> None:
    app = Recorder()
    rule = {"name": "q", "key": "global", "limit": "4/second", "burst": 1, "throttle": {"max_delay": "2s"}}
    bastion = make({"rate_limits": {"rules": [rule]}}, app)

    async def chunks() -> AsyncIterator[bytes]:
        for chunk in (b"a", b"bc", b"d"):
            yield chunk

    async with client(bastion) as http:
        first = await http.post("/x", content=b"zero")
        second = await http.post("/x", content=chunks())
    assert (first.status_code, second.status_code) == (200, 200)
    assert b"".join(app.bodies[1]) == b"abcd"


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["fixed_window", "sliding_window", "sliding_log", "concurrency"])
def test_throttle_is_refused_where_a_slot_cannot_be_exact(algorithm: str) -> None:
    rule = {"name": "r", "limit": "5/minute", "algorithm": algorithm, "throttle": {"max_delay": "1s"}}
    with pytest.raises(ConfigError) as caught:
        load_config({"rate_limits": {"rules": [rule]}}, env={})
    ((path, reason),) = caught.value.problems
    assert path == "rate_limits.rules.0.throttle"
    assert f"the {algorithm} algorithm cannot queue" in reason


@pytest.mark.parametrize(
    ("throttle", "path"),
    [
        ({"max_delay": "0s", "queue_limit": 5}, "rate_limits.rules.0.throttle"),
        ({"max_delay": "2h"}, "rate_limits.rules.0.throttle.max_delay"),
        ({"max_delay": "1s", "queue_limit": 0}, "rate_limits.rules.0.throttle.queue_limit"),
        ({"queue_limit": 5}, "rate_limits.rules.0.throttle"),
    ],
)
def test_throttle_settings_are_checked(throttle: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"rate_limits": {"rules": [{"name": "r", "limit": "5/s", "throttle": throttle}]}}, env={})
    assert [p for p, _ in caught.value.problems] == [path]


def test_a_throttled_limit_keeps_its_state_while_requests_wait() -> None:
    limit = throttled(1, 60 * SECOND, 600 * SECOND, 10)
    assert limit.ttl_us == limit.tau_us + 600 * SECOND
    verdict = gcra(T0 + 60 * SECOND, T0, 1, limit)
    assert verdict == Verdict(True, T0 + 120 * SECOND, 0, 120 * SECOND, 60 * SECOND)
