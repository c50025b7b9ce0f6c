"""Per-client limits: ``clients.keys[].limits`` replaces the tier's limit for the rules it names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bastion.clients import key_digest
from bastion.config import ConfigError, load_config
from bastion.config.ratelimit import RuleConfig
from bastion.ratelimit.plans import Plans
from bastion.ratelimit.rules import compile_rule
from bastion.units import Rate

from .conftest import Make
from .helpers import check_consistent, client

RULES = [
    {"name": "global", "key": "global", "limit": "1000/minute"},
    {"name": "per-client", "limit": "100/minute", "burst": 2, "tiers": {"paid": "500/minute"}},
]


def clients_config(keys: list[dict[str, Any]] | None = None, keys_file: str | None = None) -> dict[str, Any]:
    section: dict[str, Any] = {"identify": ["header:X-API-Key", "ip"]}
    if keys is not None:
        section["keys"] = keys
    if keys_file is not None:
        section["keys_file"] = keys_file
    return section


async def admitted(bastion: Any, key: str, tries: int = 12) -> tuple[int, Any]:
    """How many of ``tries`` quick requests with ``key`` pass, and the first response."""
    passed = 0
    first = None
    async with client(bastion) as http:
        for _ in range(tries):
            response = await http.get("/x", headers={"X-API-Key": key})
            first = first or response
            passed += response.status_code == 200
    return passed, first


async def test_a_client_with_its_own_limit_gets_it_and_the_others_keep_theirs(make: Make) -> None:
    keys = [
        {"sha256": key_digest(b"acme-key"), "name": "acme", "limits": {"per-client": "500/minute"}},
        {
            "sha256": key_digest(b"paid-key"),
            "name": "big",
            "tier": "paid",
            "limits": {"per-client": "50/minute"},
        },
        {"sha256": key_digest(b"plain-key"), "name": "plain"},
    ]
    bastion = make({"clients": clients_config(keys), "rate_limits": {"rules": RULES}})
    # The rule's burst is 2 per 100/minute: the client's 500/minute keeps the proportion (10).
    passed, first = await admitted(bastion, "acme-key")
    assert passed == 10
    headers = check_consistent(first)
    assert headers["policy"]["per-client"] == {"q": 10, "w": 2}
    assert headers["policy"]["global"] == {"q": 1000, "w": 60}
    # A client's own limit replaces its tier's too (paid: 500/minute, but this client: 50).
    passed, first = await admitted(bastion, "paid-key")
    assert passed == 1
    assert check_consistent(first)["policy"]["per-client"] == {"q": 1, "w": 2}
    # Clients without limits of their own keep the rule's.
    passed, first = await admitted(bastion, "plain-key")
    assert passed == 2
    assert check_consistent(first)["policy"]["per-client"] == {"q": 2, "w": 2}
    passed, _ = await admitted(bastion, "someone-else")
    assert passed == 2


async def test_keys_of_one_name_share_its_limit_with_a_keys_file(make: Make, tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text(f"{key_digest(b'rotated-key')} acme\n{key_digest(b'other-key')} other paid\n")
    keys = [{"sha256": key_digest(b"acme-key"), "name": "acme", "limits": {"per-client": "300/minute"}}]
    bastion = make({"clients": clients_config(keys, str(keys_file)), "rate_limits": {"rules": RULES}})
    # The file's key names the client acme, whose limit is 300/minute (burst 6), shared by both keys.
    passed, first = await admitted(bastion, "rotated-key", tries=4)
    assert passed == 4
    assert check_consistent(first)["policy"]["per-client"] == {"q": 6, "w": 2}
    passed, _ = await admitted(bastion, "acme-key", tries=4)
    assert passed == 2
    # A key of the file without limits keeps its tier's (paid: 500/minute, burst 10).
    passed, first = await admitted(bastion, "other-key")
    assert passed == 10
    assert check_consistent(first)["policy"]["per-client"] == {"q": 10, "w": 2}


async def test_each_client_is_refused_at_its_own_limit(make: Make) -> None:
    keys = [{"sha256": key_digest(b"acme-key"), "name": "acme", "limits": {"per-client": "200/minute"}}]
    bastion = make({"clients": clients_config(keys), "rate_limits": {"rules": RULES}})
    async with client(bastion) as http:
        statuses = [(await http.get("/x", headers={"X-API-Key": "acme-key"})).status_code for _ in range(6)]
        other = [(await http.get("/x", headers={"X-API-Key": "nobody"})).status_code for _ in range(3)]
    assert statuses == [200] * 4 + [429] * 2
    assert other == [200, 200, 429]


def test_a_limit_for_an_unknown_rule_is_refused_with_its_key_path() -> None:
    keys = [
        {"sha256": key_digest(b"a"), "name": "a"},
        {"sha256": key_digest(b"b"), "name": "b", "limits": {"per-client": "5/s", "per-clinet": "5/s"}},
    ]
    with pytest.raises(ConfigError) as caught:
        load_config({"clients": clients_config(keys), "rate_limits": {"rules": RULES}}, env={})
    ((path, reason),) = caught.value.problems
    assert path == "clients.keys.1.limits.per-clinet"
    assert "no rate limit rule is named 'per-clinet'" in reason


def test_a_limit_no_request_fits_is_refused() -> None:
    rules = [{"name": "heavy", "limit": "10/minute", "cost": 3}]
    keys = [{"sha256": key_digest(b"a"), "limits": {"heavy": "2/minute"}}]
    with pytest.raises(ConfigError) as caught:
        load_config({"clients": clients_config(keys), "rate_limits": {"rules": rules}}, env={})
    assert caught.value.problems == [
        ("clients.keys.0.limits.heavy", "cost 3 exceeds the capacity 2 of 2/minute")
    ]


def test_a_bad_rate_names_the_key() -> None:
    keys = [{"sha256": key_digest(b"a"), "limits": {"per-client": "lots"}}]
    with pytest.raises(ConfigError) as caught:
        load_config({"clients": clients_config(keys), "rate_limits": {"rules": RULES}}, env={})
    assert [path for path, _ in caught.value.problems] == ["clients.keys.0.limits.per-client"]


def test_only_plans_with_own_limits_leave_the_quick_lookup() -> None:
    own = {"key:acme": Rate(500, 60_000)}
    rules = [compile_rule(RuleConfig.model_validate(rule)) for rule in RULES]
    with_own = [
        compile_rule(RuleConfig.model_validate(RULES[0])),
        compile_rule(RuleConfig.model_validate(RULES[1]), clients=own),
    ]
    plain = Plans(rules, {}, headers="both", unverified_keys=False).plan("GET", "/x", None)
    mixed = Plans(with_own, {}, headers="both", unverified_keys=False).plan("GET", "/x", None)
    # The usual plan: a tier, made once, found by the guard's one dictionary lookup.
    assert plain.tier("free", "key:acme") is plain.tiers["free"]
    # A plan with a client's own limit: each request asks tier(), which tells the client apart.
    acme, other = mixed.tier("free", "key:acme"), mixed.tier("free", "key:other")
    assert mixed.tiers == {}
    assert acme is mixed.tier("free", "key:acme") and other is mixed.tier("free", "ip:10.0.0.1")
    assert [part[2].limit for part in acme.parts] == [1000, 500]
    assert [part[2].limit for part in other.parts] == [1000, 100]
    assert mixed.tier("paid", "key:acme").parts[1][2].limit == 500
    assert mixed.tier("paid", "key:other").parts[1][2].limit == 500
