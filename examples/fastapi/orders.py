"""A small FastAPI orders API; ``main.py`` puts every bastion guard around it.

The handlers raise bastion problems where a client needs a stable code
(``OrderAlreadyPaid``), keep FastAPI's ``HTTPException`` where that is enough, and
register an exception handler of their own, which bastion leaves in place.
``bastion.yaml`` points at FastAPI's own description, exported to ``openapi.json``
by ``python export_openapi.py``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from bastion import Conflict

api = FastAPI(title="orders API (FastAPI example)", version="1.0.0")
orders: dict[int, dict[str, Any]] = {}
charges = {"count": 0}


class NewOrder(BaseModel):
    """An order as a client sends it."""

    item: str = Field(min_length=1, max_length=64)
    quantity: int = Field(ge=1, le=100)


class OrderNotFound(Exception):
    """Raised by handlers for an order id nobody created."""

    def __init__(self, order_id: int) -> None:
        self.order_id = order_id


@api.exception_handler(OrderNotFound)
async def order_not_found(request: Request, exc: OrderNotFound) -> JSONResponse:
    # The application's own handler: bastion keeps it (it only fills in what is missing).
    return JSONResponse({"error": "no such order", "id": exc.order_id}, status_code=404)


@api.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@api.get("/orders")
def list_orders() -> dict[str, Any]:
    return {"orders": list(orders.values()), "charges": charges["count"]}


@api.post("/orders", status_code=201, openapi_extra={"x-bastion-idempotency": "required"})
def create_order(order: NewOrder) -> dict[str, Any]:
    if order.item == "discontinued":
        # A mapping detail keeps its code and members in the problem.
        raise HTTPException(422, detail={"code": "OUT_OF_STOCK", "detail": "this item is no longer sold"})
    charges["count"] += 1
    created = {"id": len(orders) + 1, "item": order.item, "quantity": order.quantity, "status": "paid"}
    orders[created["id"]] = created
    return created


@api.get("/orders/{order_id}")
def get_order(order_id: int) -> dict[str, Any]:
    if order_id not in orders:
        raise OrderNotFound(order_id)
    return orders[order_id]


@api.post("/orders/{order_id}/pay")
def pay_order(order_id: int) -> dict[str, Any]:
    order = orders.get(order_id)
    if order is None:
        raise OrderNotFound(order_id)
    if order["status"] == "paid":
        raise Conflict(code="ORDER_ALREADY_PAID", detail=f"order {order_id} is paid already")
    order["status"] = "paid"
    return order


@api.get("/reports/daily")
def daily_report() -> dict[str, Any]:
    raise RuntimeError("connect ECONNREFUSED postgres://reports:s3cret@db.internal:5432/reports")
