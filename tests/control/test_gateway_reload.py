"""``bastion gateway`` reloaded by SIGHUP under load, with one worker and with two, and by ``--watch``."""

from __future__ import annotations

import asyncio
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import free_port
from tests.control.conftest import (
    children,
    load,
    reloads_by_worker,
    wait_for_reloads,
    write_config,
)
from tests.gateway.conftest import Server, clean_env, start_server, start_upstream

pytestmark = [pytest.mark.e2e, pytest.mark.redis]


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_upstream(tmp_path_factory.mktemp("upstream"))
    yield server
    server.stop()


def gateway_config(upstream: Server, redis_url: str, prefix: str, limit: int) -> dict[str, Any]:
    return {
        "upstream": upstream.base,
        "store": redis_url,
        "rate_limits": {
            "key_prefix": prefix,
            "timeout": "2s",
            "rules": [{"name": "global", "key": "global", "match": "GET /limited", "limit": f"{limit}/hour"}],
        },
        "idempotency": {"key_prefix": f"{prefix}-idem"},
    }


def start(workdir: Path, config: dict[str, Any], *, workers: int, watch: bool = False) -> Server:
    port = free_port()
    path = workdir / f"gateway-{port}.yaml"
    write_config(path, config)
    args = [sys.executable, "-m", "bastion", "gateway", "--config", str(path), "--port", str(port)]
    args += ["--workers", str(workers), *(["--watch"] if watch else [])]
    server = start_server(args, port, workdir, ready_path="/_bastion/health", env=clean_env(), name="gw")
    server.extra["config_path"] = path
    return server


@pytest.mark.parametrize("workers", [1, 2])
def test_sighup_every_100_ms_under_load_fails_no_request(
    upstream: Server, redis_url: str, tmp_path: Path, workers: int
) -> None:
    prefix = f"bastion-test-reload-{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, gateway_config(upstream, redis_url, prefix, 1000), workers=workers)
    try:
        before = reloads_by_worker(gateway)
        processes = children(gateway.process.pid)

        async def run() -> tuple[list[int], list[str]]:
            # A fixed count of signals (not a time span: a busy machine would send fewer),
            # 100 ms apart, with the load running all along.
            done = asyncio.Event()
            task = asyncio.create_task(load(gateway.base, done))
            for _ in range(25):
                gateway.process.send_signal(signal.SIGHUP)
                await asyncio.sleep(0.1)
            done.set()
            return await task

        statuses, errors = asyncio.run(run())
        assert gateway.process.poll() is None, "the gateway ended on SIGHUP"
        assert not errors, errors[:5]
        assert statuses and all(status == 200 for status in statuses), sorted(set(statuses))
        # Every worker reloaded in place (SIGHUPs that arrive during a reload fold into one
        # more): the same processes serve, none was restarted.
        wait_for_reloads(gateway, before, workers)
        assert children(gateway.process.pid) == processes

        # A changed limit, then one SIGHUP: every worker's answers carry the new policy.
        write_config(gateway.extra["config_path"], gateway_config(upstream, redis_url, prefix, 7))
        mark = reloads_by_worker(gateway)
        gateway.process.send_signal(signal.SIGHUP)
        wait_for_reloads(gateway, mark, workers)
        policies = set()
        for _ in range(20):
            # A new connection each time, so that both workers are asked.
            response = httpx.get(gateway.base + "/limited", headers={"connection": "close"}, timeout=10)
            policies.add(response.headers.get("ratelimit-policy", "").split(";w=")[0])
        assert policies == {'"global";q=7'}
    finally:
        gateway.stop()


def test_a_bad_file_on_sighup_keeps_the_gateway_serving(
    upstream: Server, redis_url: str, tmp_path: Path
) -> None:
    prefix = f"bastion-test-reload-{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, gateway_config(upstream, redis_url, prefix, 9), workers=1)
    try:
        gateway.extra["config_path"].write_text("upstream: [unclosed\n")
        gateway.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while not any("reload refused" in str(line.get("event", "")) for line in gateway.log_lines()):
            assert time.monotonic() < deadline, "no refusal logged"
            time.sleep(0.05)
        response = httpx.get(gateway.base + "/limited", timeout=10)
        assert response.status_code == 200
        assert response.headers["ratelimit-policy"].startswith('"global";q=9;')
    finally:
        gateway.stop()


def test_watch_reloads_a_changed_file(upstream: Server, redis_url: str, tmp_path: Path) -> None:
    prefix = f"bastion-test-reload-{uuid.uuid4().hex[:8]}"
    gateway = start(tmp_path, gateway_config(upstream, redis_url, prefix, 9), workers=1, watch=True)
    try:
        write_config(gateway.extra["config_path"], gateway_config(upstream, redis_url, prefix, 11))
        deadline = time.monotonic() + 10
        while True:
            response = httpx.get(gateway.base + "/limited", timeout=10)
            if response.headers["ratelimit-policy"].startswith('"global";q=11;'):
                break
            assert time.monotonic() < deadline, "the changed file was not reloaded"
            time.sleep(0.1)
    finally:
        gateway.stop()
