"""``bastion demo`` as a real process on a free loopback port, driven like a new user would."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e


@dataclass
class DemoProcess:
    base: str
    process: subprocess.Popen[bytes]
    stderr_path: Path

    def log_lines(self) -> list[dict[str, object]]:
        lines = []
        for raw in self.stderr_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                lines.append(orjson.loads(raw))
        return lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoProcess]:
    workdir = tmp_path_factory.mktemp("demo")
    port = free_port()
    stderr_path = workdir / "stderr.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "bastion", "demo", "--port", str(port)],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"bastion demo exited: {stderr_path.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail("bastion demo did not start within 30 s")
    yield DemoProcess(base, process, stderr_path)
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def test_demo_prints_a_tour(demo: DemoProcess) -> None:
    assert demo.process.stdout is not None
    os.set_blocking(demo.process.stdout.fileno(), False)
    tour = (demo.process.stdout.read() or b"").decode()
    assert "curl" in tour
    assert demo.base in tour


def test_unknown_path_is_a_problem_with_the_header_trace_id(demo: DemoProcess) -> None:
    response = httpx.get(demo.base + "/no/such/thing", timeout=5)
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == "NOT_FOUND"
    assert body["trace_id"] == response.headers["traceparent"].split("-")[1]
    assert body["trace_id"] == response.headers["x-request-id"]


def test_crash_leaks_nothing_and_is_logged_with_the_trace_id(demo: DemoProcess) -> None:
    response = httpx.get(demo.base + "/reports/daily", timeout=5)
    assert response.status_code == 500
    body = response.json()
    assert body["code"] == "INTERNAL_ERROR"
    for secret in ("hunter2", "RuntimeError", "Traceback", "postgresql://"):
        assert secret not in response.text
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = demo.log_lines()
        errors = [r for r in lines if r.get("trace_id") == body["trace_id"] and r["level"] == "error"]
        if errors:
            break
        time.sleep(0.1)
    assert errors, "the crash was not logged with the response's trace id"
    exception = str(errors[0]["exception"])
    assert "hunter2" in exception and "RuntimeError" in exception and "Traceback" in exception


def test_metrics_are_exposed(demo: DemoProcess) -> None:
    httpx.get(demo.base + "/health", timeout=5)
    metrics = httpx.get(demo.base + "/metrics", timeout=5).text
    assert 'http_route="/health"' in metrics
    assert "bastion_problems_total" in metrics
