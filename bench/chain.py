"""What bastion's guard chain adds per request, in-process, beside a bare Starlette app.

    .venv/bin/python bench/chain.py

Part 1 (foundation): the boundary guard (trace ids, problems, metrics) with and
without the access log. Part 2 (whole chain, when the guards are present): a POST
through route + client, rate limits, validation and idempotency on memory stores,
beside slowapi and asgi-idempotency-header doing a part of that work.
"""

from __future__ import annotations

import asyncio
import io
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from asgi_driver import compare, make_scope
from bastion import Bastion


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


def table(rows: list[tuple[str, float]], base: float) -> str:
    lines = ["| configuration | us per request (median) | added vs bare |", "|---|---:|---:|"]
    for name, us in rows:
        lines.append(f"| {name} | {us:.2f} | {us - base:+.2f} us |")
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
        "bastion: errors + trace + metrics + access log": logged,
    }
    results = await compare(apps, get_request, expect=200)
    rows = list(results.items())
    print("## Boundary guard (GET, in-process ASGI)\n")
    print(table(rows, rows[0][1]))
    print()


def main() -> None:
    asyncio.run(foundation())


if __name__ == "__main__":
    main()
