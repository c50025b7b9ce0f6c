"""The gateway benchmark's nginx target: the configuration it writes, and how it counts a target's CPU."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered while it runs: its dataclasses look their module up by name.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


@pytest.mark.parametrize("access_log", [False, True])
def test_nginx_config_is_a_one_worker_keepalive_proxy_writing_only_in_its_directory(
    bench: ModuleType, tmp_path: Path, access_log: bool
) -> None:
    conf = bench.nginx_config(18080, 18081, tmp_path / "nginx", access_log=access_log)
    text = conf.read_text()
    assert "worker_processes 1;" in text
    assert "server 127.0.0.1:18081;" in text and "keepalive 64;" in text
    assert "listen 127.0.0.1:18080;" in text
    assert "proxy_http_version 1.1;" in text and 'proxy_set_header Connection "";' in text
    assert f"access_log {'/dev/null' if access_log else 'off'};" in text
    written = [
        line.split()[1] for line in text.splitlines() if line.strip().startswith(("pid ", "error_log "))
    ]
    written += [line.split()[1] for line in text.splitlines() if "_temp_path " in line]
    assert len(written) == 7
    assert all(path.rstrip(";").startswith(str(tmp_path / "nginx")) for path in written)
    command = bench.nginx_command(conf)
    assert command[-2:] == ["-g", "daemon off;"]
    assert command[command.index("-p") + 1] == str(conf.parent)


@pytest.mark.skipif(
    shutil.which("nginx") is None, reason="nginx is not installed (make bench-tools installs it)"
)
def test_nginx_accepts_the_config_the_bench_writes(bench: ModuleType, tmp_path: Path) -> None:
    conf = bench.nginx_config(free_port(), free_port(), tmp_path / "nginx", access_log=True)
    checked = subprocess.run(bench.nginx_command(conf, "-t"), capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    assert "syntax is ok" in checked.stderr


def test_a_targets_cpu_counts_its_child_processes(bench: ModuleType) -> None:
    # Busy for a bounded count of additions, then waits for its standard input.
    burn = "n = 0\nfor i in range(3_000_000):\n    n += i\nprint('done', flush=True)\ninput()"
    child = subprocess.Popen(
        [sys.executable, "-c", burn], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "done\n"
        assert child.pid in bench.process_tree(os.getpid())
        assert bench.cpu_seconds(os.getpid()) >= bench.cpu_seconds(child.pid) > 0
    finally:
        child.communicate("\n", timeout=30)
