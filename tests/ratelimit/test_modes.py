"""Shadow mode and enforce_percent for rate limit rules, on each store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from bastion import ConfigError
from bastion.asgi import Receive, Scope, Send
from bastion.enforcement import client_bucket

from .conftest import Make
from .helpers import client, metric
from .helpers import make as make_plain


async def headers_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers 200 with the request headers it received, as a JSON list of pairs."""
    pairs = [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]]
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": orjson.dumps(pairs)})


def would_refuse(body: bytes) -> list[str]:
    """Every ``bastion-would-refuse`` value the application saw."""
    return [v for k, v in orjson.loads(body) if k == "bastion-would-refuse"]


def one_rule(**settings: Any) -> dict[str, Any]:
    return {"rate_limits": {"rules": [{"name": "tight", "key": "client", "limit": "1/minute", **settings}]}}


async def test_shadow_never_refuses_and_tells_the_application(make: Make) -> None:
    bastion = make(one_rule(mode="shadow"), headers_app)
    async with client(bastion) as http:
        responses = [await http.get("/x") for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert would_refuse(responses[0].content) == []
    assert [would_refuse(r.content) for r in responses[1:]] == [["RATE_LIMITED"]] * 3
    assert metric(bastion, "bastion_rate_limit_decisions_total", rule="tight", outcome="shadow_limited") == 3
    assert metric(bastion, "bastion_shadow_refusals_total", guard="rate_limit", code="RATE_LIMITED") == 3


async def test_enforce_sends_no_header_upstream_and_counts_no_shadow_refusal(make: Make) -> None:
    bastion = make(one_rule(), headers_app)
    async with client(bastion) as http:
        first = await http.get("/x")
        second = await http.get("/x")
    assert would_refuse(first.content) == []
    assert second.status_code == 429
    assert metric(bastion, "bastion_shadow_refusals_total", guard="rate_limit", code="RATE_LIMITED") == 0


@pytest.mark.parametrize("settings", [{"mode": "shadow"}, {}])
async def test_a_client_sent_would_refuse_header_is_removed(make: Make, settings: dict[str, Any]) -> None:
    config = one_rule(**settings, limit="100/minute")
    config["rate_limits"]["rules"].append(
        {"name": "watch", "match": "GET /x", "limit": "1/minute", "mode": "shadow"}
    )
    bastion = make(config, headers_app)
    async with client(bastion) as http:
        forged = {"Bastion-Would-Refuse": "VALIDATION_FAILED"}
        first = await http.get("/x", headers=forged)
        second = await http.get("/x", headers=forged)
        elsewhere = await http.get("/other", headers=forged)
    assert would_refuse(first.content) == []
    assert would_refuse(second.content) == ["RATE_LIMITED"]
    # A route no watching rule matches: the forged header is removed all the same.
    assert would_refuse(elsewhere.content) == []


def clients_in(percent: int, count: int) -> tuple[list[str], list[str]]:
    """IPs of ``count`` clients, split into those enforced at ``percent`` and the others."""
    enforced: list[str] = []
    watched: list[str] = []
    for i in range(count):
        ip = f"10.{i // 65536}.{i // 256 % 256}.{i % 256}"
        (enforced if client_bucket("ip:" + ip) < percent else watched).append(ip)
    return enforced, watched


def test_buckets_are_stable_and_spread_evenly() -> None:
    assert client_bucket("ip:10.0.0.1") == client_bucket("ip:10.0.0.1")
    enforced, watched = clients_in(30, 20_000)
    assert 0.28 < len(enforced) / 20_000 < 0.32
    counts = [0] * 100
    for i in range(20_000):
        counts[client_bucket(f"key:{i}")] += 1
    assert min(counts) > 140 and max(counts) < 260


async def test_enforce_percent_refuses_a_stable_share_of_clients(make: Make) -> None:
    config = {**one_rule(enforce_percent=25, key="ip"), "clients": {"trusted_proxies": ["127.0.0.1/32"]}}
    bastion = make(config, headers_app)
    enforced, watched = clients_in(25, 200)
    assert 30 < len(enforced) < 70
    async with client(bastion) as http:

        async def second_status(ip: str) -> tuple[int, list[str]]:
            headers = {"X-Forwarded-For": ip}
            await http.get("/x", headers=headers)
            response = await http.get("/x", headers=headers)
            return response.status_code, (
                would_refuse(response.content) if response.status_code == 200 else []
            )

        for ip in enforced[:10]:
            assert await second_status(ip) == (429, [])
        for ip in watched[:10]:
            assert await second_status(ip) == (200, ["RATE_LIMITED"])
        # The same clients again: the same answers.
        for ip in enforced[:3]:
            assert (await http.get("/x", headers={"X-Forwarded-For": ip})).status_code == 429
        for ip in watched[:3]:
            assert (await http.get("/x", headers={"X-Forwarded-For": ip})).status_code == 200
    limited = metric(bastion, "bastion_rate_limit_decisions_total", rule="tight", outcome="limited")
    shadow = metric(bastion, "bastion_rate_limit_decisions_total", rule="tight", outcome="shadow_limited")
    assert (limited, shadow) == (13, 13)
    assert metric(bastion, "bastion_shadow_refusals_total", guard="rate_limit", code="RATE_LIMITED") == 13


@pytest.mark.parametrize(("percent", "status"), [(0, 200), (100, 429)])
async def test_enforce_percent_bounds(make: Make, percent: int, status: int) -> None:
    bastion = make(one_rule(enforce_percent=percent))
    async with client(bastion) as http:
        await http.get("/x")
        assert (await http.get("/x")).status_code == status


def described(tmp_path: Path, rule: dict[str, Any]) -> str:
    """The path of a description whose one operation, ``GET /x``, declares ``rule``."""
    spec = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/x": {"get": {"x-bastion-rate-limit": rule, "responses": {"200": {"description": "ok"}}}}},
    }
    path = tmp_path / "openapi.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


async def test_operation_rule_takes_the_same_keys(make: Make, tmp_path: Path) -> None:
    openapi = described(tmp_path, {"limit": "1/minute", "mode": "shadow"})
    bastion = make({"openapi": openapi, "validation": {"enabled": False}}, headers_app)
    async with client(bastion) as http:
        await http.get("/x")
        second = await http.get("/x")
    assert second.status_code == 200
    assert would_refuse(second.content) == ["RATE_LIMITED"]


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"enforce_percent": 101}, "enforce_percent"),
        ({"enforce_percent": -1}, "enforce_percent"),
        ({"enforce_percent": "half"}, "enforce_percent"),
        ({"mode": "shadow", "enforce_percent": 50}, "enforce_percent"),
    ],
)
def test_bad_enforce_percent_is_a_config_error_naming_the_key(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        make_plain(one_rule(**settings))


def test_bad_operation_enforce_percent_names_the_key(tmp_path: Path) -> None:
    openapi = described(tmp_path, {"limit": "1/minute", "enforce_percent": 200})
    with pytest.raises(ConfigError, match=r"x-bastion-rate-limit.*enforce_percent"):
        make_plain({"openapi": openapi})
