"""The route guard: which operation a request is for.

It runs before every guard that keys on a route (rate limits, validation,
idempotency) and fills the request context for them, the logs and the metrics.
With an OpenAPI description, an unknown path is ``404 NOT_FOUND`` and a known
path with a wrong method ``405 METHOD_NOT_ALLOWED``, unless
``validation.unknown_routes`` is ``pass``. Without a description or configured
route templates there is nothing to resolve and no guard is added.

Who sent the request is worked out on first need instead
(:meth:`bastion.clients.ClientIdentifier.fill`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.asgi import HANDSHAKE_KEY, SCOPE_KEY, ASGIApp, Receive, RequestContext, Scope, Send
from bastion.problems import MethodNotAllowed, NotFound
from bastion.protocols import RouteMatch, Router

if TYPE_CHECKING:
    from bastion.stack import Bastion


class RouteGuard:
    """Puts the route template, operation id, operation and path parameters into the request context."""

    def __init__(self, app: ASGIApp, router: Router, *, reject_unknown: bool) -> None:
        self.app = app
        self.router = router
        self.reject_unknown = reject_unknown and router.authoritative

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Name the request's route in ``ctx``, or refuse an unknown one (all of it synchronous)."""
        found = self.router.resolve(scope["method"], scope["path"])
        if isinstance(found, RouteMatch):
            ctx.route = found.template
            ctx.operation_id = found.operation_id
            ctx.operation = found.operation
            ctx.path_params = found.path_params
        # A WebSocket endpoint is rarely in an OpenAPI description: its handshake is
        # not refused for being absent from it.
        elif self.reject_unknown and HANDSHAKE_KEY not in scope:
            if found is None:
                raise NotFound(detail="no operation of the API has this path")
            allowed = ", ".join(found)
            raise MethodNotAllowed(detail=f"this path allows {allowed}", headers={"Allow": allowed})
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.admit(scope, scope[SCOPE_KEY])
        await self.app(scope, receive, send)


def build_guard(app: ASGIApp, bastion: Bastion) -> ASGIApp | None:
    """The route guard for ``bastion``'s configuration, or ``None`` when there are no routes to know."""
    from bastion.validation.router import build_router

    config = bastion.config
    router = build_router(config, bastion)
    if router is None:
        return None
    return RouteGuard(app, router, reject_unknown=config.validation.unknown_routes == "reject")
