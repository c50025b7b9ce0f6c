"""Bastion served by a real uvicorn server on a loopback port, in the test's own event loop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from bastion.asgi import ASGIApp
from tests.conftest import free_port
from tests.gateway.conftest import Server


def write_config(path: Path, config: dict[str, Any]) -> None:
    """Write ``config`` to ``path`` whole: a new file renamed over the old one."""
    staged = path.with_suffix(".staged")
    staged.write_text(yaml.safe_dump(config))
    staged.replace(path)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp) -> AsyncIterator[httpx.AsyncClient]:
    """``app`` under uvicorn (lifespan on) on a free loopback port, and a client for it."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    try:
        for _ in range(200):
            if server.started:
                break
            if task.done():
                task.result()
            await asyncio.sleep(0.02)
        assert server.started, "uvicorn did not start within 4 s"
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)


def children(pid: int) -> set[int]:
    """The process ids of ``pid``'s children (a gateway's workers)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found.update(int(p) for p in (task / "children").read_text().split())
    return found


def reloads_by_worker(server: Server) -> dict[int, int]:
    """How many reloads each worker process logged."""
    found: dict[int, int] = {}
    for line in server.log_lines():
        if str(line.get("event", "")).startswith("configuration reloaded"):
            found[line["pid"]] = found.get(line["pid"], 0) + 1
    return found


def wait_for_reloads(server: Server, before: dict[int, int], workers: int) -> None:
    """Wait (bounded) until ``workers`` distinct processes logged a reload since ``before``."""
    deadline = time.monotonic() + 10
    while True:
        now = reloads_by_worker(server)
        if sum(1 for pid, count in now.items() if count > before.get(pid, 0)) >= workers:
            return
        assert time.monotonic() < deadline, f"reloads by worker: {before} then {now}"
        time.sleep(0.05)


async def load(
    base: str,
    done: asyncio.Event,
    *,
    path: str = "/count",
    headers: dict[str, str] | None = None,
    most: int = 100_000,
    statuses: list[int] | None = None,
) -> tuple[list[int], list[str]]:
    """Requests from 8 concurrent clients (fresh connections and kept ones) until ``done`` is set
    (or each client sent ``most``): the statuses (also added to ``statuses`` as they come, for a
    caller that watches the progress) and the errors."""
    statuses = [] if statuses is None else statuses
    errors: list[str] = []

    async def one_client(n: int) -> None:
        limits = httpx.Limits(max_keepalive_connections=0 if n % 2 else 1)
        async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits, headers=headers) as client:
            for _ in range(most):
                if done.is_set():
                    return
                try:
                    response = await client.get(path, params={"name": f"reload-{n}"})
                    statuses.append(response.status_code)
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")

    await asyncio.gather(*(one_client(n) for n in range(8)))
    return statuses, errors
