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

import itertools
import tempfile
import uuid

import yaml
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


async def whole_chain() -> None:
    spec = Path(tempfile.mkdtemp(prefix="bastion-bench-chain-")) / "openapi.yaml"
    spec.write_text(yaml.safe_dump(ORDERS))
    quiet = {"store": "memory://", "logging": {"access": False}}
    chain = {
        **quiet,
        "openapi": str(spec),
        "rate_limits": {"rules": [{"name": "per-client", "key": "client", "limit": "1000000/second"}]},
    }
    apps = {
        "bare Starlette": starlette_app(),
        "bastion: boundary only (no description, idempotency off)": Bastion(
            starlette_app(), {**quiet, "idempotency": {"enabled": False}}, env={}, log_stream=io.BytesIO()
        ),
        "bastion: every guard (route, 1 rate limit rule, validation, idempotency), memory": Bastion(
            starlette_app(), chain, env={}, log_stream=io.BytesIO()
        ),
    }
    results = await compare(apps, post_requests(), expect=201)
    rows = list(results.items())
    print("## Whole chain (POST /orders, new Idempotency-Key each, memory stores, in-process ASGI)\n")
    print(table(rows, rows[0][1]))
    print()


def main() -> None:
    asyncio.run(foundation())
    asyncio.run(whole_chain())


if __name__ == "__main__":
    main()
