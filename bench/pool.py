"""CPU per proxied request: the gateway's own upstream pool beside aiohttp's, side by side in one run.

    .venv/bin/python bench/pool.py [--requests 20000] [--rounds 3] [--concurrency 32] [--uvloop]

An aiohttp.web upstream runs in a separate process (its CPU is not counted); this
process sends ``--requests`` GETs and 1 KiB POSTs through each transport, one at a
time and from ``--concurrency`` tasks at once, and reads every response whole, the
way the proxy does (``readany`` until ``at_eof``, then ``release``). CPU is this
process's ``time.process_time`` over a run, per request, in microseconds. The
transports take turns in every round; medians of the rounds are reported, with the
pool's CPU as a share of aiohttp's (the direct path of
:class:`~bastion.gateway.upstream.UpstreamClient`, what the gateway uses today).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

from yarl import URL  # noqa: E402

from bastion.config.gateway import GatewayConfig  # noqa: E402
from bastion.gateway.pool import UpstreamPool  # noqa: E402
from bastion.gateway.upstream import UpstreamClient  # noqa: E402

#: What the gateway typically sends upstream besides the host (forwarding and tracing headers).
HEADERS = [
    ("User-Agent", "bench/1"),
    ("Accept", "application/json"),
    ("X-Forwarded-For", "203.0.113.7"),
    ("X-Forwarded-Proto", "http"),
    ("X-Forwarded-Host", "api.example.com"),
    ("Forwarded", "for=203.0.113.7;proto=http;host=api.example.com"),
    ("X-Request-ID", "0b8f6a3e-7f43-4a39-9a0e-5a0f3c6d1e2b"),
    ("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
]
BODY = b'{"item": "' + b"x" * 1000 + b'"}'
POST_HEADERS = [*HEADERS, ("Content-Type", "application/json")]


def serve(port: int) -> None:
    """The upstream: a JSON answer to GET, the body's size to POST (aiohttp.web, access log off)."""
    from aiohttp import web

    answer = b'{"id": 42, "name": "book", "price": 12.5, "tags": ["a", "b"]}'

    async def get(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    async def post(request: web.Request) -> web.Response:
        body = await request.read()
        return web.Response(body=b'{"size": %d}' % len(body), content_type="application/json")

    app = web.Application()
    app.router.add_get("/items/42", get)
    app.router.add_post("/orders", post)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


async def one(transport: Any, method: str, url: URL, headers: list[tuple[str, str]], data: Any) -> int:
    response = await transport.send(method, url, headers, data)
    size = 0
    try:
        content = response.content
        while True:
            size += len(await content.readany())
            if content.at_eof():
                break
    finally:
        response.release()
    assert response.status == 200, response.status
    return size


async def run(transport: Any, method: str, url: URL, requests: int, concurrency: int) -> float:
    """CPU microseconds per request for ``requests`` requests from ``concurrency`` tasks."""
    headers = POST_HEADERS if method == "POST" else HEADERS
    data = BODY if method == "POST" else None

    async def worker(count: int) -> None:
        for _ in range(count):
            await one(transport, method, url, headers, data)

    await worker(200)  # warm: connections open, code paths hot
    started = time.process_time()
    share, extra = divmod(requests, concurrency)
    await asyncio.gather(*(worker(share + (i < extra)) for i in range(concurrency)))
    return (time.process_time() - started) / requests * 1e6


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_for_port(port: int, seconds: float = 15) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise SystemExit(f"the upstream did not listen on {port} within {seconds} s")


async def bench(args: argparse.Namespace, port: int) -> None:
    await wait_for_port(port)
    base = URL(f"http://127.0.0.1:{port}")
    config = GatewayConfig()
    transports: dict[str, Any] = {"pool": UpstreamPool(config), "aiohttp": UpstreamClient(config)}
    for transport in transports.values():
        await transport.start()
    workloads = [
        ("GET sequential", "GET", base / "items" / "42", 1),
        (f"GET x{args.concurrency}", "GET", base / "items" / "42", args.concurrency),
        ("POST 1 KiB sequential", "POST", base / "orders", 1),
        (f"POST 1 KiB x{args.concurrency}", "POST", base / "orders", args.concurrency),
    ]
    results: dict[tuple[str, str], list[float]] = {}
    try:
        for _ in range(args.rounds):
            for label, method, url, concurrency in workloads:
                for name, transport in transports.items():
                    cpu = await run(transport, method, url, args.requests, concurrency)
                    results.setdefault((label, name), []).append(cpu)
    finally:
        for transport in transports.values():
            await transport.close()
    loop = "uvloop" if args.uvloop else "asyncio"
    print(f"CPU us per request, median of {args.rounds} rounds of {args.requests} requests ({loop})")
    print(f"{'workload':<24}{'pool':>10}{'aiohttp':>10}{'pool/aiohttp':>14}")
    for label, *_ in workloads:
        pool = statistics.median(results[(label, "pool")])
        aio = statistics.median(results[(label, "aiohttp")])
        print(f"{label:<24}{pool:>10.1f}{aio:>10.1f}{pool / aio:>14.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=20_000, help="requests per run")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; medians are reported")
    parser.add_argument("--concurrency", type=int, default=32, help="tasks of the concurrent runs")
    parser.add_argument("--uvloop", action="store_true", help="run the client on uvloop")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    upstream = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
    try:
        if args.uvloop:
            import uvloop

            uvloop.run(bench(args, port))
        else:
            asyncio.run(bench(args, port))
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


if __name__ == "__main__":
    main()
