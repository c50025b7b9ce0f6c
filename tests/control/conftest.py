"""Helpers of the control tests: Bastion under a real uvicorn server in the test's own event
loop, and, for ``bastion gateway`` processes, load, reload counts, a connection pinned to each
worker, and a relay that makes a store reachable at a chosen moment."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable
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


async def until(predicate: Callable[[], object], what: str, seconds: float = 10.0) -> None:
    """Wait (bounded, polling every 20 ms) until ``predicate()`` is true."""
    for _ in range(int(seconds / 0.02)):
        if predicate():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"{what} did not happen within {seconds} s")


async def hammer(
    client: httpx.AsyncClient, done: asyncio.Event, statuses: list[int], errors: list[str]
) -> None:
    """Requests on ``client`` one after another until ``done`` (bounded: 20000)."""
    for _ in range(20_000):
        if done.is_set():
            return
        try:
            statuses.append((await client.get("/count", params={"name": "hammer"})).status_code)
        except httpx.HTTPError as exc:
            errors.append(f"{type(exc).__name__}: {exc}")


def server_socket_inode(port: int, client_port: int) -> str:
    """The inode of the gateway's end of the loopback connection from ``client_port``."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.rsplit(":", 1)[1], 16) == port and int(remote.rsplit(":", 1)[1], 16) == client_port:
            return fields[9]
    raise AssertionError(f"no connection from port {client_port} to {port} in /proc/net/tcp")


def worker_of(response: httpx.Response, port: int, workers: set[int]) -> int:
    """The worker process that answered ``response``: the one holding its connection's socket."""
    client_port = response.extensions["network_stream"].get_extra_info("client_addr")[1]
    socket = f"socket:[{server_socket_inode(port, client_port)}]"
    for pid in workers:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == socket:
                    return pid
    raise AssertionError(f"no worker of {sorted(workers)} holds {socket}")


@contextlib.asynccontextmanager
async def one_connection_per_worker(
    gateway: Server, headers: dict[str, str], count: int
) -> AsyncIterator[dict[int, httpx.AsyncClient]]:
    """A client per worker process of the gateway (``count`` of them), each with one kept
    connection that worker answers on (found from /proc: the worker holding its socket)."""
    workers: set[int] = set()
    pinned: dict[int, httpx.AsyncClient] = {}
    try:
        # The kernel hands each new connection to any worker that has started (uvicorn's
        # supervisor replaces one slow to start): a bounded number of tries, 50 ms apart.
        for _ in range(300):
            tries = [
                httpx.AsyncClient(
                    base_url=gateway.base,
                    headers=headers,
                    timeout=10,
                    limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
                )
                for _ in range(count)
            ]
            # A path the admin tests' rules do not count: pinning spends no quota.
            responses = await asyncio.gather(*(c.get("/echo/pin") for c in tries))
            workers = children(gateway.process.pid)
            for client, response in zip(tries, responses, strict=True):
                pid = worker_of(response, gateway.port, workers)
                if pid in pinned:
                    await client.aclose()
                else:
                    pinned[pid] = client
            if len(pinned) == count:
                break
            await asyncio.sleep(0.05)
        assert len(pinned) == count, f"connections reached only workers {sorted(pinned)} of {sorted(workers)}"
        yield pinned
    finally:
        for client in pinned.values():
            await client.aclose()


@contextlib.asynccontextmanager
async def relay(port: int, target: tuple[str, int]) -> AsyncIterator[None]:
    """Loopback ``port`` forwarded to the server at ``target`` (host, port), from now until the end."""
    writers: list[asyncio.StreamWriter] = []

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        writers.extend((writer, up_writer))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(connected, "127.0.0.1", port)
    try:
        yield
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()
