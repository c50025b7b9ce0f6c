"""What bastion's guard chain adds per request, in-process, beside a bare Starlette app.

    .venv/bin/python bench/chain.py

Part 1 (foundation): the boundary guard (trace ids, problems, metrics) with and
without the access log. Part 2 (whole chain, when the guards are present): a POST
through route + client, rate limits, validation and idempotency on memory stores,
beside slowapi's one rate limit, with standard error a pipe that another process
reads (as under systemd, Docker or a log shipper): bastion's default configuration,
access log on, to that pipe. Part 3: what one access line costs the request's
thread, by the ways of writing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

sys.path.insert(0, str(Path(__file__).parent))

import itertools
import tempfile
import uuid

import orjson
import yaml
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asgi_driver import compare, make_scope
from bastion import Bastion
from bastion.observability.logging import AccessLog
from bastion.observability.logwriter import flush_writers


async def get_item(request: Request) -> Response:
    return Response(b'{"ok":true}', media_type="application/json")


async def post_order(request: Request) -> Response:
    body = await request.body()
    return Response(body, status_code=201, media_type="application/json")


def starlette_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/items/{id}", get_item, methods=["GET"]),
            Route("/orders", post_order, methods=["POST"]),
        ]
    )


def get_request(i: int) -> tuple[dict[str, Any], bytes]:
    return make_scope("GET", f"/items/{i % 100}", [(b"host", b"bench")]), b""


def table(rows: list[tuple[str, float]], base: float, ratio_to: str | None = None) -> str:
    reference = dict(rows).get(ratio_to) if ratio_to is not None else None
    if reference is None:
        lines = ["| configuration | us per request (median) | added vs bare |", "|---|---:|---:|"]
        for name, us in rows:
            lines.append(f"| {name} | {us:.2f} | {us - base:+.2f} us |")
        return "\n".join(lines)
    lines = [
        f"| configuration | us per request (median) | added vs bare | added vs {ratio_to}'s |",
        "|---|---:|---:|---:|",
    ]
    for name, us in rows:
        ratio = f"{(us - base) / (reference - base):.2f}x" if name != rows[0][0] else ""
        lines.append(f"| {name} | {us:.2f} | {us - base:+.2f} us | {ratio} |")
    return "\n".join(lines)


async def foundation() -> None:
    bare = starlette_app()
    quiet = Bastion(
        starlette_app(), {"store": "memory://", "logging": {"access": False}}, env={}, log_stream=io.BytesIO()
    )
    logged = Bastion(starlette_app(), {"store": "memory://"}, env={}, log_stream=io.BytesIO())
    no_metrics = Bastion(
        starlette_app(),
        {"store": "memory://", "logging": {"access": False}, "metrics": {"enabled": False}},
        env={},
        log_stream=io.BytesIO(),
    )
    apps = {
        "bare Starlette": bare,
        "bastion: errors + trace": no_metrics,
        "bastion: errors + trace + metrics": quiet,
        "bastion: errors + trace + metrics + access log (to memory, in place)": logged,
    }
    results = await compare(apps, get_request, expect=200)
    rows = list(results.items())
    print("## Boundary guard (GET, in-process ASGI)\n")
    print(table(rows, rows[0][1]))
    print()


ORDERS = {
    "openapi": "3.1.0",
    "info": {"title": "chain benchmark", "version": "1"},
    "paths": {
        "/orders": {
            "post": {
                "operationId": "createOrder",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["item", "quantity"],
                                "additionalProperties": False,
                                "properties": {
                                    "item": {"type": "string", "maxLength": 64},
                                    "quantity": {"type": "integer", "minimum": 1, "maximum": 100},
                                },
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "created"}},
            }
        }
    },
}
ORDER = b'{"item":"book","quantity":2}'


def post_requests() -> Any:
    """POST /orders with a JSON body, an API key and a new Idempotency-Key each time."""
    counter = itertools.count()
    run = uuid.uuid4().hex[:8]

    def make(_: int) -> tuple[dict[str, Any], bytes]:
        headers = [
            (b"host", b"bench"),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(ORDER)).encode()),
            (b"x-api-key", b"bench-client"),
            (b"idempotency-key", f"{run}-{next(counter)}".encode()),
        ]
        return make_scope("POST", "/orders", headers), ORDER

    return make


class InPlace:
    """Standard error without a file number: bastion writes each line at once, on the request's thread.

    What every line cost before the log writer, measured in the same run.
    """

    def write(self, data: bytes) -> int:
        return sys.stderr.buffer.write(data)

    def flush(self) -> None:
        sys.stderr.buffer.flush()


@contextlib.contextmanager
def stderr_to_a_pipe() -> Iterator[None]:
    """Standard error (file descriptor 2) a pipe that another process reads, as under systemd or Docker."""
    reader = subprocess.Popen(["cat"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert reader.stdin is not None
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(reader.stdin.fileno(), 2)
    try:
        yield
    finally:
        flush_writers()
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        reader.stdin.close()
        reader.wait(timeout=30)


def slowapi_app() -> Any:
    """The same Starlette app behind slowapi's middleware with one limit (never reached)."""
    from slowapi import Limiter
    from slowapi.middleware import SlowAPIASGIMiddleware
    from slowapi.util import get_remote_address

    app = starlette_app()
    app.state.limiter = Limiter(key_func=get_remote_address, default_limits=["1000000/second"])
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


async def whole_chain() -> None:
    spec = Path(tempfile.mkdtemp(prefix="bastion-bench-chain-")) / "openapi.yaml"
    spec.write_text(yaml.safe_dump(ORDERS))
    quiet = {"store": "memory://", "logging": {"access": False}}
    chain = {
        **quiet,
        "openapi": str(spec),
        "rate_limits": {"rules": [{"name": "per-client", "key": "client", "limit": "1000000/second"}]},
    }
    # bastion's default configuration: the access log on, to standard error.
    logged = {**chain, "logging": {"access": True}}
    apps = {"bare Starlette": starlette_app()}
    try:
        apps["slowapi (1 limit)"] = slowapi_app()
    except ImportError:
        print("(slowapi is not installed: pip install -e '.[bench]')\n")
    apps.update(
        {
            "bastion: boundary only (no description, idempotency off, no access log)": Bastion(
                starlette_app(), {**quiet, "idempotency": {"enabled": False}}, env={}, log_stream=io.BytesIO()
            ),
            "bastion: every guard (route, 1 rate limit, validation, idempotency), no access log": Bastion(
                starlette_app(), chain, env={}, log_stream=io.BytesIO()
            ),
            "bastion: every guard, access log to the pipe written in place (before the log writer)": Bastion(
                starlette_app(), logged, env={}, log_stream=cast(IO[bytes], InPlace())
            ),
            "bastion: every guard, access log to the pipe (default configuration)": Bastion(
                starlette_app(), logged, env={}
            ),
        }
    )
    print(
        "## Whole chain (POST /orders, new Idempotency-Key each, memory stores, in-process ASGI,"
        " standard error a pipe read by another process)\n"
    )
    # Wall time, then the process's CPU time: the log writer's thread counts in the second.
    for clock, what in ((time.perf_counter_ns, "wall time"), (time.process_time_ns, "CPU time")):
        results = await compare(apps, post_requests(), expect=201, clock=clock)
        rows = list(results.items())
        print(f"{what}:\n")
        print(table(rows, rows[0][1], ratio_to="slowapi (1 limit)"))
        print()


def line_cost() -> None:
    """Microseconds one access line costs the request's thread: in place, buffered, or handed over."""
    fields = {
        "method": "POST",
        "path": "/orders",
        "route": "/orders",
        "status": 201,
        "duration_ms": 0.123,
        "client": "key:bench-client",
        "trace_id": "0af7651916cd43dd8448eb211c80319c",
        "request_id": "0af7651916cd43dd8448eb211c80319c",
        "idempotency": "claimed",
    }
    buffer: list[bytes] = []

    def buffered(line: dict[str, Any]) -> None:
        # A buffered writer: rendered here, written by a timer every few milliseconds.
        line["event"] = "request"
        line["level"] = "info"
        line["ts"] = round(time.time(), 6)
        buffer.append(orjson.dumps(line, default=repr, option=orjson.OPT_APPEND_NEWLINE))
        if len(buffer) >= 1000:
            buffer.clear()

    queued = AccessLog()
    ways = {
        "rendered and written in place (before)": AccessLog(cast(IO[bytes], InPlace())).write,
        "rendered into a buffer (a buffered writer's part)": buffered,
        "handed to the log writer (a bounded queue and its thread)": queued.write,
    }
    lines, rounds = 2000, 15
    samples: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, write in ways.items():
            prepared = [dict(fields) for _ in range(lines)]
            start = time.perf_counter_ns()
            for line in prepared:
                write(line)
            samples[name].append((time.perf_counter_ns() - start) / lines / 1000)
            # Each way starts from an empty queue: the writer's thread catches up between them.
            flush_writers()
    before = statistics.median(samples["rendered and written in place (before)"])
    print("## One access line on the request's thread (standard error a pipe)\n")
    print("| way | us per line (median) | vs in place |", "|---|---:|---:|", sep="\n")
    for name, values in samples.items():
        us = statistics.median(values)
        print(f"| {name} | {us:.2f} | {us / before:.2f}x |")
    writer = queued.writer
    print(f"\nlines dropped by the writer: {writer.dropped if writer is not None else 'no writer'}\n")


def main() -> None:
    asyncio.run(foundation())
    with stderr_to_a_pipe():
        asyncio.run(whole_chain())
        line_cost()


if __name__ == "__main__":
    main()
