"""The rate limit guard through the public Bastion API."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from bastion import ConfigError
from bastion.clients import key_digest
from bastion.ratelimit.guard import RateLimitGuard
from bastion.ratelimit.stores.memory import MemoryStore

from .conftest import Make
from .helpers import check_consistent, client, metric, parse_headers
from .helpers import make as make_plain

DEMO_RULES = {
    "clients": {"keys": [{"sha256": key_digest(b"key-paid-1"), "tier": "paid"}]},
    "rate_limits": {
        "rules": [
            {"name": "global", "key": "global", "limit": "1000/second"},
            {
                "name": "per-client",
                "key": "client",
                "limit": "100/minute",
                "burst": 20,
                "tiers": {"paid": "1000/minute"},
            },
            {"name": "login", "match": "POST /login", "key": "ip", "limit": "5/minute"},
        ]
    },
}


def guard_of(bastion: Any) -> RateLimitGuard | None:
    app = bastion._chain
    while app is not None:
        if isinstance(app, RateLimitGuard):
            return app
        app = getattr(app, "app", None)
    return None


async def test_burst_of_20_then_429_with_retry_after_and_paid_tier_admitted(make: Make) -> None:
    bastion = make(DEMO_RULES)
    async with client(bastion) as http:
        statuses = []
        last = None
        for _ in range(30):
            last = await http.get("/orders", headers={"X-API-Key": "key-free-1"})
            statuses.append(last.status_code)
        assert statuses.count(200) == 20
        assert statuses[20:] == [429] * 10
        assert last is not None
        assert int(last.headers["retry-after"]) >= 1
        body = orjson.loads(last.content)
        assert body["code"] == "RATE_LIMITED"
        assert body["policies"] == ["per-client"]
        assert last.headers["content-type"].startswith("application/problem+json")
        paid = [
            (await http.get("/orders", headers={"X-API-Key": "key-paid-1"})).status_code for _ in range(21)
        ]
        assert paid == [200] * 21
    assert metric(bastion, "bastion_rate_limit_decisions_total", rule="per-client", outcome="limited") == 10
    assert metric(bastion, "bastion_rate_limit_decisions_total", rule="global", outcome="allowed") == 41


async def test_headers_parse_as_structured_fields_and_agree(make: Make) -> None:
    bastion = make(DEMO_RULES)
    async with client(bastion) as http:
        first = await http.post("/login")
        parsed = check_consistent(first)
        assert parsed["policy"]["login"] == {"q": 5, "w": 60}
        assert parsed["policy"]["per-client"] == {"q": 20, "w": 12}
        assert parsed["limit"]["login"]["r"] == 4
        assert parsed["limit"]["per-client"]["r"] == 19
        for _ in range(4):
            check_consistent(await http.post("/login"))
        limited = await http.post("/login")
        assert limited.status_code == 429
        parsed = check_consistent(limited)
        assert parsed["limit"]["login"]["r"] == 0
        # The rule that would have admitted it reports quota the request did not use.
        assert parsed["limit"]["per-client"]["r"] == 15
        assert int(limited.headers["retry-after"]) == 12
        assert parsed["legacy"][1] == 0


async def test_headers_only_where_a_rule_matched(make: Make) -> None:
    bastion = make(
        {"rate_limits": {"rules": [{"name": "login", "match": "POST /login", "limit": "5/minute"}]}}
    )
    async with client(bastion) as http:
        other = await http.get("/orders")
        assert "ratelimit" not in other.headers
        assert "x-ratelimit-limit" not in other.headers
        assert "ratelimit" in (await http.post("/login")).headers
        # Headers also ride on error responses of matched requests.
        failed = await http.post("/login", headers={})
        assert failed.headers["ratelimit-policy"] == '"login";q=5;w=60'


async def test_headers_on_app_errors_too(make: Make) -> None:
    bastion = make({"rate_limits": {"rules": [{"name": "all", "limit": "5/minute"}]}})
    async with client(bastion) as http:
        failed = await http.get("/boom")
        assert failed.status_code == 500
        check_consistent(failed)


async def test_a_rejection_consumes_nothing_from_other_rules(make: Make) -> None:
    rules = [
        {"name": "wide", "key": "client", "limit": "10/minute", "algorithm": "fixed_window"},
        {
            "name": "narrow",
            "match": "POST /pay",
            "key": "client",
            "limit": "2/minute",
            "algorithm": "fixed_window",
        },
    ]
    bastion = make({"rate_limits": {"rules": rules}})
    async with client(bastion) as http:
        statuses = [(await http.post("/pay")).status_code for _ in range(6)]
        assert statuses == [200, 200, 429, 429, 429, 429]
        after = await http.get("/other")
        assert parse_headers(after)["limit"]["wide"]["r"] == 10 - 2 - 1


async def test_cost_counts_several_units(make: Make) -> None:
    rule = {"name": "export", "limit": "10/minute", "cost": 3, "algorithm": "fixed_window"}
    bastion = make({"rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        statuses = [(await http.get("/export")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_tiers_get_their_own_limits(make: Make) -> None:
    rule = {"name": "tiered", "limit": "2/minute", "tiers": {"gold": "4/minute"}, "algorithm": "fixed_window"}
    bastion = make(
        {
            "clients": {"keys": [{"sha256": key_digest(b"g"), "tier": "gold"}]},
            "rate_limits": {"rules": [rule]},
        }
    )
    async with client(bastion) as http:
        free = [(await http.get("/", headers={"X-API-Key": "f"})).status_code for _ in range(5)]
        gold = [(await http.get("/", headers={"X-API-Key": "g"})).status_code for _ in range(5)]
        assert free.count(200) == 2
        assert gold.count(200) == 4
        assert parse_headers(await http.get("/", headers={"X-API-Key": "g"}))["policy"]["tiered"]["q"] == 4


async def test_shadow_mode_counts_and_logs_but_never_rejects(make: Make) -> None:
    rule = {"name": "trial", "limit": "2/minute", "mode": "shadow", "algorithm": "fixed_window"}
    bastion = make({"rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        responses = [await http.get("/") for _ in range(5)]
    assert [r.status_code for r in responses] == [200] * 5
    assert parse_headers(responses[-1])["limit"]["trial"]["r"] == 0
    assert metric(bastion, "bastion_rate_limit_decisions_total", rule="trial", outcome="shadow_limited") == 3
    assert metric(bastion, "bastion_rate_limit_decisions_total", rule="trial", outcome="allowed") == 2


async def test_shadow_rule_does_not_block_but_enforced_rule_does(make: Make) -> None:
    rules = [
        {"name": "shadow", "limit": "1/minute", "mode": "shadow", "algorithm": "fixed_window"},
        {"name": "real", "limit": "3/minute", "algorithm": "fixed_window"},
    ]
    bastion = make({"rate_limits": {"rules": rules}})
    async with client(bastion) as http:
        statuses = [(await http.get("/")).status_code for _ in range(5)]
    assert statuses == [200, 200, 200, 429, 429]


async def test_key_by_header(make: Make) -> None:
    rule = {"name": "tenant", "key": "header:X-Tenant", "limit": "1/minute", "algorithm": "fixed_window"}
    bastion = make({"rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        assert (await http.get("/", headers={"X-Tenant": "a"})).status_code == 200
        assert (await http.get("/", headers={"X-Tenant": "b"})).status_code == 200
        assert (await http.get("/", headers={"X-Tenant": "a"})).status_code == 429
        # Leaving the header out does not escape the limit: all such requests share one key.
        assert (await http.get("/")).status_code == 200
        assert (await http.get("/")).status_code == 429


async def test_route_key_counts_each_route_separately(make: Make) -> None:
    rule = {"name": "per-route", "key": ["client", "route"], "limit": "1/minute", "algorithm": "fixed_window"}
    bastion = make({"rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        assert (await http.get("/a")).status_code == 200
        assert (await http.get("/b")).status_code == 200
        assert (await http.get("/a")).status_code == 429
        assert (await http.post("/a")).status_code == 200


async def test_no_rules_no_guard(make: Make) -> None:
    assert guard_of(make({})) is None
    assert (
        guard_of(make({"rate_limits": {"enabled": False, "rules": [{"name": "x", "limit": "1/s"}]}})) is None
    )
    assert guard_of(make(DEMO_RULES)) is not None


async def test_sqlite_top_level_store_keeps_limits_in_memory(tmp_path: Any) -> None:
    bastion = make_plain({**DEMO_RULES, "store": f"sqlite:///{tmp_path}/b.db"})
    guard = guard_of(bastion)
    assert guard is not None
    assert isinstance(guard.store, MemoryStore)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"store": "sqlite:///x.db"}, "cannot hold rate limits"),
        ({"store": "postgresql://h/db"}, "cannot hold rate limits"),
        ({"rules": [{"name": "a", "limit": "5/minute", "burst": 2, "cost": 3}]}, "exceeds the capacity"),
        ({"rules": [{"name": "a", "limit": "5/minute", "burst": 2, "algorithm": "fixed_window"}]}, "burst"),
        ({"rules": [{"name": "a", "limit": "5/minute", "match": "login"}]}, "is not a match"),
        ({"rules": [{"name": "a", "limit": "5/minute", "key": "user"}]}, "is not a key"),
        ({"rules": [{"name": "a", "limit": "5/minute"}, {"name": "a", "limit": "1/s"}]}, "unique"),
        ({"rules": [{"name": 'bad"name', "limit": "5/minute"}]}, "printable"),
        ({"rules": [{"name": "a", "limit": "5 a minute"}]}, "not a rate"),
    ],
)
def test_bad_configuration_names_the_problem(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        make_plain({"rate_limits": section})


# --- exactness ------------------------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["gcra", "fixed_window", "sliding_window", "sliding_log"])
async def test_exactly_n_of_3n_concurrent_requests(algorithm: str, make: Make) -> None:
    n = 20
    bastion = make(
        {
            "rate_limits": {
                "rules": [{"name": "n", "limit": f"{n}/minute", "algorithm": algorithm}],
            }
        }
    )
    async with client(bastion) as http:
        responses = await asyncio.gather(
            *(http.get("/", headers={"X-API-Key": "same"}) for _ in range(3 * n))
        )
    assert metric(bastion, "bastion_store_errors_total", store="redis", operation="decide") == 0
    assert sum(r.status_code == 200 for r in responses) == n
    assert sum(r.status_code == 429 for r in responses) == 2 * n


async def test_memory_store_forgets_idle_keys() -> None:
    from bastion.ratelimit.algorithms import Limit
    from bastion.ratelimit.stores import Check

    now = [0]
    store = MemoryStore(lambda: now[0])
    limit = Limit.build("fixed_window", 100, 1_000_000)
    hot = Check("hot", limit, 1, False)
    for i in range(1000):
        store.decide_now([Check(f"old-{i}", limit, 1, False)], "r")
    assert len(store) == 1000
    now[0] = 5_000_000
    for i in range(1000):
        now[0] += 10
        store.decide_now([Check(f"new-{i}", limit, 1, False)], "r")
        if i % 100 == 0:
            store.decide_now([hot], "r")
    # The lapsed keys made room for the new ones; the table did not double.
    assert 1000 <= len(store) <= 1100
    # A key in use is never swept: its count survives.
    assert store.decide_now([hot], "r").verdicts[0].remaining == 100 - 11


async def test_forged_forwarded_for_does_not_escape_an_ip_limit(make: Make) -> None:
    rule = {"name": "per-ip", "key": "ip", "limit": "2/minute", "algorithm": "fixed_window"}
    # The test client connects from 127.0.0.1, which is not a trusted proxy here.
    bastion = make({"rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        statuses = [
            (await http.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(4)
        ]
    assert statuses == [200, 200, 429, 429]


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(make: Make) -> None:
    rule = {"name": "per-ip", "key": "ip", "limit": "2/minute", "algorithm": "fixed_window"}
    bastion = make({"clients": {"trusted_proxies": ["127.0.0.1/32"]}, "rate_limits": {"rules": [rule]}})
    async with client(bastion) as http:
        spread = [
            (await http.get("/", headers={"X-Forwarded-For": f"198.51.100.{i}"})).status_code
            for i in range(4)
        ]
        same = [
            (await http.get("/", headers={"X-Forwarded-For": "203.0.113.5"})).status_code for _ in range(3)
        ]
    assert spread == [200, 200, 200, 200]
    assert same == [200, 200, 429]


async def test_a_store_that_never_answers_is_bounded_and_broken_by_the_shared_store_policy() -> None:
    # The guard's timeout, breaker and Retry-After are the StorePolicy's (the same object
    # the idempotency guard uses), not a copy of their arithmetic.
    import time

    from bastion.problems import DependencyUnavailable
    from bastion.stores import CircuitBreaker, StorePolicy

    from .helpers import ok_app

    class Frozen:
        name = "frozen"
        sync = False
        calls = 0

        async def decide(self, checks: Any, request_id: str) -> Any:
            Frozen.calls += 1
            await asyncio.sleep(3600)

    from bastion.config.ratelimit import RuleConfig
    from bastion.ratelimit.rules import compile_rule

    rule = compile_rule(RuleConfig(name="g", key="global", limit="5/minute"))  # type: ignore[arg-type]
    breaker = CircuitBreaker(2, 30.0)
    policy = StorePolicy(timeout_s=0.05, fail_closed=True, breaker=breaker)
    guard = RateLimitGuard(ok_app, [rule], Frozen(), policy=policy)  # type: ignore[arg-type]
    assert guard.policy is policy
    guard.policy.outer_timeout_s = 0.05
    answers = []
    for _ in range(3):
        started = time.monotonic()
        try:
            await guard(_scope(), _receive, _send)
        except DependencyUnavailable as exc:
            answers.append(exc.headers["Retry-After"])
        assert time.monotonic() - started < 1.0
    assert Frozen.calls == 2  # the third request is answered by the open breaker
    # Before the breaker opens, at least 1 s; once open, until its next probe.
    assert answers == ["1", guard.policy.retry_after(), guard.policy.retry_after()]
    assert int(answers[1]) >= 29


def _scope() -> dict[str, Any]:
    from bastion.asgi import SCOPE_KEY, RequestContext

    ctx = RequestContext("t" * 32, "s" * 16, "r", route="/", client_id="c1")
    return {"type": "http", "method": "GET", "path": "/", "headers": [], SCOPE_KEY: ctx}


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b""}


async def _send(message: Any) -> None:
    pass
