"""A small Django orders API in one file, with none of the four production pitfalls handled.

No idempotency, Django's HTML error pages, no rate limits, no validation: the same
API as ``examples/express``. ``asgi.py`` wraps Django's ASGI application in every
bastion guard.
"""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings

settings.configure(
    DEBUG=False,
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="example-only-not-secret",  # noqa: S106  (an example; use your project's own)
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

from django.core.asgi import get_asgi_application  # noqa: E402  (after settings)
from django.http import HttpRequest, HttpResponse, JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402

orders: dict[int, dict[str, Any]] = {}
charges = {"count": 0}


def health(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"status": "ok"})


def orders_view(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        body = json.loads(request.body)
        # Charging twice for a retried request is exactly what idempotency keys prevent.
        charges["count"] += 1
        order = {"id": len(orders) + 1, "item": body["item"], "quantity": body["quantity"], "status": "paid"}
        orders[order["id"]] = order
        return JsonResponse(order, status=201)
    return JsonResponse({"orders": list(orders.values()), "charges": charges["count"]})


def order_view(request: HttpRequest, order_id: int) -> HttpResponse:
    if order_id not in orders:
        return HttpResponse("<h1>Not Found</h1>", status=404)  # an HTML page, as Django's own
    return JsonResponse(orders[order_id])


def daily_report(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("connect ECONNREFUSED postgres://reports:s3cret@db.internal:5432/reports")


urlpatterns = [
    path("health", health),
    path("orders", orders_view),
    path("orders/<int:order_id>", order_view),
    path("reports/daily", daily_report),
]

application = get_asgi_application()
