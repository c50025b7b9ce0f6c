"""The gateway beside nginx, a bare aiohttp proxy and the upstream alone, driven by wrk on loopback.

    .venv/bin/python bench/gateway.py [--duration 3] [--rounds 3] [--connections 64]
                                      [--workload both|post|get] [--workers 1 [2 ...]] [--quick]
                                      [--only TEXT ...] [--pin] [--instructions]

Targets, all in one run: the upstream alone (aiohttp.web); nginx as a plain
reverse proxy (Debian package ``nginx``: one worker process, a keepalive upstream
pool, access log off, and again with its access log written to /dev/null); a bare
aiohttp proxy (aiohttp.web + ClientSession, nothing else); the floor of a Python
proxy (``bench/floor_proxy.py``: llhttp both sides on uvloop, no ASGI, no guard);
``bastion gateway`` with no guards; with every guard on memory stores (route + client, rate limits,
OpenAPI validation, idempotency, metrics), with its access log too; and the same
on Redis. Each target gets a throughput run (``--connections`` connections) and a
low-load latency run (one connection), both with wrk (Debian package ``wrk``).

``--workers N`` runs the gateway targets with N worker processes; more than one
value adds a Redis every-guard target per further value, so ``--workers 1 2``
measures scale-out in the same run. CPU per request is the user + system time of
every process of a target (nginx's master and worker, the gateway's supervisor and
workers) over the throughput run, divided by the requests wrk completed.

The ``post`` workload is ``POST /orders`` with a JSON body and a fresh
``Idempotency-Key`` per request, so every guard does its full work; ``get`` sends
``GET /items/{id}``; ``both`` (the default) runs the two against the same
processes. Numbers on a shared machine drift: read the ratios.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
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


NGINX_CONF = """worker_processes 1;
pid %(prefix)s/nginx.pid;
error_log %(prefix)s/error.log warn;
events { worker_connections 4096; }
http {
    access_log %(access_log)s;
    client_body_temp_path %(prefix)s/client_body;
    proxy_temp_path %(prefix)s/proxy;
    fastcgi_temp_path %(prefix)s/fastcgi;
    uwsgi_temp_path %(prefix)s/uwsgi;
    scgi_temp_path %(prefix)s/scgi;
    # wrk's connections and the pool's stay open for the whole run, as with the
    # other proxies (nginx closes a connection after 1,000 requests by default).
    keepalive_requests 1000000;
    upstream backend {
        server 127.0.0.1:%(upstream_port)d;
        keepalive 64;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
"""


def nginx_config(port: int, upstream_port: int, prefix: Path, *, access_log: bool = False) -> Path:
    """Write nginx's configuration as a plain keepalive reverse proxy into ``prefix``; return its path.

    One worker process. The access log is off, or written to /dev/null in nginx's
    default format: the gateway's access log goes to standard error, which the bench
    sends to /dev/null too, so both pay for formatting and writing a line, not a disk.
    """
    prefix.mkdir(parents=True, exist_ok=True)
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF
        % {
            "prefix": prefix,
            "port": port,
            "upstream_port": upstream_port,
            "access_log": "/dev/null" if access_log else "off",
        }
    )
    return conf


def nginx_command(conf: Path, *extra: str) -> list[str]:
    """nginx run in the foreground on ``conf``, every path it writes in the configuration's directory."""
    prefix = conf.parent
    return [
        "nginx",
        *extra,
        "-c",
        str(conf),
        "-p",
        str(prefix),
        "-e",
        str(prefix / "error.log"),
        "-g",
        "daemon off;",
    ]


def serve_nginx(port: int, upstream_port: int, prefix: Path, access_log: bool) -> None:
    """Become nginx (exec), so that the measured process is nginx's master."""
    conf = nginx_config(port, upstream_port, prefix, access_log=access_log)
    os.execvp("nginx", nginx_command(conf))


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


def gateway_config(
    upstream: str,
    workdir: Path,
    guards: str,
    *,
    access_log: bool = False,
    workers: int = 1,
    server: str = "bastion",
) -> Path:
    """``none``: no guards; ``memory`` / ``redis``: every guard on that store.

    The access log is off unless asked for: the bare proxy logs nothing either, and
    its line per request is a cost of logging, not of the guards (one row shows it).
    ``server`` is ``gateway.server``: the gateway's own HTTP machinery or uvicorn's and aiohttp's.
    """
    config: dict[str, Any] = {
        "upstream": upstream,
        "store": "memory://",
        "gateway": {"workers": workers, "server": server},
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
    path = workdir / f"gateway-{guards}{'-access' if access_log else ''}-{workers}-{server}.yaml"
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
    #: CPU time the measured target's processes spent per request, in microseconds.
    cpu_us: float = 0.0
    #: CPU seconds per second of the run (cores busy) of wrk and of each watched process.
    cores: dict[str, float] = field(default_factory=dict)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (nginx's worker, the gateway's workers), from /proc."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone while being read
        parents.setdefault(ppid, []).append(int(stat.parent.name))
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(parents.get(current, []))
    return tree


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time so far of a process and its descendants (from /proc), in seconds."""
    total = 0
    for member in process_tree(pid):
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_cpu_seconds() -> float:
    """Busy CPU time of the whole machine so far (every core, every process, from /proc/stat)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """User plus system CPU time of this process's waited-for children (wrk's share)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wrk(
    port: int,
    script: Path,
    connections: int,
    duration: float,
    pid: int | None = None,
    cpus: str | None = None,
    watch: dict[str, int] | None = None,
) -> WrkResult:
    watched = dict(watch or {})
    if pid is not None:
        watched["target"] = pid
    before = {name: cpu_seconds(member) for name, member in watched.items()}
    wrk_before = children_cpu_seconds()
    machine_before = machine_cpu_seconds()
    started = time.monotonic()
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
    wall = time.monotonic() - started
    spent = {name: cpu_seconds(member) - before[name] for name, member in watched.items()}
    spent["wrk"] = children_cpu_seconds() - wrk_before
    spent["machine"] = machine_cpu_seconds() - machine_before
    rps = _RPS_RE.search(out)
    p50 = _LATENCY_RE.search(out)
    if rps is None or p50 is None:
        raise RuntimeError("cannot read wrk's output:\n" + out)
    errors = _NON_2XX_RE.search(out)
    requests = _REQUESTS_RE.search(out)
    count = int(requests.group(1)) if requests else 0
    cpu_us = spent["target"] * 1e6 / count if pid is not None and count else 0.0
    return WrkResult(
        float(rps.group(1)),
        float(p50.group(1)) * _SCALE[p50.group(2)],
        int(errors.group(1)) if errors else 0,
        count,
        cpu_us,
        {name: seconds / wall for name, seconds in spent.items()},
    )


def median_result(runs: list[WrkResult]) -> WrkResult:
    """The median throughput, p50, CPU per request and cores of several runs of one target."""
    return WrkResult(
        statistics.median(r.rps for r in runs),
        statistics.median(r.p50_ms for r in runs),
        sum(r.errors for r in runs),
        sum(r.requests for r in runs),
        statistics.median(r.cpu_us for r in runs),
        {name: statistics.median(r.cores.get(name, 0.0) for r in runs) for name in runs[0].cores},
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


def redis_pid() -> int | None:
    """The local redis-server serving ``REDIS_URL``, to report the cores it uses (None if not here)."""
    from urllib.parse import urlsplit

    port = f":{urlsplit(REDIS_URL).port or 6379}"
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].startswith(b"redis-server") and port.encode() in args[0]:
            return int(cmdline.parent.name)
    return None


NGINX = "nginx"
NGINX_LOGGED = "nginx, access log to /dev/null"
BARE = "bare aiohttp proxy"
EVERY_MEMORY = "gateway, every guard, memory"
EVERY_REDIS = "gateway, every guard, Redis"
WORKLOADS = {"get": "GET /items/{id}", "post": "POST /orders, JSON body, fresh Idempotency-Key"}


#: The least a Python proxy that parses both sides can cost here (bench/floor_proxy.py).
FLOOR = "python floor: llhttp both sides, nothing else"


def build_targets(upstream_port: int, workdir: Path, workers: list[int]) -> list[tuple[str, list[str]]]:
    """Every target's name and command (``{port}`` stands for the port it listens on)."""
    upstream = f"http://127.0.0.1:{upstream_port}"
    targets: list[tuple[str, list[str]]] = [("upstream alone", [])]
    if shutil.which("nginx") is not None:
        for name, logged in ((NGINX, "off"), (NGINX_LOGGED, "on")):
            prefix = workdir / f"nginx-{logged}"
            serve = [
                sys.executable,
                __file__,
                "--serve",
                "nginx",
                "{port}",
                str(upstream_port),
                str(prefix),
                logged,
            ]
            targets.append((name, serve))
    else:
        print(
            "# nginx is not installed (apt-get install -y nginx): ratios are to the bare proxy",
            file=sys.stderr,
        )
    targets.append((BARE, [sys.executable, __file__, "--serve", "bare-proxy", "{port}", upstream]))
    targets.append(
        (
            "bare aiohttp proxy, collector tuned as the gateway's",
            [sys.executable, __file__, "--serve", "bare-proxy-gc", "{port}", upstream],
        )
    )
    floor = Path(__file__).with_name("floor_proxy.py")
    targets.append((FLOOR, [sys.executable, str(floor), "{port}", str(upstream_port)]))
    first = workers[0]

    def gateway(
        name: str, guards: str, count: int, *, access_log: bool = False, server: str = "bastion"
    ) -> None:
        config = gateway_config(
            upstream, workdir, guards, access_log=access_log, workers=count, server=server
        )
        command = [sys.executable, "-m", "bastion", "gateway", "--port", "{port}", "--config", str(config)]
        if count > 1 and guards == "memory":
            # Each worker keeps its own limits and keys; the limits here never bind.
            command.append("--allow-per-process-state")
        targets.append((name if count == 1 else f"{name}, {count} workers", command))

    gateway("gateway, no guards", "none", first)
    gateway("gateway, no guards, server: uvicorn", "none", first, server="uvicorn")
    gateway(EVERY_MEMORY, "memory", first)
    gateway(f"{EVERY_MEMORY}, server: uvicorn", "memory", first, server="uvicorn")
    gateway(f"{EVERY_MEMORY}, access log", "memory", first, access_log=True)
    if redis_reachable():
        for count in dict.fromkeys(workers):
            gateway(EVERY_REDIS, "redis", count)
    else:
        print(f"# Redis not reachable at {REDIS_URL}: the Redis rows are skipped", file=sys.stderr)
    return targets


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64, help="connections for the throughput run")
    parser.add_argument("--workload", choices=["both", "post", "get"], default="both")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="gateway worker processes; each further value adds a Redis every-guard target with that many",
    )
    parser.add_argument("--quick", action="store_true", help="one round of 1 s runs: a smoke test")
    parser.add_argument(
        "--only",
        nargs="+",
        metavar="TEXT",
        help="run only the targets whose name contains one of these (nginx is kept as the reference)",
    )
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
    if args.quick:
        args.duration, args.rounds = 1.0, 1
    return args


def serve(role: list[str]) -> None:
    """Run one peer in this process (the bench starts itself with ``--serve``)."""
    if role[0] == "upstream":
        serve_upstream(int(role[1]))
    elif role[0] == "nginx":
        serve_nginx(int(role[1]), int(role[2]), Path(role[3]), role[4] == "on")
    else:
        serve_bare_proxy(int(role[1]), role[2], tuned_gc=role[0] == "bare-proxy-gc")


def main() -> int:
    args = parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    if shutil.which("wrk") is None:
        print("wrk is not installed: apt-get install -y wrk", file=sys.stderr)
        return 2

    workdir = Path(tempfile.mkdtemp(prefix="bastion-bench-gateway-"))
    workloads = ["get", "post"] if args.workload == "both" else [args.workload]
    scripts: dict[str, Path] = {}
    for workload in workloads:
        scripts[workload] = workdir / f"{workload}.lua"
        template = POST_SCRIPT if workload == "post" else GET_SCRIPT
        scripts[workload].write_text(template % {"prefix": uuid.uuid4().hex[:12]})

    cpu_count = os.cpu_count() or 1
    proxy_cpus = str(cpu_count - 1) if args.pin and cpu_count > 1 else None
    other_cpus = f"0-{cpu_count - 2}" if proxy_cpus is not None else None
    upstream_port = free_port()
    upstream_process = start(
        pinned([sys.executable, __file__, "--serve", "upstream", str(upstream_port)], other_cpus),
        upstream_port,
    )
    targets = build_targets(upstream_port, workdir, args.workers)
    if args.only:
        targets = [t for t in targets if t[0] == NGINX or any(text in t[0] for text in args.only)]

    if args.instructions:
        try:
            return max(
                count_instructions(targets, scripts[w], args.duration, WORKLOADS[w]) for w in workloads
            )
        finally:
            stop(upstream_process)

    watch = {"upstream": upstream_process.pid}
    redis = redis_pid()
    if redis is not None:
        watch["Redis"] = redis
    # Every target runs at once and the wrk runs take turns, round after round, so that
    # load from elsewhere on the machine falls on all of them alike; medians are reported.
    ports: dict[str, int] = {}
    pids: dict[str, int] = {}
    processes: list[subprocess.Popen[bytes]] = [upstream_process]
    loads: dict[str, dict[str, list[WrkResult]]] = {w: {} for w in workloads}
    results: dict[str, dict[str, tuple[WrkResult, WrkResult]]] = {w: {} for w in workloads}
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
        for workload in workloads:
            script = scripts[workload]
            for port in ports.values():
                wrk(port, script, 4, 1.0, None, other_cpus)  # warm-up: pools, caches, workers started
            loads[workload] = {name: [] for name in ports}
            idles: dict[str, list[WrkResult]] = {name: [] for name in ports}
            for round_number in range(args.rounds):
                for name, port in ports.items():
                    load = wrk(port, script, args.connections, args.duration, pids[name], other_cpus, watch)
                    loads[workload][name].append(load)
                    idles[name].append(wrk(port, script, 1, args.duration, None, other_cpus))
                    print(
                        f"# {workload} round {round_number + 1}, {name}: {load.rps:.0f} req/s, "
                        f"{load.cpu_us:.0f} us CPU per request, "
                        f"p50 {idles[name][-1].p50_ms:.3f} ms at one connection",
                        file=sys.stderr,
                    )
            for name in ports:
                results[workload][name] = (median_result(loads[workload][name]), median_result(idles[name]))
    finally:
        for process in reversed(processes):
            stop(process)

    report(args, workloads, results, loads, proxy_cpus is not None)
    return 0


def report(
    args: argparse.Namespace,
    workloads: list[str],
    results: dict[str, dict[str, tuple[WrkResult, WrkResult]]],
    loads: dict[str, dict[str, list[WrkResult]]],
    pinned_proxies: bool,
) -> None:
    """Print the table (ratios to nginx), the per-round ratios, the budget and scale-out."""
    names = list(results[workloads[0]])
    ref = next((name for name in (NGINX, BARE) if name in names), names[0])
    print(
        f"workloads: {'; '.join(f'{w.upper()} = {WORKLOADS[w]}' for w in workloads)}. Throughput with "
        f"{args.connections} connections, p50 with 1; {args.duration:.0f} s per run, median of "
        f"{args.rounds} interleaved rounds; wrk -t1; "
        + ("proxies pinned to their own CPU, wrk and upstream to the rest; " if pinned_proxies else "")
        + f"{os.cpu_count()} CPUs shared by wrk, upstream, Redis, proxy and other work on the machine. "
        f"Ratios are to {ref}.\n"
    )
    header = "| target |"
    rule = "|---|"
    for w in workloads:
        header += f" {w.upper()} req/s | {w.upper()} CPU us/req | {w.upper()} p50 ms |"
        rule += "---:|---:|---:|"
    print(header + " non-2xx |")
    print(rule + "---:|")
    for name in names:
        row = f"| {name} |"
        errors = 0
        for w in workloads:
            load, idle = results[w][name]
            base_load, base_idle = results[w][ref]
            row += (
                f" {load.rps:,.0f} ({load.rps / base_load.rps:.2f}x) |"
                f" {load.cpu_us:,.0f} ({load.cpu_us / base_load.cpu_us:.2f}x) |"
                f" {idle.p50_ms:.3f} ({idle.p50_ms - base_idle.p50_ms:+.3f}) |"
            )
            errors += load.errors + idle.errors
        print(f"{row} {errors} |")
    print(
        "\n(CPU per request: user + system time of the target's processes over the throughput run, "
        "divided by the requests wrk completed; it drifts far less than req/s on a shared machine. "
        "In brackets: the ratio to, or the p50 difference from, the reference.)"
    )
    # Each round's ratio to the reference's run of the same round: a slow spell of the
    # machine falls on both runs of a pair more often than on two medians.
    for w in workloads:
        print(
            f"\n{w.upper()}: CPU per request against {ref}'s run of the same round (median, lowest, highest):"
        )
        for name in names:
            if name in ("upstream alone", ref):
                continue
            rounds = zip(loads[w][name], loads[w][ref], strict=True)
            ratios = sorted(run.cpu_us / base.cpu_us for run, base in rounds)
            print(f"- {name}: {statistics.median(ratios):.2f}x ({ratios[0]:.2f}x to {ratios[-1]:.2f}x)")
    if ref == NGINX:
        print("\nbudget (every guard: <= 3x nginx's CPU per request, p50 at one connection within 0.2 ms):")
        pairs = [(EVERY_MEMORY, NGINX), (f"{EVERY_MEMORY}, access log", NGINX_LOGGED), (EVERY_REDIS, NGINX)]
        for w in workloads:
            for name, base in pairs:
                if name not in results[w] or base not in results[w]:
                    continue
                cpu = results[w][name][0].cpu_us / results[w][base][0].cpu_us
                added = results[w][name][1].p50_ms - results[w][base][1].p50_ms
                verdict = "met" if cpu <= 3.0 and added <= 0.2 else "NOT met"
                print(f"- {w.upper()}, {name} against {base}: {cpu:.2f}x CPU, {added:+.3f} ms p50: {verdict}")
    scaled = [name for name in names if name.startswith(f"{EVERY_REDIS}, ")]
    if EVERY_REDIS in names and scaled:
        print("\nscale-out, every guard on Redis (cores busy during the throughput run, medians):")
        for w in workloads:
            for name in [EVERY_REDIS, *scaled]:
                load = results[w][name][0]
                ratio = load.rps / results[w][EVERY_REDIS][0].rps
                cores = dict(load.cores)
                machine = cores.pop("machine", 0.0)
                busy = ", ".join(f"{part} {value:.2f}" for part, value in cores.items())
                print(
                    f"- {w.upper()}, {name}: {load.rps:,.0f} req/s ({ratio:.2f}x one worker); "
                    f"cores busy: {busy}, everything else {machine - sum(cores.values()):.2f}; "
                    f"the machine {machine:.2f} of {os.cpu_count()}"
                )


if __name__ == "__main__":
    raise SystemExit(main())
