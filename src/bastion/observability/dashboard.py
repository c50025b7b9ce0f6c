"""The live dashboard: one page, its script and style, and the JSON it polls.

Served by the boundary under ``observability.dashboard.path`` when enabled:

- ``{path}``: the page (``?token=...`` when a token is configured),
- ``{path}/data``: the JSON snapshot of the counters, built from the instance's
  registry (in multiprocess mode, the sum over every worker), so a guard's new
  counter shows up without changing this module,
- ``{path}/dashboard.js`` and ``{path}/dashboard.css``: shipped in the package; no CDN.

Each data response carries rates and latency quantiles over the last few seconds
(:mod:`bastion.observability.window`), so the page shows them on its first paint, and
the latest 5xx responses and top clients (:mod:`bastion.observability.recent`), and refusals
decided live against those decided in shadow mode (:func:`refusals`). Only loopback
clients that came without forwarding headers may open it, unless ``allow_remote``
is set; a configured token is required on the page and the data in every case.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import time
from collections.abc import Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import parse_qs

import orjson
from prometheus_client.core import Metric

from bastion.asgi import ASGIApp, Headers, Receive, RequestContext, Scope, Send, send_bytes
from bastion.config.observability import DashboardConfig
from bastion.observability.http_metrics import DURATION_NAME
from bastion.observability.metrics import Metrics
from bastion.observability.recent import RecentRequests
from bastion.observability.window import QUANTILES, Key, Sample, SlidingWindow, histogram_quantile
from bastion.problems import Forbidden, MethodNotAllowed, NotFound, Unauthorized

if TYPE_CHECKING:
    from bastion.clients import ClientIdentifier

_SECURITY_HEADERS: Headers = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_FORWARDING_HEADERS = frozenset({b"forwarded", b"x-forwarded-for", b"x-real-ip"})
_MAX_ROWS = 25


def _static(name: str) -> bytes:
    return (resources.files("bastion.observability") / "static" / name).read_bytes()


def _labelled(families: Iterable[Metric], name: str) -> list[tuple[dict[str, str], float]]:
    """The ``(labels, value)`` samples of counter ``name`` (given with or without ``_total``)."""
    base = name.removesuffix("_total")
    out: list[tuple[dict[str, str], float]] = []
    for family in families:
        if family.name != base or family.type != "counter":
            continue
        for sample in family.samples:
            if sample.name == base + "_total":
                out.append((dict(sample.labels), float(sample.value)))
    return out


def _by(samples: list[tuple[dict[str, str], float]], *keys: str) -> dict[str, float]:
    """Sum samples by the values of ``keys`` joined with ``/`` (missing labels count as empty)."""
    out: dict[str, float] = {}
    for labels, value in samples:
        key = "/".join(labels.get(k, "") for k in keys)
        out[key] = out.get(key, 0.0) + value
    return out


def _rows(samples: list[tuple[dict[str, str], float]], *keys: str) -> list[dict[str, Any]]:
    """The largest sums by ``keys`` as rows ``{key: label, ..., "count": value}``."""
    summed: dict[tuple[str, ...], float] = {}
    for labels, value in samples:
        group = tuple(labels.get(k, "") for k in keys)
        summed[group] = summed.get(group, 0.0) + value
    rows: list[dict[str, Any]] = []
    for group, value in sorted(summed.items(), key=lambda item: -item[1])[:_MAX_ROWS]:
        row: dict[str, Any] = dict(zip(keys, group, strict=True))
        row["count"] = value
        rows.append(row)
    return rows


def snapshot(families: list[Metric], *, hidden_routes: Iterable[str] = ()) -> dict[str, Any]:
    """The dashboard's JSON: cumulative counts, from which the page computes rates.

    Requests to ``hidden_routes`` (the dashboard itself, ``/metrics``) are left out,
    so watching the page does not look like traffic.
    """
    hidden = set(hidden_routes)
    by_class = {"2xx": 0.0, "3xx": 0.0, "4xx": 0.0, "5xx": 0.0}
    total = rate_limited = 0.0
    routes: dict[tuple[str, str], dict[str, Any]] = {}
    for family in families:
        if family.name != DURATION_NAME:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_count"):
                continue
            route = sample.labels.get("http_route", "")
            if route in hidden:
                continue
            status = sample.labels.get("http_response_status_code", "")
            value = float(sample.value)
            total += value
            klass = status[:1] + "xx"
            if klass in by_class:
                by_class[klass] += value
            if status == "429":
                rate_limited += value
            row = routes.setdefault(
                (sample.labels.get("http_request_method", ""), route),
                {
                    "method": sample.labels.get("http_request_method", ""),
                    "route": route,
                    "count": 0.0,
                    "4xx": 0.0,
                    "5xx": 0.0,
                },
            )
            row["count"] += value
            if klass in ("4xx", "5xx"):
                row[klass] += value
    top_routes = sorted(routes.values(), key=lambda row: -row["count"])[:_MAX_ROWS]
    problems = _by(_labelled(families, "bastion_problems_total"), "code")
    return {
        "time": time.time(),
        "requests": {"total": total, **by_class, "429": rate_limited},
        "routes": top_routes,
        "problems": problems,
        "rate_limits": _rows(_labelled(families, "bastion_rate_limit_decisions_total"), "rule", "outcome"),
        "idempotency": _by(_labelled(families, "bastion_idempotency_events_total"), "event"),
        "validation": _rows(_labelled(families, "bastion_validation_failures_total"), "operation", "code"),
        "validation_fields": _rows(
            _labelled(families, "bastion_validation_field_errors_total"), "operation", "field"
        ),
        "store_errors": _by(_labelled(families, "bastion_store_errors_total"), "store", "operation"),
        "upstream_errors": _by(_labelled(families, "bastion_gateway_upstream_errors_total"), "kind"),
        "refusals": refusals(_labelled(families, "bastion_shadow_refusals_total"), problems),
    }


def refusals(shadow: list[tuple[dict[str, str], float]], problems: dict[str, float]) -> list[dict[str, Any]]:
    """Live against shadow refusals, per guard and code that has refused in shadow mode.

    ``live`` is every problem response of the code (whichever guard answered it),
    ``shadow`` the refusals decided in shadow mode, which the application served.
    """
    return [
        {
            "guard": row["guard"],
            "code": row["code"],
            "live": problems.get(row["code"], 0.0),
            "shadow": row["count"],
        }
        for row in _rows(shadow, "guard", "code")
    ]


def window_counts(
    data: dict[str, Any], families: list[Metric], hidden_routes: Iterable[str]
) -> dict[Key, float]:
    """The cumulative counts the sliding window differences: requests by class,
    idempotency events, and the duration buckets of each (method, route) over every status."""
    counts: dict[Key, float] = {("requests", name): value for name, value in data["requests"].items()}
    counts.update({("idempotency", event): value for event, value in data["idempotency"].items()})
    hidden = set(hidden_routes)
    bucket = DURATION_NAME + "_bucket"
    for family in families:
        if family.name != DURATION_NAME:
            continue
        for sample in family.samples:
            route = sample.labels.get("http_route", "")
            if sample.name != bucket or route in hidden:
                continue
            key = (
                "latency",
                sample.labels.get("http_request_method", ""),
                route,
                sample.labels.get("le", ""),
            )
            counts[key] = counts.get(key, 0.0) + float(sample.value)
    return counts


def windowed(seconds: float, increase: dict[Key, float]) -> dict[str, Any]:
    """Rates per second and latency quantiles per route from the increase over ``seconds``."""
    rates: dict[str, dict[str, float]] = {"requests": {}, "idempotency": {}}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for key, value in increase.items():
        if key[0] == "latency":
            buckets.setdefault((key[1], key[2]), []).append((float(key[3]), value))
        else:
            rates[key[0]][key[1]] = value / seconds if seconds > 0 else 0.0
    latency: list[dict[str, Any]] = []
    for (method, route), histogram in buckets.items():
        count = max(value for _, value in histogram)
        if count > 0:
            row: dict[str, Any] = {"method": method, "route": route, "count": count}
            for q in QUANTILES:
                row[f"p{round(q * 100)}"] = histogram_quantile(q, histogram)
            latency.append(row)
    latency.sort(key=lambda row: -row["count"])
    return {"window_seconds": seconds, "rates": rates, "latency": latency[:_MAX_ROWS]}


def _is_loopback(scope: Scope) -> bool:
    client = scope.get("client")
    if not client:
        # No peer address at all (an in-process test transport, a Unix socket): local.
        return True
    try:
        return ipaddress.ip_address(client[0]).is_loopback
    except ValueError:
        return False


class Panel(Protocol):
    """The configuration side of the dashboard (:class:`bastion.control.panel.ControlPanel`)."""

    @property
    def admin(self) -> ASGIApp | None:
        """The admin app that takes the page's changes, or ``None`` (no controls)."""

    def data(self) -> dict[str, Any]:
        """The rules in force, the suggested limits, and whether the page has controls."""


class Dashboard:
    """Serves the dashboard's page, assets and data for one bastion instance."""

    def __init__(
        self,
        config: DashboardConfig,
        metrics: Metrics,
        metrics_path: str | None,
        clients: ClientIdentifier | None = None,
        panel: Panel | None = None,
    ) -> None:
        self.config = config
        self.panel = panel
        #: Where the page's changes go: ``{path}/admin/v1/...`` is the admin API's ``/v1/...``.
        self.admin_prefix = config.path + "/admin"
        self.metrics = metrics
        self.path = config.path
        self.prefix = config.path + "/"
        self._token = config.token.encode() if config.token else None
        self._hidden = [
            self.path,
            self.prefix + "data",
            self.prefix + "dashboard.js",
            self.prefix + "dashboard.css",
            self.prefix + "*",
        ]
        if metrics_path is not None:
            self._hidden.append(metrics_path)
        page = (
            _static("dashboard.html")
            .replace(b"{{base}}", html.escape(self.prefix, quote=True).encode())
            .replace(b"{{refresh_ms}}", str(config.refresh.ms).encode())
        )
        self._assets: dict[str, tuple[bytes, bytes]] = {
            self.path: (b"text/html; charset=utf-8", page),
            self.prefix + "dashboard.js": (b"text/javascript; charset=utf-8", _static("dashboard.js")),
            self.prefix + "dashboard.css": (b"text/css; charset=utf-8", _static("dashboard.css")),
        }
        #: The latest 5xx responses and top clients; the boundary feeds it every finished request.
        self.recent = RecentRequests(clients)
        # The first sample is taken now, so the first poll already has something to compare with.
        self._window = SlidingWindow(self._sample()[1])

    def _sample(self) -> tuple[dict[str, Any], Sample]:
        families = self.metrics.collect()
        data = snapshot(families, hidden_routes=self._hidden)
        return data, Sample(time.monotonic(), window_counts(data, families, self._hidden))

    def data(self) -> dict[str, Any]:
        """The data endpoint's JSON: cumulative counts, windowed rates and latency, recent requests."""
        data, sample = self._sample()
        seconds, increase = self._window.advance(sample)
        return {
            **data,
            **windowed(seconds, increase),
            **self.recent.snapshot(),
            "refresh_ms": self.config.refresh.ms,
            **(self.panel.data() if self.panel is not None else {}),
        }

    def handles(self, path: str) -> bool:
        """Whether ``path`` is the dashboard's."""
        return path == self.path or path.startswith(self.prefix)

    def _allowed_peer(self, scope: Scope) -> bool:
        if self.config.allow_remote:
            return True
        if not _is_loopback(scope):
            return False
        # A loopback peer that forwards for someone else is a local proxy, not a local user.
        return not any(key in _FORWARDING_HEADERS for key, _ in scope["headers"])

    def _token_ok(self, scope: Scope) -> bool:
        if self._token is None:
            return True
        offered: bytes | None = None
        for key, value in scope["headers"]:
            if key == b"authorization" and value[:7].lower() == b"bearer ":
                offered = value[7:].strip()
        if offered is None:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            offered = values[0].encode() if values else None
        return offered is not None and hmac.compare_digest(offered, self._token)

    async def handle(self, scope: Scope, ctx: RequestContext, send: Send, receive: Receive) -> None:
        """Answer one request under the dashboard path (or raise the problem that refuses it)."""
        path = scope["path"]
        ctx.route = path if path in self._hidden else self.prefix + "*"
        if not self._allowed_peer(scope):
            # Look like any unknown path: a refused client learns nothing, not even that it exists.
            raise NotFound
        if path.startswith(self.admin_prefix + "/"):
            await self._relay(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            raise MethodNotAllowed(headers={"Allow": "GET, HEAD"})
        asset = self._assets.get(path)
        if asset is not None and path != self.path:
            await self._send(scope, send, *asset)
            return
        if path not in (self.path, self.prefix + "data"):
            raise NotFound
        if not self._token_ok(scope):
            raise Unauthorized(detail="the dashboard needs its token", headers={"WWW-Authenticate": "Bearer"})
        if path == self.path:
            await self._send(scope, send, *self._assets[path])
            return
        await self._send(scope, send, b"application/json", orjson.dumps(self.data()))

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand a control request to the admin API (its token, validation and audit apply)."""
        admin = self.panel.admin if self.panel is not None else None
        if admin is None:
            raise Forbidden("the dashboard's controls need the admin API with admin.token_file")
        path = scope["path"][len(self.admin_prefix) :]
        await admin({**scope, "path": path, "raw_path": path.encode(), "root_path": ""}, receive, send)

    async def _send(self, scope: Scope, send: Send, content_type: bytes, body: bytes) -> None:
        headers: Headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode()),
            *_SECURITY_HEADERS,
        ]
        await send_bytes(send, 200, headers, body if scope["method"] == "GET" else b"")
