"""The route guard: which operation a request is for.

It runs before every guard that keys on a route (rate limits, validation,
idempotency) and fills the request context for them, the logs and the metrics.
With an OpenAPI description, an unknown path is ``404 NOT_FOUND`` and a known
path with a wrong method ``405 METHOD_NOT_ALLOWED``, unless
``validation.unknown_routes`` is ``pass``. Without a description or configured
route templates there is nothing to resolve and no guard is added.

The path it resolves is already canonical (:mod:`bastion.routing.paths`; the
boundary rewrote it). A request that matches no route is then compared with the
protective entries of the configuration (rate limit ``match``, ``idempotency.require``)
ignoring case and a trailing slash (``routing.case_sensitive``,
``routing.strict_slashes``), and named after the entry it matches, so that every
guard keying on the route treats ``/LOGIN/`` as ``/login``.

Who sent the request is worked out on first need instead
(:meth:`bastion.clients.ClientIdentifier.fill`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.adapters import documentation_paths
from bastion.asgi import HANDSHAKE_KEY, SCOPE_KEY, ASGIApp, Receive, RequestContext, Scope, Send
from bastion.problems import MethodNotAllowed, NotFound
from bastion.protocols import RouteMatch, Router
from bastion.routing.paths import protective_form

if TYPE_CHECKING:
    from bastion.config import RoutingConfig
    from bastion.protocols import GuardContext

__all__ = ["ProtectiveRoutes", "RouteGuard", "build_guard"]


class ProtectiveRoutes:
    """The configuration's ``METHOD /template`` entries, matched ignoring case and a trailing slash."""

    def __init__(self, routes: list[tuple[str, str]], settings: RoutingConfig) -> None:
        from bastion.routing.router import TemplateRouter

        self.case_sensitive = settings.case_sensitive
        self.strict_slashes = settings.strict_slashes
        self.router = TemplateRouter(authoritative=False)
        #: Folded template -> the template as configured (what rules and requirements name).
        self.templates: dict[str, str] = {}
        for method, template in routes:
            folded = self._fold(template)
            self.templates.setdefault(folded, template)
            self.router.add(method, folded)

    def _fold(self, path: str) -> str:
        return protective_form(path, case_sensitive=self.case_sensitive, strict_slashes=self.strict_slashes)

    def template(self, method: str, path: str) -> str | None:
        """The configured template ``method path`` falls under, or ``None``."""
        found = self.router.resolve(method, self._fold(path))
        return self.templates[found.template] if isinstance(found, RouteMatch) else None


class RouteGuard:
    """Puts the route template, operation id, operation and path parameters into the request context."""

    def __init__(
        self,
        app: ASGIApp,
        router: Router,
        *,
        reject_unknown: bool,
        protective: ProtectiveRoutes | None = None,
        documentation: frozenset[str] = frozenset(),
    ) -> None:
        self.app = app
        self.router = router
        self.reject_unknown = reject_unknown and router.authoritative
        #: The configuration's protective entries, for requests no route matches.
        self.protective = protective
        #: The wrapped framework's own documentation pages (FastAPI's ``/docs``), let through.
        self.documentation = documentation

    def admit(self, scope: Scope, ctx: RequestContext) -> bool:
        """Name the request's route in ``ctx``, or refuse an unknown one (all of it synchronous)."""
        method, path = scope["method"], scope["path"]
        found = self.router.resolve(method, path)
        if isinstance(found, RouteMatch):
            ctx.route = found.template
            ctx.operation_id = found.operation_id
            ctx.operation = found.operation
            ctx.path_params = found.path_params
            return True
        # A WebSocket endpoint is rarely in an OpenAPI description: its handshake is
        # not refused for being absent from it. ``OPTIONS *`` asks about the server, not a
        # path, and a framework's own documentation pages are not the API's operations.
        if (
            self.reject_unknown
            and HANDSHAKE_KEY not in scope
            and path != "*"
            and not (path in self.documentation and method in ("GET", "HEAD"))
        ):
            if found is None:
                raise NotFound(detail="no operation of the API has this path")
            allowed = ", ".join(found)
            raise MethodNotAllowed(detail=f"this path allows {allowed}", headers={"Allow": allowed})
        if self.protective is not None:
            ctx.route = self.protective.template(method, path)
        return True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.admit(scope, scope[SCOPE_KEY])
        await self.app(scope, receive, send)


def build_guard(app: ASGIApp, ctx: GuardContext) -> ASGIApp | None:
    """The route guard for the configuration, or ``None`` when there are no routes to know."""
    from bastion.routing.router import build_router, configured_routes

    config = ctx.config
    router = build_router(ctx)
    if router is None:
        return None
    routes = configured_routes(config)
    return RouteGuard(
        app,
        router,
        reject_unknown=config.validation.unknown_routes == "reject",
        protective=ProtectiveRoutes(routes, config.routing) if routes else None,
        documentation=documentation_paths(ctx.application),
    )
