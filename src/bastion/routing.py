"""The route + client guard: which operation a request is for, and who sent it.

It runs before every guard that keys on a route or a client (rate limits,
validation, idempotency) and fills the request context for them, the logs and
the metrics. With an OpenAPI description, an unknown path is ``404 NOT_FOUND`` and
a known path with a wrong method ``405 METHOD_NOT_ALLOWED``, unless
``validation.unknown_routes`` is ``pass``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.asgi import SCOPE_KEY, ASGIApp, Receive, RequestContext, Scope, Send
from bastion.clients import ClientIdentifier
from bastion.problems import MethodNotAllowed, NotFound
from bastion.protocols import RouteMatch, Router

if TYPE_CHECKING:
    from bastion.stack import Bastion


class RouteClientGuard:
    """Puts the route template, operation and client identity into the request context."""

    def __init__(
        self,
        app: ASGIApp,
        identifier: ClientIdentifier,
        router: Router | None,
        *,
        reject_unknown: bool,
    ) -> None:
        self.app = app
        self.identifier = identifier
        self.router = router
        self.reject_unknown = reject_unknown and router is not None and router.authoritative

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        ctx: RequestContext = scope[SCOPE_KEY]
        client = self.identifier.identify(scope)
        ctx.client_id = client.id
        ctx.client_ip = client.ip
        ctx.tier = client.tier
        if self.router is not None:
            found = self.router.resolve(scope["method"], scope["path"])
            if isinstance(found, RouteMatch):
                ctx.route = found.template
                ctx.operation_id = found.operation_id
                ctx.operation = found.operation
                ctx.path_params = found.path_params
            elif self.reject_unknown:
                if found is None:
                    raise NotFound(detail="no operation of the API has this path")
                allowed = ", ".join(found)
                raise MethodNotAllowed(detail=f"this path allows {allowed}", headers={"Allow": allowed})
        await self.app(scope, receive, send)


def build_guard(app: ASGIApp, bastion: Bastion) -> ASGIApp | None:
    """The route + client guard for ``bastion``'s configuration."""
    from bastion.validation.router import build_router

    config = bastion.config
    router = build_router(config, bastion)
    return RouteClientGuard(
        app,
        ClientIdentifier(config.clients),
        router,
        reject_unknown=config.validation.unknown_routes == "reject",
    )
