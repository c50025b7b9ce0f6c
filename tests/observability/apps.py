"""A small Starlette app for the observability tests, in-process and under real servers.

``make_app()`` builds it behind bastion; ``uvicorn --factory
tests.observability.apps:from_environment`` serves it, configured by ``BASTION_...`` variables. The
``/guards/...`` endpoints count through ``bastion.metrics.counter`` exactly as the
guards do, so the dashboard can be shown every kind of counter it reads.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion import Bastion, ValidationFailed
from bastion.asgi import context_of
from bastion.observability import record_event

GUARD_COUNTERS: dict[str, tuple[str, list[str]]] = {
    "ratelimit": ("bastion_rate_limit_decisions_total", ["rule", "outcome"]),
    "validation": ("bastion_validation_failures_total", ["operation", "code"]),
    "idempotency": ("bastion_idempotency_events_total", ["event"]),
    "store": ("bastion_store_errors_total", ["store", "operation"]),
    "upstream": ("bastion_gateway_upstream_errors_total", ["kind"]),
}


def make_app(config: dict[str, Any] | None = None, **kwargs: Any) -> Bastion:
    """The test app behind bastion (memory store, no environment unless ``env`` is given)."""
    gate = asyncio.Event()
    holder: dict[str, Bastion] = {}

    async def item(request: Request) -> Response:
        record_event(context_of(request.scope), "test.item", {"test.id": request.path_params["item_id"]})
        return JSONResponse({"id": request.path_params["item_id"], "name": "widget"})

    async def orders(request: Request) -> Response:
        body = await request.body()
        return Response(body, status_code=201, media_type="application/json")

    async def boom(request: Request) -> Response:
        raise RuntimeError("secret internals")

    async def invalid(request: Request) -> Response:
        raise ValidationFailed(
            detail="2 problems",
            errors=[
                {"code": "INVALID_FORMAT", "in": "body", "pointer": "/email", "detail": "must be an email"},
                {"code": "OUT_OF_RANGE", "in": "body", "pointer": "/items/3/qty", "detail": "too many"},
            ],
        )

    async def limited(request: Request) -> Response:
        return JSONResponse({"code": "RATE_LIMITED"}, status_code=429)

    async def missing(request: Request) -> Response:
        return JSONResponse({"detail": "no such thing"}, status_code=404)

    async def wait(request: Request) -> Response:
        await asyncio.wait_for(gate.wait(), timeout=10)
        return JSONResponse({"waited": True})

    async def release(request: Request) -> Response:
        gate.set()
        return JSONResponse({"released": True})

    async def pid(request: Request) -> Response:
        return JSONResponse({"pid": os.getpid()})

    async def guard(request: Request) -> Response:
        kind = request.path_params["kind"]
        name, labels = GUARD_COUNTERS[kind]
        metrics = holder["bastion"].metrics
        assert metrics is not None
        values = [request.query_params.get(label, "x") for label in labels]
        metrics.counter(name, f"{kind} decisions", labels).labels(*values).inc()
        return JSONResponse({"counted": name})

    starlette = Starlette(
        routes=[
            Route("/items/{item_id}", item),
            Route("/orders", orders, methods=["POST"]),
            Route("/boom", boom),
            Route("/invalid", invalid, methods=["POST"]),
            Route("/limited", limited),
            Route("/missing", missing),
            Route("/wait", wait),
            Route("/release", release),
            Route("/guards/{kind}", guard, methods=["POST"]),
            Route("/pid", pid),
        ]
    )
    settings: dict[str, Any] = {"store": "memory://"}
    settings.update(config or {})
    kwargs.setdefault("env", {})
    bastion = Bastion(starlette, settings, **kwargs)
    holder["bastion"] = bastion
    return bastion


def from_environment() -> Bastion:
    """The app for ``uvicorn --factory``: configured by the ``BASTION_...`` variables."""
    return make_app(env=None)
