"""A small Flask orders API with none of the four production pitfalls handled.

No idempotency, Flask's HTML error pages, no rate limits, no validation: the same API
as ``examples/express``. ``asgi.py`` puts every bastion guard around it (middleware
mode); ``bastion gateway --config bastion-gateway.yaml`` puts them in front of
``flask --app app run`` (gateway mode).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, abort, jsonify, request

app = Flask(__name__)
orders: dict[int, dict[str, Any]] = {}
charges = {"count": 0}


@app.get("/health")
def health() -> Any:
    return jsonify(status="ok")


@app.get("/orders")
def list_orders() -> Any:
    return jsonify(orders=list(orders.values()), charges=charges["count"])


@app.post("/orders")
def create_order() -> Any:
    body = request.get_json()
    # Charging twice for a retried request is exactly what idempotency keys prevent.
    charges["count"] += 1
    order = {"id": len(orders) + 1, "item": body["item"], "quantity": body["quantity"], "status": "paid"}
    orders[order["id"]] = order
    return jsonify(order), 201


@app.get("/orders/<int:order_id>")
def get_order(order_id: int) -> Any:
    if order_id not in orders:
        abort(404)  # Flask answers with its HTML "Not Found" page
    return jsonify(orders[order_id])


@app.get("/reports/daily")
def daily_report() -> Any:
    # Flask's error page hides this; a debug server or a careless handler would not.
    raise RuntimeError("connect ECONNREFUSED postgres://reports:s3cret@db.internal:5432/reports")
