"""A deliberately naive API: no idempotency, tracebacks in 500 bodies, no limits, no validation.

It is what ``bastion probe`` must catch. ``guarded()`` is the same app behind
``bastion.Bastion`` with ``fixtures/naive_bastion.yaml`` (and the description
``fixtures/naive_openapi.yaml``), which must pass.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

FIXTURES = Path(__file__).parent / "fixtures"


def build_app() -> Starlette:
    """The naive app, with its own in-memory order list."""
    orders: dict[int, dict[str, Any]] = {}
    ids = itertools.count(1)

    async def create_order(request: Request) -> JSONResponse:
        body = json.loads(await request.body())  # malformed JSON: a traceback in the 500
        order = {"id": next(ids), "item": body["item"], "quantity": int(body["quantity"])}
        # Work takes a moment, so concurrent duplicates overlap, as they would in production.
        await asyncio.sleep(0.05)
        orders[order["id"]] = order
        return JSONResponse(order, status_code=201)

    async def list_orders(request: Request) -> JSONResponse:
        limit = int(request.query_params.get("limit", "10"))
        return JSONResponse({"orders": list(orders.values())[:limit]})

    async def get_order(request: Request) -> JSONResponse:
        order_id = int(request.path_params["order_id"])
        if order_id not in orders:
            return JSONResponse({"error": "not found"}, status_code=404)
        return JSONResponse(orders[order_id])

    async def health(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    return Starlette(
        # debug=True is the naive part: Starlette answers exceptions with the traceback.
        debug=True,
        routes=[
            Route("/orders", create_order, methods=["POST"]),
            Route("/orders", list_orders, methods=["GET"]),
            Route("/orders/{order_id}", get_order, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
    )


app = build_app()


def guarded() -> Any:
    """The naive app behind every bastion guard (a factory for ``uvicorn --factory``)."""
    from bastion import Bastion

    return Bastion(build_app(), FIXTURES / "naive_bastion.yaml", env={})
