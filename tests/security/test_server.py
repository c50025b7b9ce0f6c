"""``bastion demo`` as a real process: forged forwarding headers, slow and oversized heads, its log stream.

The demo's server must not let uvicorn take a client's address from
``X-Forwarded-For`` (bastion believes that header only from
``clients.trusted_proxies``, which the demo leaves empty), and it has the gateway's
limits on request heads.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import httpx
import orjson
import pytest

from tests.conftest import free_port
from tests.gateway.conftest import Server, clean_env, start_server
from tests.gateway.test_server_limits import CUT_OFF_WITHIN_S, assert_problem, exchange

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    port = free_port()
    args = [sys.executable, "-m", "bastion", "demo", "--port", str(port), "--store", "memory://"]
    env = clean_env(BASTION_GATEWAY__HEADER_TIMEOUT="500ms")
    server = start_server(
        args, port, tmp_path_factory.mktemp("demo"), ready_path="/_bastion/health", env=env, name="demo"
    )
    yield server
    server.stop()


def test_forged_x_forwarded_for_does_not_escape_the_login_limit(demo: Server) -> None:
    # The login rule allows 5 per minute per IP. Each request claims another address;
    # all come from 127.0.0.1, which the demo does not trust as a proxy.
    statuses = []
    for i in range(8):
        response = httpx.post(
            demo.base + "/login",
            json={"email": "someone@example.com", "password": "guess"},
            headers={"X-Forwarded-For": f"203.0.113.{i + 1}"},
            timeout=10,
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5, statuses
    assert statuses[5:] == [429] * 3, statuses
    limited = httpx.post(
        demo.base + "/login",
        json={"email": "someone@example.com", "password": "guess"},
        headers={"X-Forwarded-For": "198.51.100.7"},
        timeout=10,
    )
    assert limited.json()["code"] == "RATE_LIMITED"


def test_the_demo_cuts_off_a_head_that_never_ends(demo: Server) -> None:
    elapsed, received = exchange(demo, b"GET /health HTTP/1.1\r\nHost: x\r\n")
    assert_problem(received, 408, "REQUEST_TIMEOUT")
    assert elapsed < CUT_OFF_WITHIN_S


def test_the_demo_answers_an_oversized_head_with_a_431_problem(demo: Server) -> None:
    _, received = exchange(demo, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
    problem = assert_problem(received, 431, "HEADERS_TOO_LARGE")
    assert problem["type"] == "https://bastion.dev/errors/headers-too-large"


def test_the_demo_answers_a_request_that_is_not_http_with_a_problem_and_logs_json(demo: Server) -> None:
    _, received = exchange(demo, b"\x16\x03\x01 not http\r\n\r\n")
    assert_problem(received, 400, "BAD_REQUEST")
    lines = demo.stderr_path.read_bytes().splitlines()
    assert any(b"Invalid HTTP request" in line for line in lines)
    for line in lines:
        assert isinstance(orjson.loads(line), dict)
