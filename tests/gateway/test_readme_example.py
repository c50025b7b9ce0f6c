"""The "Put bastion in front of an existing API" walk-through, run as a new user would.

The ``bastion.yaml`` shown in docs/gateway.md must be the file in examples/express/,
and that file, unchanged, must put every guard in front of the Express example.
Only the ports differ: the test passes free ones with ``--upstream`` and ``--port``.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import free_port
from tests.gateway.conftest import ROOT, Server, clean_env, start_express, start_server

pytestmark = pytest.mark.e2e

EXAMPLE = ROOT / "examples" / "express"
DOC = ROOT / "docs" / "gateway.md"
SECTION = "## Put bastion in front of an existing API"


def documented_config() -> str:
    text = DOC.read_text()
    section = text[text.index(SECTION) :]
    start = section.index("```yaml\n") + len("```yaml\n")
    end = section.index("```", start)
    lines = section[start:end]
    # The block sits inside a numbered list item: drop the list's indentation.
    return textwrap.dedent(lines.rstrip(" "))


def test_the_documented_file_is_the_example_file() -> None:
    assert documented_config() == (EXAMPLE / "bastion.yaml").read_text()


@pytest.fixture(scope="module")
def walkthrough(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    workdir = tmp_path_factory.mktemp("readme")
    api = start_express(workdir, EXAMPLE / "app.js")
    for name in ("bastion.yaml", "openapi.yaml"):
        shutil.copy(EXAMPLE / name, workdir / name)
    port = free_port()
    args = [sys.executable, "-m", "bastion", "gateway", "--config", str(workdir / "bastion.yaml")]
    args += ["--upstream", api.base, "--port", str(port)]
    gateway = start_server(
        args, port, workdir, ready_path="/_bastion/health", env=clean_env(), name="gateway"
    )
    yield gateway, api
    gateway.stop()
    api.stop()


def order(base: str, key: str, body: dict[str, object], api_key: str = "readme") -> httpx.Response:
    return httpx.post(
        base + "/orders", json=body, headers={"Idempotency-Key": key, "X-API-Key": api_key}, timeout=10
    )


def test_idempotency_one_order_one_charge(walkthrough: tuple[Server, Server]) -> None:
    gateway, api = walkthrough
    first = order(gateway.base, "order-1", {"item": "book", "quantity": 1})
    second = order(gateway.base, "order-1", {"item": "book", "quantity": 1})
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json()
    assert second.headers["idempotent-replayed"] == "true"
    assert httpx.get(api.base + "/orders", timeout=5).json()["charges"] == 1


def test_validation_every_field_and_the_api_never_sees_it(walkthrough: tuple[Server, Server]) -> None:
    gateway, api = walkthrough
    before = httpx.get(api.base + "/orders", timeout=5).json()["charges"]
    response = order(gateway.base, "order-2", {"item": "", "quantity": 0, "coupon": "FREE"})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "VALIDATION_FAILED"
    assert len(body["errors"]) == 3
    assert "FREE" not in response.text
    assert httpx.get(api.base + "/orders", timeout=5).json()["charges"] == before


def test_errors_become_problems_with_the_trace_id(walkthrough: tuple[Server, Server]) -> None:
    gateway, _ = walkthrough
    crash = httpx.get(gateway.base + "/reports/daily", timeout=10)
    assert crash.status_code == 500
    body = crash.json()
    assert body["type"] == "https://docs.example.com/errors/internal-error"
    assert body["trace_id"] == crash.headers["x-request-id"]
    assert "s3cret" not in crash.text and "ECONNREFUSED" not in crash.text
    missing = httpx.get(gateway.base + "/orders/999", timeout=10)
    assert missing.status_code == 404 and missing.json()["code"] == "NOT_FOUND"
    assert "Cannot GET" not in missing.text
    unknown = httpx.get(gateway.base + "/no/such/route", timeout=10)
    assert unknown.status_code == 404 and unknown.json()["code"] == "NOT_FOUND"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if any(r.get("trace_id") == body["trace_id"] and "s3cret" in str(r) for r in gateway.log_lines()):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the original error page is not in the gateway's log under the trace id")


def test_the_sixth_new_order_in_a_minute_is_rate_limited(walkthrough: tuple[Server, Server]) -> None:
    gateway, _ = walkthrough
    statuses = [
        order(gateway.base, f"burst-{i}", {"item": "pen", "quantity": 1}, api_key="k1").status_code
        for i in range(1, 7)
    ]
    assert statuses == [201] * 5 + [429]


def test_ready_and_metrics(walkthrough: tuple[Server, Server]) -> None:
    gateway, _ = walkthrough
    assert httpx.get(gateway.base + "/_bastion/ready", timeout=10).json() == {"status": "ready"}
    assert "bastion_" in httpx.get(gateway.base + "/metrics", timeout=10).text
