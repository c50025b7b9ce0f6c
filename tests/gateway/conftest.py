"""Real servers for the gateway tests: the Starlette upstream and ``bastion gateway`` processes.

Every process listens on a free loopback port, every wait is bounded, and every
process is stopped (SIGTERM, then SIGKILL) when its fixture ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import yaml

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    """A server process on a loopback port, with its standard error in a file."""

    base: str
    port: int
    process: subprocess.Popen[bytes]
    stderr_path: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def log_lines(self) -> list[dict[str, Any]]:
        lines = []
        for raw in self.stderr_path.read_bytes().splitlines():
            if raw.startswith(b"{"):
                try:
                    lines.append(orjson.loads(raw))
                except orjson.JSONDecodeError:
                    continue
        return lines

    def stop(self, timeout: float = 10) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any BASTION_ variable of the caller's, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "PROMETHEUS_MULTIPROC"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env.update(extra)
    return env


def start_server(
    args: list[str],
    port: int,
    workdir: Path,
    *,
    ready_path: str = "/",
    env: dict[str, str] | None = None,
    timeout: float = 30,
    name: str = "server",
) -> Server:
    """Start ``args`` and wait (bounded) until ``ready_path`` answers on ``port``."""
    stderr_path = workdir / f"{name}-{port}.stderr"
    with stderr_path.open("wb") as stderr:
        process = subprocess.Popen(
            args, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr, env=env or clean_env()
        )
    base = f"http://127.0.0.1:{port}"
    server = Server(base, port, process, stderr_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}: {stderr_path.read_text()[-3000:]}")
        try:
            httpx.get(base + ready_path, timeout=1)
            return server
        except httpx.HTTPError:
            time.sleep(0.05)
    server.stop()
    pytest.fail(f"{name} did not answer within {timeout} s: {stderr_path.read_text()[-3000:]}")


def start_upstream(workdir: Path) -> Server:
    """The Starlette test upstream under uvicorn."""
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "tests.gateway.upstream_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
    ]
    return start_server(args, port, workdir, ready_path="/count?name=x", name="upstream")


def start_gateway(
    workdir: Path,
    config: dict[str, Any],
    *,
    workers: int = 1,
    admin_port: int | None = None,
    name: str = "gateway",
    env: dict[str, str] | None = None,
) -> Server:
    """``bastion gateway`` with ``config`` written to a file, on a free port."""
    port = free_port()
    config_path = workdir / f"{name}-{port}.yaml"
    config_path.write_text(yaml.safe_dump(config))
    args = [
        sys.executable,
        "-m",
        "bastion",
        "gateway",
        "--config",
        str(config_path),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if admin_port is not None:
        args += ["--admin-port", str(admin_port)]
    server = start_server(
        args, port, workdir, ready_path="/_bastion/health", env=env or clean_env(), name=name
    )
    server.extra["config_path"] = config_path
    return server


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One Starlette upstream for the whole gateway test session."""
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.stop()


def vm_kib(pid: int, field_name: str) -> int:
    """A memory figure of a process from /proc (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field_name} not in /proc/{pid}/status")


EXPRESS_APP = Path(__file__).parent / "express_app"


def express_ready() -> None:
    """Skip (with how to fix it) unless node and npm are here and express is installed."""
    import shutil

    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm are not installed; install Node.js to run the Express upstream tests")
    if not (EXPRESS_APP / "node_modules" / "express").is_dir():
        result = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund"],
            cwd=EXPRESS_APP,
            capture_output=True,
            timeout=180,
            check=False,
        )
        if result.returncode != 0:
            pytest.skip(f"npm ci in {EXPRESS_APP} failed: {result.stderr.decode()[-500:]}")


def start_express(workdir: Path, app: Path = EXPRESS_APP / "app.js") -> Server:
    """An Express app under node, with express from tests/gateway/express_app/node_modules."""
    express_ready()
    port = free_port()
    env = clean_env(PORT=str(port), NODE_PATH=str(EXPRESS_APP / "node_modules"))
    return start_server(
        ["node", str(app)], port, workdir, ready_path="/count?name=x", env=env, name="express"
    )


@pytest.fixture(scope="session")
def express(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The Express upstream for the whole session (skips where node is missing)."""
    server = start_express(tmp_path_factory.mktemp("express"))
    yield server
    server.stop()
