"""``Bastion``: the ASGI application that puts the guard chain around an app.

The chain is built once, from one :class:`~bastion.config.Config`, outermost first::

    boundary (trace id, problems, metrics, access log)
      -> route -> unknown API keys -> rate limit -> validation -> idempotency -> the app

A capability whose configuration gives it nothing to do adds no guard at all.
Stores and other resources open on the ASGI lifespan start-up, or on the first
request when the server sends no lifespan events, and close on shutdown.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import IO, Any

from bastion.adapters import install_problem_handlers
from bastion.asgi import ASGIApp, Message, Receive, Scope, Send
from bastion.boundary import BoundaryGuard
from bastion.clients import ClientIdentifier
from bastion.config import Config, load_config
from bastion.handshakes import guard_handshake
from bastion.observability.logging import AccessLog, make_logger
from bastion.observability.metrics import Metrics
from bastion.protocols import CompiledDescription, GuardContext, Resource
from bastion.routing.description import compile_configured

#: A capability's builder: given the app it wraps and the build context, its guard or None.
GuardBuilder = Callable[[ASGIApp, GuardContext], ASGIApp | None]


def _capability_builders() -> list[GuardBuilder]:
    """The capabilities' guard builders, innermost first (the reverse of the request path)."""
    from bastion.clients import build_guard as unknown_keys
    from bastion.idempotency.guard import build_guard as idempotency
    from bastion.ratelimit.guard import build_guard as rate_limits
    from bastion.routing import build_guard as route
    from bastion.validation.guard import build_guard as validation

    return [idempotency, validation, rate_limits, unknown_keys, route]


class BuildContext:
    """The :class:`~bastion.protocols.GuardContext` of one :class:`Bastion`: what its guard builders see.

    It also holds the compiled OpenAPI description, compiled on first use, once, for every
    guard that reads it (routing, validation, rate limit extensions, idempotency requirements).
    """

    def __init__(
        self,
        config: Config,
        *,
        logger: Any,
        metrics: Metrics | None,
        clients: ClientIdentifier,
        application: ASGIApp,
        resources: list[Resource],
        compile_description: Callable[[], CompiledDescription | None],
    ) -> None:
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.clients = clients
        self.application = application
        self.resources = resources
        self._compile = compile_description
        self._description: CompiledDescription | None = None
        self._compiled = False

    def add_resource(self, resource: Resource) -> None:
        """Open ``resource`` at start-up and close it at shutdown."""
        self.resources.append(resource)

    def description(self) -> CompiledDescription | None:
        """The compiled OpenAPI description, loaded and compiled on first use and kept.

        A description that cannot be read or compiled raises
        :class:`~bastion.validation.openapi.OpenAPIError`, so a broken one stops start-up.
        """
        if not self._compiled:
            self._description = self._compile()
            self._compiled = True
        return self._description


class Bastion:
    """Wrap an ASGI application in bastion's guards.

    ``config`` is a path to a YAML file, a mapping, a :class:`Config`, or ``None``
    for the defaults; environment variables (``BASTION_...``) override it.
    """

    def __init__(
        self,
        app: ASGIApp,
        config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
        *,
        env: Mapping[str, str] | None = None,
        log_stream: IO[bytes] | None = None,
    ) -> None:
        self.app = app
        #: WebSocket handshakes go through the guards when the app relays them itself.
        self._guards_handshakes = bool(getattr(app, "guards_handshakes", False))
        self.config = load_config(config, env=env)
        self.logger = make_logger(self.config.logging.level, log_stream)
        self.metrics = Metrics() if self.config.metrics.enabled else None
        #: Who sent a request, worked out by the guards that ask (``clients`` in the configuration).
        self.clients = ClientIdentifier(self.config.clients)
        self.resources: list[Resource] = []
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        if self.config.errors.framework_adapters:
            install_problem_handlers(app)
        #: What the guard builders see of this instance (see :class:`bastion.protocols.GuardContext`).
        self.context = BuildContext(
            self.config,
            logger=self.logger,
            metrics=self.metrics,
            clients=self.clients,
            application=app,
            resources=self.resources,
            compile_description=lambda: compile_configured(self.config, self.logger),
        )
        inner: ASGIApp = app
        for build in _capability_builders():
            guard = build(inner, self.context)
            if guard is not None:
                inner = guard
        self._chain = BoundaryGuard(
            inner,
            type_base=self.config.errors.type_base,
            metrics=self.metrics,
            metrics_path=self.config.metrics.path,
            logger=self.logger,
            clients=self.clients,
            access_log=AccessLog(log_stream) if self.config.logging.access else None,
            observability=self.config.observability,
            application=app,
            normalize_upstream=self.config.errors.normalize_upstream,
        )

    def add_resource(self, resource: Resource) -> None:
        """Register a resource to open at start-up and close at shutdown."""
        self.resources.append(resource)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                await self.startup()
            await self._chain(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket" and self._guards_handshakes:
            await guard_handshake(self, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def http_chain(self) -> ASGIApp | None:
        """The guard chain for HTTP requests once every resource is open, else ``None``.

        For a server of bastion's own (the gateway) to call the chain without
        :meth:`__call__`'s coroutine in between; anyone else calls the instance.
        """
        return self._chain if self._started else None

    async def startup(self) -> None:
        """Open every resource (idempotent; concurrent callers wait for one start)."""
        if self._started:
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._started:
                return
            opened: list[Resource] = []
            try:
                for resource in self.resources:
                    await resource.start()
                    opened.append(resource)
            except BaseException:
                for resource in reversed(opened):
                    await resource.close()
                raise
            self._started = True
            self.logger.debug("bastion started", resources=[r.name for r in self.resources])

    async def shutdown(self) -> None:
        """Close every resource, in reverse order of opening."""
        if not self._started:
            return
        self._started = False
        for resource in reversed(self.resources):
            try:
                await resource.close()
            except Exception as exc:
                self.logger.error("closing resource failed", resource=resource.name, exc_info=exc)

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        startup_failed = False
        app_spoke_lifespan = False

        async def receive_and_manage() -> Message:
            nonlocal startup_failed, app_spoke_lifespan
            app_spoke_lifespan = True
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    startup_failed = True
                    self.logger.error("bastion start-up failed", exc_info=exc)
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    raise
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
            return message

        try:
            await self.app(scope, receive_and_manage, send)
        except Exception:
            if startup_failed or app_spoke_lifespan:
                raise
            # The app does not speak lifespan: run bastion's part of the protocol alone.
            await self._lifespan_alone(receive, send)

    async def _lifespan_alone(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return
