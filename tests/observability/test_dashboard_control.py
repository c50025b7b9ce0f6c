"""The dashboard's rules, suggestions and controls: a change made on the page goes through the admin API."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.observability.apps import make_app
from tests.observability.servers import serve
from tests.observability.test_browser import browser, table_rows, text_of, wait_for

__all__ = ["browser"]

TOKEN = "d" * 48
DATA = "/_bastion/dashboard/data"
RULES = "/_bastion/dashboard/admin/v1/rules/"


def settings(tmp_path: Path, *, tokens: bool = True) -> dict[str, Any]:
    """The dashboard on, one rule on ``/limited``, and an admin store (with tokens or without)."""
    admin: dict[str, Any] = {"store": f"sqlite:///{tmp_path}/admin.db"}
    if tokens:
        (tmp_path / "tokens").write_text(f"operator {TOKEN}\n")
        admin["token_file"] = str(tmp_path / "tokens")
    return {
        "observability": {"dashboard": {"enabled": True}},
        "errors": {"framework_adapters": False},
        "rate_limits": {
            "rules": [{"name": "limited", "limit": "100/minute", "match": "GET /items/{item_id}"}]
        },
        "admin": admin,
    }


def client(app: Any) -> httpx.AsyncClient:
    """An in-process client (the first request starts the instance)."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_the_data_has_the_rules_and_the_suggested_limits(tmp_path: Path) -> None:
    app = make_app(settings(tmp_path))
    async with client(app) as http:
        for _ in range(30):
            await http.get("/items/1")
        data = (await http.get(DATA)).json()
    assert data["controls"] is True
    assert data["rules"] == [
        {
            "name": "limited",
            "mode": "enforce",
            "enforce_percent": None,
            "algorithm": "gcra",
            "limit": "100/minute",
            "tiers": {},
            "layer": "file",
        }
    ]
    (suggestion,) = data["suggestions"]
    assert suggestion["rule"] == "limited" and suggestion["clients"] == 1
    assert suggestion["max"] >= 30 and suggestion["suggested_limit"] >= 30
    await app.shutdown()


async def test_a_change_from_the_page_goes_through_the_admin_api(tmp_path: Path) -> None:
    app = make_app(settings(tmp_path))
    async with client(app) as http:
        refused = await http.patch(RULES + "limited", json={"limit": "2/minute"})
        assert refused.status_code == 401
        wrong = await http.patch(RULES + "limited", json={"limits": "2/minute"}, headers=_auth())
        assert wrong.status_code == 422 and wrong.json()["code"] == "VALIDATION_FAILED"
        changed = await http.patch(RULES + "limited", json={"limit": "2/minute"}, headers=_auth())
        assert changed.status_code == 200, changed.text
        assert changed.json()["change"]["actor"] == "operator"
        assert [(await http.get("/items/1")).status_code for _ in range(3)] == [200, 200, 429]
        rule = (await http.get(DATA)).json()["rules"][0]
        assert (rule["limit"], rule["layer"]) == ("2/minute", "admin")
        # Only loopback peers reach the dashboard; the controls are no exception.
        hidden = await http.patch(
            RULES + "limited",
            json={"limit": "9/minute"},
            headers={**_auth(), "X-Forwarded-For": "203.0.113.9"},
        )
        assert hidden.status_code == 404
    await app.shutdown()


async def test_no_controls_without_admin_tokens(tmp_path: Path) -> None:
    app = make_app(settings(tmp_path, tokens=False))
    async with client(app) as http:
        assert (await http.get(DATA)).json()["controls"] is False
        refused = await http.patch(RULES + "limited", json={"limit": "2/minute"}, headers=_auth())
        assert refused.status_code == 403
        assert "admin.token_file" in refused.json()["detail"]
    await app.shutdown()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def control_server(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "tokens").write_text(f"operator {TOKEN}\n")
    env = {
        "BASTION_OBSERVABILITY__DASHBOARD__ENABLED": "true",
        "BASTION_OBSERVABILITY__DASHBOARD__REFRESH": "1s",
        "BASTION_ERRORS__FRAMEWORK_ADAPTERS": "false",
        "BASTION_RATE_LIMITS__RULES": '[{name: limited, limit: 100/minute, match: "GET /items/{item_id}"}]',
        "BASTION_ADMIN__STORE": f"sqlite:///{tmp_path}/admin.db",
        "BASTION_ADMIN__TOKEN_FILE": str(tmp_path / "tokens"),
    }
    with serve(env, tmp_path / "server.log") as base:
        yield base


@pytest.mark.e2e
def test_an_operator_changes_a_limit_on_the_page(browser: Any, control_server: str) -> None:
    for _ in range(5):
        httpx.get(control_server + "/items/1", timeout=5)
    browser.get(control_server + "/_bastion/dashboard")
    wait_for(
        lambda: table_rows(browser, "table-rules") and table_rows(browser, "table-rules")[0][0] == "limited",
        20,
        "the rules table",
    )
    wait_for(
        lambda: browser.execute_script("return !document.getElementById('controls').hidden"), 20, "controls"
    )
    browser.execute_script(
        "document.getElementById('control-field').value = 'limit';"
        "document.getElementById('control-value').value = '3/minute';"
        "document.getElementById('control-token').value = arguments[0];"
        "document.querySelector('#control-form button').click();",
        TOKEN,
    )
    wait_for(lambda: "now 3/minute" in text_of(browser, "control-result"), 20, "the change's confirmation")
    wait_for(
        lambda: table_rows(browser, "table-rules")[0][3:6:2] == ["3/minute", "admin"],
        20,
        "the new limit shown",
    )
    started = time.monotonic()
    statuses = [httpx.get(control_server + "/items/1", timeout=5).status_code for _ in range(4)]
    assert 429 in statuses, statuses
    assert time.monotonic() - started < 20
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
