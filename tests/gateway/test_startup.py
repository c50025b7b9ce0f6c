"""An honest start: the gateway says where it listens, and refuses per-process state with workers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from bastion.config import load_config
from bastion.gateway.server import listening_line, per_process_state
from tests.conftest import free_port
from tests.gateway.conftest import Server, clean_env, start_gateway


def _config(**extra: object) -> dict[str, object]:
    config: dict[str, object] = {"upstream": "http://user:secret@127.0.0.1:9", "store": "memory://"}
    config.update(extra)
    return config


def test_the_listening_line_names_address_workers_and_stores_without_credentials() -> None:
    config = load_config(
        _config(gateway={"port": 8080, "workers": 4}, store="redis://:pw@127.0.0.1:6379/0"), env={}
    )
    line = listening_line(config)
    assert line.startswith("listening on http://127.0.0.1:8080 (4 workers,")
    assert "redis://:***@127.0.0.1:6379/0" in line
    assert "secret" not in line and ":pw@" not in line


def test_per_process_stores_are_named_only_with_several_workers_in_mind() -> None:
    memory = load_config(
        _config(rate_limits={"rules": [{"name": "g", "key": "global", "limit": "5/s"}]}), env={}
    )
    assert {key for key, _ in per_process_state(memory)} == {"rate_limits.store", "idempotency.store"}
    shared = load_config(
        _config(
            store="redis://127.0.0.1:6379/0",
            rate_limits={"rules": [{"name": "g", "key": "global", "limit": "5/s"}]},
        ),
        env={},
    )
    assert per_process_state(shared) == []
    sqlite = load_config(_config(store="sqlite:///./x.db"), env={})
    assert per_process_state(sqlite) == []  # no rules; SQLite idempotency is shared on one host


def _gateway(tmp_path: Path, *args: str, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump(config))
    return subprocess.run(
        [sys.executable, "-m", "bastion", "gateway", "--config", str(path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
        check=False,
    )


def test_several_workers_on_the_memory_store_refuse_to_start(tmp_path: Path) -> None:
    config = _config(rate_limits={"rules": [{"name": "g", "key": "global", "limit": "5/s"}]})
    result = _gateway(tmp_path, "--workers", "2", "--port", str(free_port()), config=config)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "rate_limits.store" in result.stderr and "--allow-per-process-state" in result.stderr
    assert "idempotency.store" in result.stderr


def test_a_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = _gateway(tmp_path, "--port", str(port), config=_config())
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("bastion: cannot listen")


def test_the_gateway_logs_where_it_listens(tmp_path: Path, upstream: Server) -> None:
    gateway = start_gateway(tmp_path, {"upstream": upstream.base, "store": "memory://"})
    try:
        lines = [line.get("event", "") for line in gateway.log_lines()]
    finally:
        gateway.stop()
    assert any(
        event.startswith(f"listening on http://127.0.0.1:{gateway.port} (1 worker,") for event in lines
    ), lines


def test_a_dependency_down_at_start_is_said_at_start(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    gateway = start_gateway(tmp_path, {"upstream": dead, "store": "memory://"})
    try:
        import time

        deadline = time.monotonic() + 10
        warned: list[dict[str, object]] = []
        while not warned and time.monotonic() < deadline:
            warned = [line for line in gateway.log_lines() if line.get("unreachable")]
            time.sleep(0.05)
    finally:
        gateway.stop()
    assert warned and warned[0]["unreachable"] == ["upstream"], gateway.stderr_path.read_text()[-2000:]


def test_allow_per_process_state_starts_several_workers_and_says_so(tmp_path: Path, upstream: Server) -> None:
    from tests.gateway.conftest import start_server

    port = free_port()
    path = tmp_path / "bastion.yaml"
    path.write_text(yaml.safe_dump({"upstream": upstream.base, "store": "memory://"}))
    args = [sys.executable, "-m", "bastion", "gateway", "--config", str(path), "--port", str(port)]
    gateway = start_server(
        [*args, "--workers", "2", "--allow-per-process-state"],
        port,
        tmp_path,
        ready_path="/_bastion/health",
        env=clean_env(),
    )
    try:
        lines = gateway.log_lines()
    finally:
        gateway.stop()
    warned = [line for line in lines if line.get("event") == "per-process state with several workers"]
    assert warned and "idempotency.store" in warned[0]["problems"], lines
    assert any(
        str(line.get("event", "")).startswith(f"listening on http://127.0.0.1:{port} (2 workers,")
        for line in lines
    )
