"""What the idempotency guard adds per request, beside asgi-idempotency-header and fastapi-idempotency.

    .venv/bin/python bench/idempotency.py [--quick]

Part 1 (memory, interleaved in one run): a first request (a new key every time)
and a replay (one key over and over) through a bare Starlette app, bastion
without and with its idempotency guard, and the two peers, each with its own
in-process memory store. bastion's added cost is measured against bastion with
``idempotency.enabled: false`` (the same boundary and route guards); the peers'
against the bare app.

Part 2 (stores): the same with SQLite (a temporary file), Redis (a redis-server
of the benchmark's own on a free loopback port, whose ``MONITOR`` shows only our
commands: round trips per request) and PostgreSQL (a table of
its own, dropped at the end) when reachable.
"""

from __future__ import annotations

import asyncio
import io
import itertools
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import redis
from fastapi_idempotency import IdempotencyMiddleware
from fastapi_idempotency import MemoryStore as FastAPIMemoryStore
from idempotency_header_middleware import IdempotencyHeaderMiddleware
from idempotency_header_middleware.backends.memory import MemoryBackend
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asgi_driver import App, call, compare, make_scope, time_per_request
from bastion import Bastion

POSTGRES_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
BODY = b'{"item":"book","amount":1200,"currency":"EUR"}'
QUICK = "--quick" in sys.argv


async def post_order(request: Request) -> Response:
    body = await request.body()
    return Response(body, status_code=201, media_type="application/json")


def starlette_app() -> Starlette:
    return Starlette(routes=[Route("/orders", post_order, methods=["POST"])])


def bastion(idempotency: dict[str, Any]) -> Bastion:
    config = {"store": "memory://", "logging": {"access": False}, "idempotency": idempotency}
    return Bastion(starlette_app(), config, env={}, log_stream=io.BytesIO())


def first_requests() -> Callable[[int], tuple[dict[str, Any], bytes]]:
    """Requests with a new key each (the counter, not the index: rounds reuse indices)."""
    counter = itertools.count()
    run = uuid.uuid4().hex[:8]

    def make(_: int) -> tuple[dict[str, Any], bytes]:
        # A UUID-shaped key: asgi-idempotency-header can be told to insist on that.
        key = f"{run}0000-0000-4000-8000-{next(counter):012d}".encode()
        headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"idempotency-key", key)]
        return make_scope("POST", "/orders", headers), BODY

    return make


def replays() -> Callable[[int], tuple[dict[str, Any], bytes]]:
    key = f"{uuid.uuid4()}".encode()

    def make(_: int) -> tuple[dict[str, Any], bytes]:
        headers = [(b"host", b"bench"), (b"content-type", b"application/json"), (b"idempotency-key", key)]
        return make_scope("POST", "/orders", headers), BODY

    return make


async def memory_part() -> None:
    bare = starlette_app()
    apps: dict[str, App] = {
        "bare Starlette": bare,
        "bastion, idempotency off": bastion({"enabled": False}),
        "bastion, idempotency on (memory)": bastion({"store": "memory://"}),
        "asgi-idempotency-header 0.2 (memory)": IdempotencyHeaderMiddleware(bare, backend=MemoryBackend()),
    }
    requests, rounds = (500, 5) if QUICK else (2000, 11)
    first = await compare(apps, first_requests(), requests=requests, rounds=rounds, expect=201)
    replay = await compare(apps, replays(), requests=requests, rounds=rounds, expect=201)
    # fastapi-idempotency (BaseHTTPMiddleware) leaves a task per request waiting on receive()
    # for a disconnect: thousands of live tasks that every later garbage collection walks.
    # It runs last, in its own comparison with the bare app, so it slows only itself.
    fastapi_apps: dict[str, App] = {
        "bare Starlette": bare,
        "fastapi-idempotency 0.1 (memory)": IdempotencyMiddleware(bare, store=FastAPIMemoryStore()),
    }
    few = requests // 4
    peer_first = await compare(fastapi_apps, first_requests(), requests=few, rounds=rounds, expect=201)
    peer_replay = await compare(fastapi_apps, replays(), requests=few, rounds=rounds, expect=201)
    name, bare_name = "fastapi-idempotency 0.1 (memory)", "bare Starlette"
    # Its added cost is taken against the bare app of its own comparison.
    first[name] = first[bare_name] + peer_first[name] - peer_first[bare_name]
    replay[name] = replay[bare_name] + peer_replay[name] - peer_replay[bare_name]
    apps[name] = fastapi_apps[name]
    names = list(apps)
    print("## Memory store: per request, in-process ASGI, medians of interleaved rounds\n")
    print("| app | first request (us) | added | replay (us) | added |")
    print("|---|---:|---:|---:|---:|")
    for name in names:
        base = "bastion, idempotency off" if name.startswith("bastion, idempotency on") else "bare Starlette"
        added_first = first[name] - first[base] if name not in ("bare Starlette", base) else None
        added_replay = replay[name] - replay[base] if name not in ("bare Starlette", base) else None
        if name == "bastion, idempotency off":
            added_first, added_replay = (
                first[name] - first["bare Starlette"],
                replay[name] - replay["bare Starlette"],
            )
        fa = f"{added_first:+.1f}" if added_first is not None else ""
        ra = f"{added_replay:+.1f}" if added_replay is not None else ""
        print(f"| {name} | {first[name]:.1f} | {fa} | {replay[name]:.1f} | {ra} |")
    ours_first = first["bastion, idempotency on (memory)"] - first["bastion, idempotency off"]
    ours_replay = replay["bastion, idempotency on (memory)"] - replay["bastion, idempotency off"]
    print()
    print(f"bastion's idempotency guard adds {ours_first:.1f} us on a first request (budget 10 us)")
    print(f"and {ours_replay:+.1f} us on a replay (which skips the app).")
    for peer in ("asgi-idempotency-header 0.2 (memory)", "fastapi-idempotency 0.1 (memory)"):
        peer_first = first[peer] - first["bare Starlette"]
        print(
            f"{peer}: adds {peer_first:.1f} us on a first request, {peer_first / ours_first:.1f}x bastion's."
        )
    print()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def own_redis() -> tuple[subprocess.Popen[bytes], int] | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(100):
        if reachable("127.0.0.1", port):
            return process, port
        time.sleep(0.05)
    process.kill()
    return None


async def count_round_trips(app: Bastion, port: int, requests: int) -> tuple[float, float]:
    """Commands bastion sends to Redis per first request and per replay, counted by ``MONITOR``.

    Requests run one after another, so each command is one round trip. MONITOR also
    shows the commands that scripts run inside Redis (``[0 lua]``): those are not
    round trips and are not counted; nor are the ECHO markers around each phase.
    """
    make_first, make_replay = first_requests(), replays()
    await call(app, *make_replay(0))  # the replayed key's first run, and the scripts loaded
    marker = redis.Redis(port=port)
    with tempfile.NamedTemporaryFile("w+", suffix=".monitor") as out:
        monitor = subprocess.Popen(["redis-cli", "-p", str(port), "monitor"], stdout=out)
        try:
            time.sleep(0.3)
            marker.echo("phase-first")
            for i in range(requests):
                await call(app, *make_first(i))
            marker.echo("phase-replay")
            for i in range(requests):
                await call(app, *make_replay(i))
            marker.echo("phase-end")
            time.sleep(0.3)
        finally:
            monitor.terminate()
            monitor.wait()
            marker.close()
        out.seek(0)
        counts = {"first": 0, "replay": 0}
        phase = ""
        for line in out:
            if '"ECHO"' in line:
                phase = line.rsplit('"phase-', 1)[1].split('"')[0]
            elif phase in counts and "[0 lua]" not in line and line.strip() != "OK":
                counts[phase] += 1
    return counts["first"] / requests, counts["replay"] / requests


async def stores_part() -> None:
    requests, rounds = (200, 3) if QUICK else (600, 7)
    pg_requests = requests // 3  # a few milliseconds each: fewer keep the run short
    baseline = bastion({"enabled": False})
    rows: list[tuple[str, float, float, str]] = []
    base_first = await time_per_request(
        baseline, first_requests(), requests=requests, rounds=rounds, expect=201
    )
    base_replay = await time_per_request(baseline, replays(), requests=requests, rounds=rounds, expect=201)
    rows.append(("bastion, idempotency off", base_first, base_replay, ""))
    memory = bastion({"store": "memory://"})
    rows.append(
        (
            "memory",
            await time_per_request(memory, first_requests(), requests=requests, rounds=rounds, expect=201),
            await time_per_request(memory, replays(), requests=requests, rounds=rounds, expect=201),
            "",
        )
    )
    with tempfile.TemporaryDirectory() as folder:
        sqlite = bastion({"store": f"sqlite:///{Path(folder) / 'idempotency.db'}"})
        rows.append(
            (
                "SQLite (WAL, file in /tmp)",
                await time_per_request(
                    sqlite, first_requests(), requests=requests, rounds=rounds, expect=201
                ),
                await time_per_request(sqlite, replays(), requests=requests, rounds=rounds, expect=201),
                "",
            )
        )
        await sqlite.shutdown()
    server = own_redis()
    if server is not None:
        process, port = server
        try:
            url = f"redis://127.0.0.1:{port}/0"
            app = bastion({"store": url})
            first_rt, replay_rt = await count_round_trips(app, port, 200)
            rows.append(
                (
                    "Redis (own server, loopback)",
                    await time_per_request(
                        app, first_requests(), requests=requests, rounds=rounds, expect=201
                    ),
                    await time_per_request(app, replays(), requests=requests, rounds=rounds, expect=201),
                    f"{first_rt:.2f} first, {replay_rt:.2f} replay (budget 2 and 1)",
                )
            )
            await app.shutdown()
        finally:
            process.kill()
            process.wait()
    else:
        print("(redis-server not installed: Redis row skipped)\n")
    if reachable("127.0.0.1", 5432):
        table_name = f"idem_bench_{uuid.uuid4().hex[:8]}"
        app = bastion({"store": POSTGRES_URL, "table": table_name})
        try:
            rows.append(
                (
                    "PostgreSQL (loopback)",
                    await time_per_request(
                        app, first_requests(), requests=pg_requests, rounds=rounds, expect=201
                    ),
                    await time_per_request(app, replays(), requests=pg_requests, rounds=rounds, expect=201),
                    "",
                )
            )
        finally:
            store = app.resources[0]
            pool = getattr(store, "_pool", None)
            if pool is not None:
                await pool.execute(f"DROP TABLE IF EXISTS {table_name}")
            await app.shutdown()
    else:
        print("(PostgreSQL not reachable at 127.0.0.1:5432: row skipped)\n")
    print("## Each store: per request, in-process ASGI, medians (stores measured one after another)\n")
    print("| store | first request (us) | added | replay (us) | added | Redis round trips per request |")
    print("|---|---:|---:|---:|---:|---|")
    for name, first, replay, trips in rows:
        added_first = f"{first - base_first:+.1f}" if name != rows[0][0] else ""
        added_replay = f"{replay - base_replay:+.1f}" if name != rows[0][0] else ""
        print(f"| {name} | {first:.1f} | {added_first} | {replay:.1f} | {added_replay} | {trips} |")
    print()


def machine_speed() -> str:
    """Two reference timings, so that readers can scale the tables to their machine."""
    import hashlib
    import timeit

    def nothing() -> None:
        return None

    call_ns = min(timeit.repeat(nothing, number=200_000, repeat=5)) / 200_000 * 1e9
    payload = b"x" * 100
    sha_ns = (
        min(timeit.repeat(lambda: hashlib.sha256(payload).hexdigest(), number=50_000, repeat=5))
        / 50_000
        * 1e9
    )
    return f"a Python function call {call_ns:.0f} ns, SHA-256 of 100 bytes {sha_ns:.0f} ns"


async def main() -> None:
    print(f"(shared 2-core machine, load average {os.getloadavg()[0]:.1f} at start; {machine_speed()})\n")
    await memory_part()
    await stores_part()


if __name__ == "__main__":
    asyncio.run(main())
