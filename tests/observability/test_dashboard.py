"""The dashboard's endpoints over HTTP: access rules, assets, and the JSON it polls."""

from __future__ import annotations

import io
from typing import Any

import httpx
import pytest

from bastion.config import ConfigError, load_config
from tests.observability.apps import make_app

TOKEN = "s3cret-token-0123456789"
ON = {"observability": {"dashboard": {"enabled": True}}}


def client(app: Any, host: str = "127.0.0.1") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(host, 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_off_by_default() -> None:
    app = make_app(log_stream=io.BytesIO())
    async with client(app) as http:
        assert (await http.get("/_bastion/dashboard")).status_code == 404
        assert (await http.get("/_bastion/dashboard/data")).status_code == 404


async def test_page_and_assets_are_served_from_the_package() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        page = await http.get("/_bastion/dashboard")
        script = await http.get("/_bastion/dashboard/dashboard.js")
        style = await http.get("/_bastion/dashboard/dashboard.css")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert 'src="/_bastion/dashboard/dashboard.js"' in page.text
    assert 'data-refresh-ms="2000"' in page.text
    # Nothing is loaded from anywhere else: it must work offline.
    for response in (page, script, style):
        assert "http://" not in response.text.replace("http://www.w3.org/2000/svg", "")
        assert "https://" not in response.text
    assert script.headers["content-type"].startswith("text/javascript")
    assert style.headers["content-type"].startswith("text/css")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    # Small: the whole dashboard stays well under 40 kB.
    assert len(page.content) + len(script.content) + len(style.content) < 40_000


async def test_remote_clients_are_refused_by_default_as_if_it_did_not_exist() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app, host="203.0.113.9") as http:
        for path in ("/_bastion/dashboard", "/_bastion/dashboard/data", "/_bastion/dashboard/dashboard.js"):
            response = await http.get(path)
            assert response.status_code == 404
            assert response.json()["code"] == "NOT_FOUND"


async def test_a_loopback_peer_forwarding_for_someone_else_is_refused() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.get("/_bastion/dashboard/data", headers={"x-forwarded-for": "198.51.100.7"})
        assert response.status_code == 404
        assert (await http.get("/_bastion/dashboard/data")).status_code == 200


async def test_ipv6_loopback_is_local() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app, host="::1") as http:
        assert (await http.get("/_bastion/dashboard/data")).status_code == 200


async def test_token_is_required_when_configured() -> None:
    config = {"observability": {"dashboard": {"enabled": True, "token": TOKEN, "allow_remote": True}}}
    app = make_app(config, log_stream=io.BytesIO())
    async with client(app, host="203.0.113.9") as http:
        missing = await http.get("/_bastion/dashboard/data")
        assert missing.status_code == 401
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = await http.get(
            "/_bastion/dashboard/data", headers={"authorization": "Bearer nope-nope-nope-nope"}
        )
        assert wrong.status_code == 401
        ok = await http.get("/_bastion/dashboard/data", headers={"authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert (await http.get("/_bastion/dashboard", params={"token": TOKEN})).status_code == 200
        assert (await http.get("/_bastion/dashboard")).status_code == 401
        # The assets are public package files: no token needed, nothing to leak.
        assert (await http.get("/_bastion/dashboard/dashboard.js")).status_code == 200


def test_allow_remote_without_a_token_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError, match="allow_remote needs a token"):
        load_config({"observability": {"dashboard": {"enabled": True, "allow_remote": True}}}, env={})


async def test_only_get_and_head() -> None:
    app = make_app(ON, log_stream=io.BytesIO())
    async with client(app) as http:
        response = await http.post("/_bastion/dashboard/data")
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
        head = await http.head("/_bastion/dashboard/data")
        assert head.status_code == 200 and head.content == b""
        assert (await http.get("/_bastion/dashboard/nothing-here")).status_code == 404


async def test_custom_path() -> None:
    app = make_app(
        {"observability": {"dashboard": {"enabled": True, "path": "/ops/board"}}}, log_stream=io.BytesIO()
    )
    async with client(app) as http:
        page = await http.get("/ops/board")
        assert page.status_code == 200
        assert 'src="/ops/board/dashboard.js"' in page.text
        assert (await http.get("/ops/board/data")).status_code == 200
        assert (await http.get("/_bastion/dashboard")).status_code == 404


async def test_data_reflects_traffic_and_every_guard_counter() -> None:
    app = make_app({**ON, "errors": {"framework_adapters": False}}, log_stream=io.BytesIO())
    async with client(app) as http:
        before = (await http.get("/_bastion/dashboard/data")).json()
        for i in range(5):
            await http.get(f"/items/{i}")
        for _ in range(3):
            await http.get("/limited")
        await http.get("/boom")
        await http.get("/missing")
        await http.post("/invalid", json={})
        await http.post("/guards/idempotency", params={"event": "replayed"})
        await http.post("/guards/idempotency", params={"event": "replayed"})
        await http.post("/guards/idempotency", params={"event": "mismatch"})
        await http.post("/guards/validation", params={"operation": "createOrder", "code": "INVALID_FORMAT"})
        await http.post("/guards/ratelimit", params={"rule": "per-client", "outcome": "limited"})
        await http.post("/guards/upstream", params={"kind": "timeout"})
        await http.post("/guards/store", params={"store": "redis", "operation": "claim"})
        await http.get("/metrics")
        data = (await http.get("/_bastion/dashboard/data")).json()

    assert before["requests"]["total"] == 0
    requests = data["requests"]
    # The dashboard's own polls and the /metrics scrape are not traffic.
    assert requests["total"] == 5 + 3 + 1 + 1 + 1 + 7
    assert requests["2xx"] == 5 + 7
    assert requests["4xx"] == 3 + 1 + 1
    assert requests["5xx"] == 1
    assert requests["429"] == 3
    # The idempotency guard registers its events too (with zeros until they happen).
    assert data["idempotency"]["replayed"] == 2
    assert data["idempotency"]["mismatch"] == 1
    assert data["validation"] == [{"operation": "createOrder", "code": "INVALID_FORMAT", "count": 1.0}]
    assert {"operation": "/invalid", "field": "/email", "count": 1.0} in data["validation_fields"]
    assert data["rate_limits"] == [{"rule": "per-client", "outcome": "limited", "count": 1.0}]
    assert data["upstream_errors"] == {"timeout": 1.0}
    assert data["store_errors"]["redis/claim"] == 1
    assert data["problems"]["INTERNAL_ERROR"] == 1
    assert data["problems"]["VALIDATION_FAILED"] == 1
    routes = {(r["method"], r["route"]): r for r in data["routes"]}
    assert routes[("GET", "/items/{item_id}")]["count"] == 5
    assert routes[("GET", "/limited")]["4xx"] == 3
    assert data["refresh_ms"] == 2000
    assert data["time"] > before["time"]
