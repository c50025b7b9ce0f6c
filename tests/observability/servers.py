"""Real uvicorn processes serving the observability test app on free loopback ports."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@contextmanager
def serve(env: Mapping[str, str], log_path: Path, *, workers: int = 1, timeout: float = 30) -> Iterator[str]:
    """Run the test app (``tests.observability.apps``) under uvicorn; yields the base URL."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "PROMETHEUS_"))}
    environment.update({"BASTION_STORE": "memory://", "BASTION_LOGGING__ACCESS": "false", **env})
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "tests.observability.apps:from_environment",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--lifespan",
        "off",
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"uvicorn exited: {log_path.read_text()}")
            try:
                if httpx.get(base + "/items/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"uvicorn did not start within {timeout} s: {log_path.read_text()}")
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
