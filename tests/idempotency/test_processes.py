"""Exactly once across real server processes sharing SQLite, Redis and PostgreSQL.

Slow (marked ``e2e``): for each store, one uvicorn server with 4 worker
processes on a free loopback port, all sharing the store, and three scenarios:

1. 200 concurrent identical requests: the handler runs once; every other answer
   is the identical replay or ``409 IDEMPOTENCY_REQUEST_IN_PROGRESS``.
2. The worker running a request is killed (SIGKILL): after the lease, one retry
   runs the handler once more, and later retries get its replay.
3. The worker running a request is stalled (SIGSTOP): after the lease another
   worker takes over and completes; when the stalled one resumes, its late
   completion is fenced and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import POSTGRES_URL, REDIS_URL, free_port, require_service
from tests.conftest import _reachable as reachable
from tests.idempotency.conftest import delete_prefix, drop_table
from tests.idempotency.server_app import runs

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ORDER = {"item": "book", "amount": 1200}
WORKERS = 4
LEASE = "2s"


class Server:
    """A uvicorn server with several workers behind bastion, and its shared runs file."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.runs_db = env["IDEM_TEST_RUNS_DB"]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
        environment.update(env)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "tests.idempotency.server_app:app"),
                    *("--host", "127.0.0.1", "--port", str(self.port)),
                    *("--workers", str(WORKERS), "--log-level", "warning"),
                ],
                cwd=ROOT,
                env=environment,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def wait_ready(self, deadline: float) -> None:
        """Wait until every worker has answered once (bounded by ``deadline``)."""
        pids: set[int] = set()
        while time.monotonic() < deadline and len(pids) < WORKERS:
            if self.process.poll() is not None:
                pytest.fail(f"server exited: {self.log.read_text()}")
            try:
                # A fresh connection each time, so that the workers take turns accepting.
                pids.add(httpx.get(self.base + "/ready", timeout=5).json()["pid"])
            except httpx.HTTPError:
                time.sleep(0.05)
        if len(pids) < WORKERS:
            pytest.fail(f"only {len(pids)} of {WORKERS} workers answered: {self.log.read_text()}")

    def stop(self) -> None:
        for pid in self.worker_pids():
            # A stalled worker must be resumed to die with its parent.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def worker_pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        try:
            return [int(p) for p in children.read_text().split()]
        except OSError:
            return []


KINDS = {"sqlite": "", "redis": REDIS_URL, "postgres": POSTGRES_URL}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    """One 4-worker server per store kind, all started at once (start-up is most of the cost)."""
    started: dict[str, Server] = {}
    cleanups: list[tuple[str, dict[str, str]]] = []
    for kind, url in KINDS.items():
        if kind != "sqlite" and not reachable(url, 6379 if kind == "redis" else 5432):
            continue  # the test for this kind skips (or fails under CI) with the reason
        folder = tmp_path_factory.mktemp(f"e2e-{kind}")
        run = uuid.uuid4().hex[:12]
        env = {
            "BASTION_STORE": "memory://",
            "BASTION_IDEMPOTENCY__STORE": url or f"sqlite:///{folder / 'idempotency.db'}",
            "BASTION_IDEMPOTENCY__TABLE": f"idem_e2e_{run}",
            "BASTION_IDEMPOTENCY__KEY_PREFIX": f"bastion-e2e:{run}",
            "BASTION_IDEMPOTENCY__REQUIRE": "[POST /orders]",
            "BASTION_IDEMPOTENCY__LEASE": LEASE,
            # 200 claims of one key queue on one row lock (PostgreSQL) or the write lock
            # (SQLite) on a shared machine: exactly-once is under test here, not the timeout.
            "BASTION_IDEMPOTENCY__TIMEOUT": "5s",
            "BASTION_METRICS__ENABLED": "false",
            "BASTION_LOGGING__ACCESS": "true",
            "BASTION_LOGGING__LEVEL": "info",
            "IDEM_TEST_RUNS_DB": str(folder / "runs.db"),
        }
        started[kind] = Server(env, folder / "server.log")
        cleanups.append((kind, env))
    try:
        deadline = time.monotonic() + 90
        for server in started.values():
            server.wait_ready(deadline)
        yield started
    finally:
        for server in started.values():
            server.stop()
        for kind, env in cleanups:
            url = env["BASTION_IDEMPOTENCY__STORE"]
            if kind == "postgres":
                asyncio.run(drop_table(url, env["BASTION_IDEMPOTENCY__TABLE"]))
            elif kind == "redis":
                asyncio.run(delete_prefix(url, env["BASTION_IDEMPOTENCY__KEY_PREFIX"]))


@pytest.fixture(params=list(KINDS))
def server(request: pytest.FixtureRequest, servers: dict[str, Server]) -> Server:
    """The server of one store kind."""
    kind = request.param
    if kind != "sqlite":
        require_service(kind, KINDS[kind], 6379 if kind == "redis" else 5432)
    return servers[kind]


def headers(key: str, sleep: float = 0) -> dict[str, str]:
    return {"Idempotency-Key": key, "X-Sleep": str(sleep)}


async def post(server: Server, key: str, sleep: float = 0) -> httpx.Response:
    """One request on a fresh connection (a keep-alive one could be pinned to a stalled worker)."""
    async with httpx.AsyncClient(base_url=server.base, timeout=30) as http:
        return await http.post("/orders", json=ORDER, headers=headers(key, sleep))


async def retry_until_done(server: Server, key: str) -> httpx.Response:
    """Retry while the answer is 409 in progress (bounded at 10 s)."""
    response = await post(server, key)
    deadline = time.monotonic() + 10
    while response.status_code == 409 and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        response = await post(server, key)
    return response


async def started_pid(server: Server, key: str) -> int:
    """The process id of the worker running ``key``'s handler, once it has started."""
    for _ in range(500):
        pids = runs(server.runs_db, key, "started")
        if pids:
            return pids[0]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the handler for {key} never started")


async def test_exactly_once_across_worker_processes(server: Server) -> None:
    # 1. 200 concurrent identical requests.
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=server.base, timeout=30, limits=limits) as http:
        burst = await asyncio.gather(
            *(http.post("/orders", json=ORDER, headers=headers("burst", 0.5)) for _ in range(200))
        )
    final = await retry_until_done(server, "burst")
    log = server.log.read_text()
    takeovers = [line for line in log.splitlines() if "lease_expired" in line or "lease lost" in line]
    assert len(runs(server.runs_db, "burst", "started")) == 1, takeovers or log[-4000:]
    assert len(runs(server.runs_db, "burst", "finished")) == 1
    statuses = [r.status_code for r in burst]
    store_errors = [line for line in log.splitlines() if "idempotency store error" in line]
    assert set(statuses) <= {201, 409}, (sorted(set(statuses)), store_errors[:5])
    created = [r for r in burst if r.status_code == 201]
    assert len({r.content for r in created}) <= 1
    assert all(r.json()["code"] == "IDEMPOTENCY_REQUEST_IN_PROGRESS" for r in burst if r.status_code == 409)
    assert sum("idempotent-replayed" not in r.headers for r in created) <= 1
    assert final.status_code == 201 and final.headers["idempotent-replayed"] == "true"
    assert all(r.content == final.content for r in created)

    # 2. The worker running the handler is killed mid-request.
    doomed = asyncio.create_task(post(server, "killed", sleep=60))
    pid = await started_pid(server, "killed")
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(httpx.HTTPError):
        await doomed
    blocked = await post(server, "killed")
    assert blocked.status_code == 409  # the lease still holds
    retried = await retry_until_done(server, "killed")
    assert retried.status_code == 201 and "idempotent-replayed" not in retried.headers
    assert retried.json()["pid"] != pid
    replay = await post(server, "killed")
    assert replay.content == retried.content and replay.headers["idempotent-replayed"] == "true"
    assert len(runs(server.runs_db, "killed", "started")) == 2  # the killed run and the one retry
    assert len(runs(server.runs_db, "killed", "finished")) == 1

    # 3. The worker running the handler stalls past its lease, then resumes.
    late = asyncio.create_task(post(server, "stalled", sleep=1.5))
    pid = await started_pid(server, "stalled")
    os.kill(pid, signal.SIGSTOP)  # a long GC pause, a frozen VM...
    try:
        taken = await retry_until_done(server, "stalled")
    finally:
        os.kill(pid, signal.SIGCONT)
    assert taken.status_code == 201 and taken.json()["pid"] != pid
    late_response = await late
    # The stalled worker's own client gets the answer it produced; the record keeps the new owner's.
    assert late_response.status_code == 201 and late_response.json()["pid"] == pid
    replay = await post(server, "stalled")
    assert replay.content == taken.content and replay.headers["idempotent-replayed"] == "true"
    assert len(runs(server.runs_db, "stalled", "finished")) == 2
    assert b"idempotency completion fenced" in server.log.read_bytes()
