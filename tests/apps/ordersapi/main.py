"""The application: a bare ASGI callable whose handlers raise problems with their own codes."""

from __future__ import annotations

from typing import Any

import bastion
from bastion import Conflict
from bastion.problems import NotFound as Missing

from .errors import OrderAlreadyShipped


class Unrelated(Exception):
    """Not a problem: its code= is not collected."""

    def __init__(self, code: str) -> None:
        super().__init__(code)


def pay(order: dict[str, Any]) -> None:
    """Pay for an order once."""
    if order.get("paid"):
        raise Conflict(code="ORDER_ALREADY_PAID", detail="the order was paid already")
    if order.get("shipped"):
        raise OrderAlreadyShipped()


def find(orders: dict[str, Any], key: str) -> Any:
    """The order ``key``."""
    if key not in orders:
        raise Missing(code="ORDER_NOT_FOUND", title="Order not found")
    return orders[key]


def checkout(cart: list[Any], code: str) -> None:
    """Check a cart out."""
    if not cart:
        raise bastion.problems.UnprocessableContent(code="CART_EMPTY", status=422)
    if code:
        raise Conflict(code=code)  # not a literal: not collected
    raise Unrelated(code="NOT_A_PROBLEM_CODE")


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Answers 204 to every request."""
    await send({"type": "http.response.start", "status": 204, "headers": []})
    await send({"type": "http.response.body", "body": b""})
