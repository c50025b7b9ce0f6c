"""The gateway beside the upstream alone and a bare aiohttp proxy, driven by wrk on loopback.

    .venv/bin/python bench/gateway.py [--duration 5] [--connections 64] [--workload post|get]

Targets, all in one run, all single-process: the upstream alone (aiohttp.web);
a bare aiohttp proxy (aiohttp.web + ClientSession, nothing else); ``bastion
gateway`` with no guards; with every guard on memory stores (route + client,
rate limits, OpenAPI validation, idempotency, metrics, access log); and the same
on Redis. Each target gets a throughput run (``--connections`` connections) and a
low-load latency run (one connection), both with wrk (Debian package ``wrk``).

The default workload is ``POST /orders`` with a JSON body and a fresh
``Idempotency-Key`` per request, so every guard does its full work; ``get`` sends
``GET /items/{id}`` instead. Numbers on a shared machine drift: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")

OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "gateway benchmark", "version": "1"},
    "paths": {
        "/items/{id}": {
            "get": {
                "operationId": "getItem",
                "parameters": [
                    {
                        "name": "id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "integer", "minimum": 0},
                    }
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/orders": {
            "post": {
                "operationId": "createOrder",
                "x-bastion-idempotency": "required",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["item", "quantity"],
                                "additionalProperties": False,
                                "properties": {
                                    "item": {"type": "string", "minLength": 1, "maxLength": 64},
                                    "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                                    "email": {"type": "string", "format": "email"},
                                },
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "created"}},
            }
        },
    },
}

POST_SCRIPT = """
local body = '{"item": "book-42", "quantity": 2, "email": "reader@example.com"}'
local prefix = "%(prefix)s"
local counter = 0
local id = 0
setup = function(thread)
  id = id + 1
  thread:set("tid", id)
end
request = function()
  counter = counter + 1
  local headers = {}
  headers["Content-Type"] = "application/json"
  headers["Idempotency-Key"] = prefix .. "-" .. tostring(tid) .. "-" .. tostring(counter)
  headers["X-API-Key"] = "bench-client"
  return wrk.format("POST", "/orders", headers, body)
end
"""

GET_SCRIPT = """
local counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", "/items/" .. tostring(counter %% 100), {["X-API-Key"] = "bench-client"})
end
"""


# -- the peers, run as subprocesses of this script ----------------------------------------


def serve_upstream(port: int) -> None:
    """A small fast upstream: GET /items/{id} and POST /orders."""
    import asyncio

    import uvloop
    from aiohttp import web

    item = b'{"id": 1, "name": "book", "price": 1200}'

    async def get_item(request: web.Request) -> web.Response:
        return web.Response(body=item, content_type="application/json")

    async def post_order(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(
            body=b'{"id": 7, "status": "created"}', status=201, content_type="application/json"
        )

    app = web.Application()
    app.router.add_get("/items/{id}", get_item)
    app.router.add_post("/orders", post_order)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def serve_bare_proxy(port: int, upstream: str, tuned_gc: bool = False) -> None:
    """The peer: the smallest sensible aiohttp reverse proxy (pooled client, no guards).

    With ``tuned_gc``, its garbage collector is set up after start-up as the gateway's
    workers set up theirs (``gateway.gc_threshold``, ``gateway.gc_freeze``), to show how
    much of the gap between the two that accounts for.
    """
    import asyncio

    import aiohttp
    import uvloop
    from aiohttp import web

    hop = {"connection", "keep-alive", "transfer-encoding", "te", "upgrade", "host", "content-length"}

    async def on_startup(app: web.Application) -> None:
        app["session"] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=256), auto_decompress=False
        )
        if tuned_gc:
            import gc

            gc.set_threshold(50_000, *gc.get_threshold()[1:])
            gc.collect()
            gc.freeze()

    async def on_cleanup(app: web.Application) -> None:
        await app["session"].close()

    async def handle(request: web.Request) -> web.StreamResponse:
        session: aiohttp.ClientSession = request.app["session"]
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in hop]
        body = await request.read()
        async with session.request(
            request.method, upstream + request.raw_path, headers=headers, data=body or None
        ) as upstream_response:
            payload = await upstream_response.read()
            out = [(k, v) for k, v in upstream_response.headers.items() if k.lower() not in hop]
            return web.Response(body=payload, status=upstream_response.status, headers=out)

    app = web.Application()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    app.router.add_route("*", "/{tail:.*}", handle)
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


# -- driving -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen[bytes], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server on {port} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port} after {timeout} s")


def pinned(args: list[str], cpus: str | None) -> list[str]:
    """``args`` run under ``taskset -c cpus`` when pinning is asked for (and possible)."""
    if cpus is None or shutil.which("taskset") is None:
        return args
    return ["taskset", "-c", cpus, *args]


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env["PYTHONPATH"] = str(ROOT / "src")
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=ROOT)
    wait_listening(port, process)
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def gateway_config(upstream: str, workdir: Path, guards: str, *, access_log: bool = False) -> Path:
    """``none``: no guards; ``memory`` / ``redis``: every guard on that store.

    The access log is off unless asked for: the bare proxy logs nothing either, and
    its line per request is a cost of logging, not of the guards (one row shows it).
    """
    config: dict[str, Any] = {
        "upstream": upstream,
        "store": "memory://",
        "gateway": {"workers": 1},
        "logging": {"access": access_log},
    }
    if guards != "none":
        spec = workdir / "openapi.yaml"
        spec.write_text(yaml.safe_dump(OPENAPI))
        run = uuid.uuid4().hex[:10]
        config.update(
            {
                "openapi": str(spec),
                "store": REDIS_URL if guards == "redis" else "memory://",
                "errors": {"normalize_upstream": True},
                "rate_limits": {
                    "key_prefix": f"bench-gw-{run}",
                    "rules": [
                        {"name": "global", "key": "global", "limit": "1000000/second"},
                        {"name": "per-client", "key": "client", "limit": "1000000/second"},
                    ],
                },
                "idempotency": {"key_prefix": f"bench-gw-idem-{run}", "require": ["POST /orders"]},
            }
        )
    path = workdir / f"gateway-{guards}{'-access' if access_log else ''}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


_LATENCY_RE = re.compile(r"^\s*50%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
_RPS_RE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.MULTILINE)
_REQUESTS_RE = re.compile(r"(\d+) requests in")
_NON_2XX_RE = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SCALE = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    rps: float
    p50_ms: float
    errors: int
    requests: int = 0
    #: CPU time the measured server process spent per request, in microseconds.
    cpu_us: float = 0.0


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far (from /proc), in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(
    port: int,
    script: Path,
    connections: int,
    duration: float,
    pid: int | None = None,
    cpus: str | None = None,
) -> WrkResult:
    cpu_before = cpu_seconds(pid) if pid is not None else 0.0
    out = subprocess.run(
        pinned(
            [
                "wrk",
                "-t1",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--latency",
                "-s",
                str(script),
                f"http://127.0.0.1:{port}",
            ],
            cpus,
        ),
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=True,
    ).stdout
    rps = _RPS_RE.search(out)
    p50 = _LATENCY_RE.search(out)
    if rps is None or p50 is None:
        raise RuntimeError("cannot read wrk's output:\n" + out)
    errors = _NON_2XX_RE.search(out)
    requests = _REQUESTS_RE.search(out)
    count = int(requests.group(1)) if requests else 0
    cpu_us = (cpu_seconds(pid) - cpu_before) * 1e6 / count if pid is not None and count else 0.0
    return WrkResult(
        float(rps.group(1)),
        float(p50.group(1)) * _SCALE[p50.group(2)],
        int(errors.group(1)) if errors else 0,
        count,
        cpu_us,
    )


def median_result(runs: list[WrkResult]) -> WrkResult:
    """The median throughput and the median p50 of several runs of one target."""
    return WrkResult(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        sum(r.errors for r in runs),
        sum(r.requests for r in runs),
        statistics.median(r.cpu_us for r in runs),
    )


def callgrind_total(path: Path) -> int:
    """The instructions a callgrind dump counted (its ``summary:`` line)."""
    for line in path.read_text().splitlines():
        if line.startswith(("summary:", "totals:")):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in {path}")


def count_instructions(
    targets: list[tuple[str, list[str]]], script: Path, duration: float, workload: str
) -> int:
    """User-space instructions per request of each proxy, counted by callgrind: the same on every run.

    The clock on a shared machine moves by 2x from one run to the next; instruction
    counts do not. They leave out the kernel's share (the system calls, the same for
    every proxy here, since each reads and writes each message once), so the ratios
    they give are lower than the CPU time ratios. Each target runs alone under
    valgrind, with 4 connections: warmed up, counters zeroed, driven, dumped.
    """
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed: apt-get install -y valgrind", file=sys.stderr)
        return 2
    measured = [
        (name, command)
        for name, command in targets
        if name in ("bare aiohttp proxy", "gateway, no guards", "gateway, every guard, memory")
    ]
    rows: list[tuple[str, int, int]] = []
    for name, command in measured:
        port = free_port()
        out = Path(tempfile.mkdtemp(prefix="bastion-callgrind-")) / "callgrind.out"
        args = [part.replace("{port}", str(port)) for part in command]
        process = start(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *args], port)
        try:
            wrk(port, script, 4, 5.0)  # warm-up: imports done, pools open, code paths hot
            subprocess.run(["callgrind_control", "--zero", str(process.pid)], capture_output=True, check=True)
            result = wrk(port, script, 4, max(duration, 10.0))
            subprocess.run(["callgrind_control", "--dump", str(process.pid)], capture_output=True, check=True)
            time.sleep(1)
            dumps = sorted(out.parent.glob("callgrind.out*"), key=lambda p: p.stat().st_mtime)
            rows.append((name, callgrind_total(dumps[-1]), result.requests))
        finally:
            stop(process)
    bare = rows[0][1] / rows[0][2]
    print(f"workload: {workload}; user-space instructions per request under callgrind, 4 connections\n")
    print("| target | requests counted | instructions per request | bare proxy's / this one's |")
    print("|---|---:|---:|---:|")
    for name, total, requests in rows:
        per = total / requests
        print(f"| {name} | {requests:,} | {per:,.0f} | {bare / per:.2f}x |")
    return 0


def redis_reachable() -> bool:
    from urllib.parse import urlsplit

    parts = urlsplit(REDIS_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=1):
            return True
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="connections for the throughput run")
    parser.add_argument("--workload", choices=["post", "get"], default="post")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="taskset the proxies onto the last CPU and wrk and the upstream onto the others",
    )
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="count user-space instructions per request under callgrind instead of timing (needs valgrind)",
    )
    parser.add_argument("--serve", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        if args.serve[0] == "upstream":
            serve_upstream(int(args.serve[1]))
        else:
            serve_bare_proxy(int(args.serve[1]), args.serve[2], tuned_gc=args.serve[0] == "bare-proxy-gc")
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-gateway-"))
    script = workdir / "workload.lua"
    template = POST_SCRIPT if args.workload == "post" else GET_SCRIPT
    script.write_text(template % {"prefix": uuid.uuid4().hex[:12]})

    cpu_count = os.cpu_count() or 1
    proxy_cpus = str(cpu_count - 1) if args.pin and cpu_count > 1 else None
    other_cpus = f"0-{cpu_count - 2}" if proxy_cpus is not None else None
    upstream_port = free_port()
    upstream_process = start(
        pinned([sys.executable, __file__, "--serve", "upstream", str(upstream_port)], other_cpus),
        upstream_port,
    )
    upstream = f"http://127.0.0.1:{upstream_port}"
    targets: list[tuple[str, list[str]]] = [
        ("upstream alone", []),
        ("bare aiohttp proxy", [sys.executable, __file__, "--serve", "bare-proxy", "{port}", upstream]),
        (
            "bare aiohttp proxy, collector tuned as the gateway's",
            [sys.executable, __file__, "--serve", "bare-proxy-gc", "{port}", upstream],
        ),
    ]
    bastion = [sys.executable, "-m", "bastion", "gateway", "--port", "{port}", "--config"]
    targets.append(("gateway, no guards", [*bastion, str(gateway_config(upstream, workdir, "none"))]))
    targets.append(
        ("gateway, every guard, memory", [*bastion, str(gateway_config(upstream, workdir, "memory"))])
    )
    memory_logged = gateway_config(upstream, workdir, "memory", access_log=True)
    targets.append(("gateway, every guard, memory, access log", [*bastion, str(memory_logged)]))
    if redis_reachable():
        targets.append(
            ("gateway, every guard, Redis", [*bastion, str(gateway_config(upstream, workdir, "redis"))])
        )
    else:
        print(f"# Redis not reachable at {REDIS_URL}: the Redis row is skipped", file=sys.stderr)

    if args.instructions:
        try:
            return count_instructions(targets, script, args.duration, args.workload)
        finally:
            stop(upstream_process)

    # Every target runs at once and the wrk runs take turns, round after round, so that
    # load from elsewhere on the machine falls on all of them alike; medians are reported.
    ports: dict[str, int] = {}
    pids: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = [upstream_process]
    results: dict[str, tuple[WrkResult, WrkResult]] = {}
    try:
        for name, command in targets:
            if not command:
                ports[name] = upstream_port
                pids[name] = upstream_process.pid
                continue
            port = free_port()
            processes.append(
                start(pinned([part.replace("{port}", str(port)) for part in command], proxy_cpus), port)
            )
            ports[name] = port
            pids[name] = processes[-1].pid
        for port in ports.values():
            wrk(port, script, 4, 1.0, None, other_cpus)  # warm-up: pools, caches, first-request start-up
        loads: dict[str, list[WrkResult]] = {name: [] for name in ports}
        idles: dict[str, list[WrkResult]] = {name: [] for name in ports}
        for round_number in range(args.rounds):
            for name, port in ports.items():
                loads[name].append(wrk(port, script, args.connections, args.duration, pids[name], other_cpus))
                idles[name].append(wrk(port, script, 1, args.duration, None, other_cpus))
                print(
                    f"# round {round_number + 1}, {name}: {loads[name][-1].rps:.0f} req/s, "
                    f"p50 {idles[name][-1].p50_ms:.3f} ms at one connection",
                    file=sys.stderr,
                )
        for name in ports:
            results[name] = (median_result(loads[name]), median_result(idles[name]))
    finally:
        for process in reversed(processes):
            stop(process)

    bare_rps = results["bare aiohttp proxy"][0].rps
    bare_p50 = results["bare aiohttp proxy"][1].p50_ms
    up_p50 = results["upstream alone"][1].p50_ms
    workload = (
        "POST /orders, JSON body, fresh Idempotency-Key" if args.workload == "post" else "GET /items/{id}"
    )
    print(
        f"workload: {workload}; throughput with {args.connections} connections, latency with 1; "
        f"{args.duration:.0f} s per run, median of {args.rounds} interleaved rounds; wrk -t1; "
        + ("proxies pinned to their own CPU, wrk and upstream to the rest; " if proxy_cpus else "")
        + f"{os.cpu_count()} CPUs shared by wrk, upstream, proxy "
        "and other work on the machine\n"
    )
    bare_cpu = results["bare aiohttp proxy"][0].cpu_us
    print(
        "| target | req/s | vs bare proxy | CPU per request (us) | capacity vs bare proxy "
        "| p50 at 1 conn (ms) | p50 added vs bare proxy | p50 added vs upstream alone | non-2xx |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, (load, idle) in results.items():
        added = "" if name == "upstream alone" else f"{idle.p50_ms - bare_p50:+.3f} ms"
        hop = "" if name == "upstream alone" else f"{idle.p50_ms - up_p50:+.3f} ms"
        capacity = "" if name == "upstream alone" else f"{bare_cpu / load.cpu_us:.2f}x"
        print(
            f"| {name} | {load.rps:,.0f} | {load.rps / bare_rps:.2f}x | {load.cpu_us:,.0f} | {capacity} "
            f"| {idle.p50_ms:.3f} | {added} | {hop} | {load.errors + idle.errors} |"
        )
    print(
        f"\n(the bare proxy itself adds {bare_p50 - up_p50:+.3f} ms p50 over the upstream alone. CPU per "
        "request is the measured process's user + system time over the throughput run divided by its "
        "requests: it drifts far less than req/s on a shared machine; capacity is its inverse ratio, "
        "the throughput each would reach on a core of its own.)"
    )
    # Each round's ratio to the bare proxy's run of the same round: a slow spell of the
    # machine falls on both runs of a pair more often than on two medians.
    bare_runs = loads["bare aiohttp proxy"]
    print("\nreq/s against the bare proxy's run of the same round (median, lowest, highest):")
    for name in results:
        if name in ("upstream alone", "bare aiohttp proxy"):
            continue
        ratios = sorted(run.rps / bare.rps for run, bare in zip(loads[name], bare_runs, strict=True))
        print(f"- {name}: {statistics.median(ratios):.2f}x ({ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    memory = results.get("gateway, every guard, memory")
    if memory is not None:
        ratio = memory[0].rps / bare_rps
        capacity = bare_cpu / memory[0].cpu_us
        added = memory[1].p50_ms - bare_p50
        verdict = "within" if min(ratio, capacity) >= 0.85 and added <= 0.5 else "OUTSIDE"
        print(
            f"budget (>= 0.85x bare proxy throughput, <= 0.5 ms added p50), every guard on memory: "
            f"{ratio:.2f}x req/s, {capacity:.2f}x by CPU per request, {added:+.3f} ms p50: {verdict}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
