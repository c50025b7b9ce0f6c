"""Gradual enforcement, shared by the rate limit and validation guards.

A rate limit rule or a validated operation either enforces (refuses), watches in
shadow mode (decides, counts and logs, never refuses), or enforces for a stable share
of clients (``enforce_percent``). Both guards reduce their setting to one number, the
share of clients enforced (:func:`enforced_share`), and decide each client with
:func:`client_bucket`, so one client is in the same bucket for every rule and
operation: raising a percentage only ever adds clients.

A refusal decided in shadow mode is counted in ``bastion_shadow_refusals_total``
and named to the application in the ``Bastion-Would-Refuse`` request header
(:meth:`ShadowRefusals.record`). The boundary removes a client-sent header of that
name from every request (:class:`bastion.boundary.BoundaryGuard`), so it cannot be forged.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from bastion.asgi import RequestContext, Scope
from bastion.clients import KEY_ID_PREFIX

if TYPE_CHECKING:
    from bastion.observability.metrics import Metrics

#: The request header that names, comma-separated, the codes of refusals decided in shadow mode.
WOULD_REFUSE = b"bastion-would-refuse"
#: ``ctx.log`` key of those codes (also what tells the next guard the header is bastion's own).
_LOG_KEY = "would_refuse"


def enforced_share(mode: str, enforce_percent: int | None) -> int:
    """The percentage of clients enforced: 0 in shadow mode, else ``enforce_percent`` (100 when unset)."""
    if mode == "shadow":
        return 0
    return 100 if enforce_percent is None else enforce_percent


def in_shadow(share: int, bucket: int) -> bool:
    """Whether the client in ``bucket`` is only watched when ``share`` percent of clients are enforced."""
    return bucket >= share


def error_reason(exc: Exception) -> str:
    """What is wrong with a setting read from a description, each error with the key it is about."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return str(exc)
    reasons = []
    for error in errors():
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(part) for part in error.get("loc", ()))
        reasons.append(f"{where}: {message}" if where else message)
    return "; ".join(reasons)


def enforcement_id(ctx: RequestContext, keys_believed: bool) -> str:
    """The id a client's bucket is computed from: its client id (``key:...`` or ``ip:ADDRESS``).

    When any API key is believed (no ``clients.keys``), a client named by a key chose that
    key, and so would choose its bucket: it is bucketed by its IP instead.
    """
    client_id = ctx.client_id or ""
    if keys_believed and client_id.startswith(KEY_ID_PREFIX):
        return "ip:" + (ctx.client_ip or "")
    return client_id


def client_bucket(client_id: str) -> int:
    """The client's bucket, 0 to 99: a hash of its id, the same in every process and restart."""
    digest = hashlib.blake2b(client_id.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 100


class ShadowRefusals:
    """Counts refusals decided in shadow mode and names them to the application.

    ``guard`` is the ``guard`` label (``rate_limit``, ``validation``).
    """

    def __init__(self, guard: str, metrics: Metrics | None) -> None:
        self.guard = guard
        #: ``bastion_shadow_refusals_total{guard,code}``, or ``None`` without metrics.
        self.tally = (
            metrics.tally(
                "bastion_shadow_refusals_total",
                "Refusals decided in shadow mode (the request went on), by guard and problem code.",
                ["guard", "code"],
            )
            if metrics is not None
            else None
        )

    def count(self, code: str, ctx: RequestContext) -> None:
        """Count one shadow refusal and remember its code for the request header."""
        if self.tally is not None:
            self.tally.count(self.guard, code)
        codes: list[str] = ctx.log.setdefault(_LOG_KEY, [])
        if code not in codes:
            codes.append(code)

    def mark(self, scope: Scope, ctx: RequestContext) -> None:
        """Write ``Bastion-Would-Refuse`` with every code counted so far (a client-sent one removed)."""
        codes = ctx.log.get(_LOG_KEY)
        if not codes:
            return
        headers = [pair for pair in scope["headers"] if pair[0] != WOULD_REFUSE]
        headers.append((WOULD_REFUSE, ",".join(codes).encode("ascii")))
        scope["headers"] = headers

    def record(self, code: str, scope: Scope, ctx: RequestContext) -> None:
        """:meth:`count` and :meth:`mark` at once."""
        self.count(code, ctx)
        self.mark(scope, ctx)
