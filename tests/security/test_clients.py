"""Hostile input, identity: an invented API key never buys a fresh rate limit budget.

Without ``clients.keys`` any key is believed, and each key-named client is also
counted per IP; with a key list, an unknown key is anonymous (its IP) or refused.
Either way 40 requests with 40 invented keys from one address get no more than
the 20 a per-client rule with a burst of 20 gives that address.
"""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import orjson
import pytest

from bastion import Bastion
from bastion.clients import key_digest
from tests.conftest import REDIS_URL, require_service
from tests.ratelimit.helpers import ok_app, parse_headers

PER_CLIENT = {
    "name": "per-client",
    "key": "client",
    "limit": "100/minute",
    "burst": 20,
    "tiers": {"paid": "1000/minute"},
}
KNOWN = [
    {"sha256": key_digest(b"acme-secret-key"), "name": "acme", "tier": "paid"},
    {"sha256": key_digest(b"small-secret-key"), "name": "small"},
]
Build = Callable[..., tuple[Bastion, io.BytesIO]]


@pytest.fixture(params=["memory", "redis"])
async def build(request: pytest.FixtureRequest) -> AsyncIterator[Build]:
    """Bastions on the rate limit store under test, with their log stream; closed at the end."""
    store = "memory://"
    if request.param == "redis":
        require_service("redis", REDIS_URL, 6379)
        store = REDIS_URL
    built: list[Bastion] = []

    def factory(
        clients: dict[str, Any], rules: list[dict[str, Any]] | None = None
    ) -> tuple[Bastion, io.BytesIO]:
        logs = io.BytesIO()
        section = {
            "store": store,
            "key_prefix": "bastion-test-" + uuid.uuid4().hex,
            "rules": rules or [PER_CLIENT],
        }
        config = {"store": "memory://", "clients": clients, "rate_limits": section}
        bastion = Bastion(ok_app, config, env={}, log_stream=logs)
        built.append(bastion)
        return bastion, logs

    yield factory
    for bastion in built:
        await bastion.shutdown()


def client(bastion: Bastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=bastion), base_url="http://test")


async def invented_keys(bastion: Bastion, n: int = 40, path: str = "/orders") -> list[int]:
    async with client(bastion) as http:
        return [(await http.get(path, headers={"X-API-Key": f"invented-{i}"})).status_code for i in range(n)]


async def test_invented_keys_share_the_ip_budget_without_a_key_list(build: Build) -> None:
    bastion, _ = build({})
    statuses = await invented_keys(bastion)
    assert statuses.count(200) == 20
    assert statuses[20:] == [429] * 20


async def test_invented_keys_share_the_ip_budget_with_requests_without_a_key(build: Build) -> None:
    # Alternating key-less requests and invented keys: one budget for the address, not two.
    bastion, _ = build({})
    async with client(bastion) as http:
        statuses = []
        for i in range(20):
            statuses.append((await http.get("/orders")).status_code)
            statuses.append((await http.get("/orders", headers={"X-API-Key": f"invented-{i}"})).status_code)
    assert statuses.count(200) == 20


async def test_a_multi_part_client_key_is_bounded_per_ip_too(build: Build) -> None:
    rule = {"name": "per-route", "key": ["client", "route"], "limit": "100/minute", "burst": 20}
    bastion, _ = build({}, [rule])
    assert (await invented_keys(bastion)).count(200) == 20


async def test_a_key_used_from_several_addresses_keeps_its_own_budget(build: Build) -> None:
    # Without a key list a key is still a client: it cannot spread over addresses either.
    bastion, _ = build({})
    statuses = []
    for i in range(40):
        transport = httpx.ASGITransport(app=bastion, client=(f"198.51.100.{i}", 4000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            statuses.append((await http.get("/orders", headers={"X-API-Key": "one-key"})).status_code)
    assert statuses.count(200) == 20


async def test_invented_keys_are_anonymous_with_a_key_list(build: Build) -> None:
    bastion, _ = build({"keys": KNOWN})
    statuses = await invented_keys(bastion)
    assert statuses.count(200) == 20
    assert statuses[20:] == [429] * 20


async def test_a_known_key_gets_its_own_budget_and_its_tiers_limit(build: Build) -> None:
    bastion, _ = build({"keys": KNOWN})
    await invented_keys(bastion)  # the address's own budget is spent
    async with client(bastion) as http:
        small = [
            (await http.get("/orders", headers={"X-API-Key": "small-secret-key"})).status_code
            for _ in range(25)
        ]
        acme = [
            (await http.get("/orders", headers={"X-API-Key": "acme-secret-key"})).status_code
            for _ in range(25)
        ]
        last = await http.get("/orders", headers={"X-API-Key": "acme-secret-key"})
    assert small == [200] * 20 + [429] * 5
    assert acme == [200] * 25
    # paid: 1000/minute, the burst of 20 scaled with it to 200.
    assert last.headers["ratelimit-policy"] == '"per-client";q=200;w=12'


async def test_reject_mode_answers_401_without_echoing_the_key(build: Build) -> None:
    bastion, logs = build({"keys": KNOWN, "unknown_keys": "reject"})
    async with client(bastion) as http:
        refused = await http.get("/orders", headers={"X-API-Key": "invented-key-123"})
        known = await http.get("/orders", headers={"X-API-Key": "acme-secret-key"})
        keyless = await http.get("/orders")
    assert refused.status_code == 401
    assert refused.headers["content-type"] == "application/problem+json"
    assert orjson.loads(refused.content)["code"] == "API_KEY_INVALID"
    assert "invented-key-123" not in refused.text
    assert key_digest(b"invented-key-123") not in refused.text
    assert "invented-key-123" not in str(refused.headers)
    assert "invented-key-123" not in logs.getvalue().decode()
    assert known.status_code == 200
    assert keyless.status_code == 200


async def test_reject_mode_refuses_invented_keys_every_time(build: Build) -> None:
    bastion, _ = build({"keys": KNOWN, "unknown_keys": "reject"})
    statuses = await invented_keys(bastion)
    assert statuses == [401] * 40


@pytest.mark.parametrize("clients", [{}, {"keys": KNOWN}])
async def test_raw_keys_never_reach_logs_or_metrics(build: Build, clients: dict[str, Any]) -> None:
    shadow = {"name": "watch", "key": "client", "limit": "1/minute", "mode": "shadow"}
    bastion, logs = build(clients, [PER_CLIENT, shadow])
    secrets = ["acme-secret-key", "small-secret-key", "invented-secret-1"]
    async with client(bastion) as http:
        for secret in secrets:
            for _ in range(25):
                await http.get("/orders", headers={"X-API-Key": secret})
        exposition = (await http.get("/metrics")).text
    text = logs.getvalue().decode()
    lines = [orjson.loads(line) for line in text.splitlines()]
    # The log did record the shadow limit and the 429s, by client id.
    assert any(line.get("event") == "rate limit exceeded in shadow mode" for line in lines)
    assert any(line.get("status") == 429 for line in lines)
    for secret in secrets:
        assert secret not in text
        assert secret not in exposition


async def test_the_per_ip_companion_shows_in_the_headers_of_key_named_clients_only(build: Build) -> None:
    bastion, _ = build({})
    async with client(bastion) as http:
        keyed = await http.get("/orders", headers={"X-API-Key": "some-key"})
        keyless = await http.get("/orders")
    assert keyed.headers["ratelimit-policy"] == '"per-client";q=20;w=12, "per-client@ip";q=20;w=12'
    assert remaining(keyed) == {"per-client": 19, "per-client@ip": 19}
    # The key-less request counted on the address's key, after the keyed one.
    assert keyless.headers["ratelimit-policy"] == '"per-client";q=20;w=12'
    assert remaining(keyless) == {"per-client": 18}


def remaining(response: httpx.Response) -> dict[str, int]:
    """Each rule's quota left, from the ``RateLimit`` header."""
    return {name: params["r"] for name, params in parse_headers(response)["limit"].items()}
