"""Real processes: exactness on Redis from 4 processes, and Retry-After honoured by urllib3 over HTTP.

These start subprocesses (a few seconds each on a shared 2-core machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import urllib3

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]

WORKER = r"""
import asyncio, os, sys, time
from bastion.ratelimit.algorithms import Limit
from bastion.ratelimit.stores import Check
from bastion.ratelimit.stores.redis import RedisStore

url, prefix = sys.argv[1], sys.argv[2]
n, per_process, start_at = int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
ALGORITHMS = ["gcra", "fixed_window", "sliding_window", "sliding_log", "concurrency"]

async def main():
    store = RedisStore(url, key_prefix=prefix)
    await store.start()
    checks = {a: [Check("exact|" + a, Limit.build(a, n, 60_000_000), 1, False)] for a in ALGORITHMS}
    await asyncio.sleep(max(0.0, start_at - time.time()))
    pid = os.getpid()
    calls = [store.decide(checks[a], f"{pid}-{a}-{i}") for a in ALGORITHMS for i in range(per_process)]
    decisions = await asyncio.gather(*calls)
    counts = {a: 0 for a in ALGORITHMS}
    for (a, _), d in zip([(a, i) for a in ALGORITHMS for i in range(per_process)], decisions):
        counts[a] += d.admitted
    await store.close()
    print(" ".join(f"{a}={counts[a]}" for a in ALGORITHMS))

asyncio.run(main())
"""


def test_exactly_n_of_3n_from_four_processes_on_redis(redis_url: str) -> None:
    n, processes = 20, 4
    prefix = "bastion-test-" + uuid.uuid4().hex
    start_at = time.time() + 2.0
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_url, prefix, str(n), str(3 * n // processes), str(start_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        for _ in range(processes)
    ]
    totals: dict[str, int] = {}
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err.decode()
        for pair in out.decode().split():
            name, count = pair.split("=")
            totals[name] = totals.get(name, 0) + int(count)
    assert totals == {a: n for a in ["gcra", "fixed_window", "sliding_window", "sliding_log", "concurrency"]}


@pytest.fixture
def limited_server() -> Iterator[str]:
    """A real uvicorn serving an endpoint limited to 2 requests per 2 seconds."""
    port = free_port()
    config = {
        "store": "memory://",
        "rate_limits": {"rules": [{"name": "tight", "key": "ip", "match": "GET /x", "limit": "2/2s"}]},
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["BASTION_TEST_RL_CONFIG"] = orjson.dumps(config).decode()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "tests.ratelimit.asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    http = urllib3.PoolManager()
    try:
        while True:
            if process.poll() is not None:
                raise AssertionError(process.stderr.read().decode() if process.stderr else "uvicorn exited")
            try:
                http.request("GET", base + "/warmup", retries=False, timeout=1)
                break
            except urllib3.exceptions.HTTPError:
                if time.monotonic() > deadline:
                    raise AssertionError("uvicorn did not start within 20 s") from None
                time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


def test_urllib3_retry_honours_retry_after(limited_server: str) -> None:
    http = urllib3.PoolManager()
    for _ in range(2):
        assert http.request("GET", limited_server + "/x", retries=False).status == 200
    refused = http.request("GET", limited_server + "/x", retries=False)
    assert refused.status == 429
    wait = int(refused.headers["Retry-After"])
    assert wait >= 1
    retry = urllib3.Retry(
        total=3,
        status_forcelist=[429],
        respect_retry_after_header=True,
        backoff_factor=0,
        allowed_methods=None,
    )
    started = time.monotonic()
    response = http.request("GET", limited_server + "/x", retries=retry)
    elapsed = time.monotonic() - started
    assert response.status == 200
    assert response.retries is not None
    assert [h.status for h in response.retries.history] == [429]
    # urllib3 slept exactly as long as Retry-After said, and that was enough.
    assert elapsed >= wait - 0.05
