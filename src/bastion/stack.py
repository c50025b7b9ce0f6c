"""``Bastion``: the ASGI application that puts the guard chain around an app.

The chain is built once, from one :class:`~bastion.config.Config`, outermost first::

    boundary (trace id, problems, metrics, access log)
      -> route -> unknown API keys -> faults -> rate limit -> validation -> idempotency -> the app

A capability whose configuration gives it nothing to do adds no guard at all.
Stores and other resources open on the ASGI lifespan start-up, or on the first
request when the server sends no lifespan events, and close on shutdown.
:meth:`Bastion.reload` builds a whole new chain from a new configuration and swaps
it in between requests (:mod:`bastion.control`; docs/reload.md).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Hashable, Mapping
from typing import IO, TYPE_CHECKING, Any

from bastion.adapters import install_problem_handlers
from bastion.asgi import ASGIApp, Message, Receive, Scope, Send
from bastion.boundary import BoundaryGuard
from bastion.clients import ClientIdentifier
from bastion.config import Config, load_config
from bastion.control.changes import Changes, apply_changes
from bastion.control.generation import Generation, close_all, open_all
from bastion.control.panel import ControlPanel
from bastion.control.reload import ReloadLog
from bastion.handshakes import guard_handshake
from bastion.observability.logging import AccessLog, dropped_lines_counter, make_logger
from bastion.observability.logwriter import flush_writers
from bastion.observability.metrics import Metrics
from bastion.protocols import CompiledDescription, GuardContext, R, Resource
from bastion.routing.description import compile_configured

if TYPE_CHECKING:
    from bastion.control.admin import AdminControl

#: A capability's builder: given the app it wraps and the build context, its guard or None.
GuardBuilder = Callable[[ASGIApp, GuardContext], ASGIApp | None]


def _capability_builders() -> list[GuardBuilder]:
    """The capabilities' guard builders, innermost first (the reverse of the request path)."""
    from bastion.clients import build_guard as unknown_keys
    from bastion.faults import build_guard as faults
    from bastion.idempotency.guard import build_guard as idempotency
    from bastion.ratelimit.guard import build_guard as rate_limits
    from bastion.routing import build_guard as route
    from bastion.validation.guard import build_guard as validation

    return [idempotency, validation, rate_limits, faults, unknown_keys, route]


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
        inherited: Mapping[Hashable, Resource] | None = None,
        file_config: Config | None = None,
    ) -> None:
        self.config = config
        #: The file's configuration, before admin changes (what the description is compiled from).
        self.file_config = config if file_config is None else file_config
        self.logger = logger
        self.metrics = metrics
        self.clients = clients
        self.application = application
        self.resources = resources
        self._compile = compile_description
        self._description: CompiledDescription | None = None
        self._compiled = False
        self._inherited = inherited or {}
        #: The resources :meth:`shared` handed out, by key (the next reload inherits them).
        self.shared_resources: dict[Hashable, Resource] = {}

    def add_resource(self, resource: Resource) -> None:
        """Open ``resource`` at start-up and close it at shutdown."""
        self.resources.append(resource)

    def shared(self, key: Hashable, open_resource: Callable[[], R]) -> R:
        """The resource ``key`` names, kept across reloads (``key``: what makes two the same,
        such as the capability, the store's URL and the settings that shape the store).

        The configuration in force before a reload hands over its own, open and with its
        state (memory counters, pools); otherwise ``open_resource()`` makes one, which is
        registered like :meth:`add_resource`'s.
        """
        resource = self._inherited.get(key)
        if resource is None:
            resource = open_resource()
            self.add_resource(resource)
        self.shared_resources[key] = resource
        return resource  # type: ignore[return-value]

    def carried(self) -> list[Resource]:
        """The resources :meth:`shared` took over from the configuration before."""
        return [r for key, r in self.shared_resources.items() if self._inherited.get(key) is r]

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
    :meth:`reload` replaces the configuration while requests are served.
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
        #: Where :meth:`reload` without an argument reads the configuration again.
        self._source = config
        self._env = env
        first = load_config(config, env=env)
        #: The configuration of the file (and the environment) alone, before admin changes.
        self.file_config = first
        #: The admin changes laid over it (see :mod:`bastion.control.changes`).
        self._changes: Changes = {}
        # The logger and the metrics registry live as long as the instance: a reload keeps
        # every counter (logging and metrics settings apply at the next start).
        self.metrics = Metrics() if first.metrics.enabled else None
        self.logger = make_logger(
            first.logging.level, log_stream, on_drop=dropped_lines_counter(self.metrics, "event")
        )
        self._log_stream = log_stream
        self._reloads = ReloadLog(self.logger, self.metrics)
        #: Resources registered on the instance rather than by a guard builder (the
        #: gateway's upstream pool): opened once, kept across reloads.
        self._own: list[Resource] = []
        self._retiring: set[asyncio.Task[None]] = set()
        #: Generations retired whose resources are not closed yet.
        self._retired: set[Generation] = set()
        self._started = False
        self._lock: asyncio.Lock | None = None
        if first.errors.framework_adapters:
            install_problem_handlers(app)
        self._generation = self._build(first)
        #: The admin layer's keeper, when the configuration has an admin API or store.
        self.admin: AdminControl | None = None
        if first.admin.listen is not None or first.admin.store is not None:
            from bastion.control.admin import AdminControl

            self.admin = AdminControl(self)
            self.add_resource(self.admin)

    def _build(
        self, config: Config, before: Generation | None = None, *, file: Config | None = None
    ) -> Generation:
        """A complete chain for ``config``; raises (changing nothing) when it cannot be built.

        The shared resources of ``before`` (the generation in force) pass on to it.
        ``file`` is the configuration of the file that ``config`` lays admin changes over
        (``config`` itself when there are none): the OpenAPI description is compiled from
        it, so a generation built from the same file object (an admin change) reuses the
        description ``before`` compiled rather than loading it again.
        """
        file = config if file is None else file
        source = file

        def compile_description() -> CompiledDescription | None:
            return compile_configured(source, self.logger)

        if before is not None and before.context.file_config is file:
            compile_description = before.context.description
        resources: list[Resource] = []
        clients = ClientIdentifier(config.clients)
        context = BuildContext(
            config,
            logger=self.logger,
            metrics=self.metrics,
            clients=clients,
            application=self.app,
            resources=resources,
            compile_description=compile_description,
            inherited=before.context.shared_resources if before is not None else None,
            file_config=file,
        )
        inner: ASGIApp = self.app
        for build in _capability_builders():
            guard = build(inner, context)
            if guard is not None:
                inner = guard
        chain = BoundaryGuard(
            inner,
            type_base=config.errors.problem_links(),
            metrics=self.metrics,
            metrics_path=config.metrics.path,
            logger=self.logger,
            clients=clients,
            access_log=AccessLog(self._log_stream, on_drop=dropped_lines_counter(self.metrics, "access"))
            if config.logging.access
            else None,
            observability=config.observability,
            application=self.app,
            normalize_upstream=config.errors.normalize_upstream,
            panel=ControlPanel(self),
        )
        # What is registered once the chain is built (``add_resource``, the gateway's
        # proxy attaching to ``context``) belongs to the instance, not to this generation.
        context.resources = self._own
        return Generation(config, context, chain, resources, context.carried())

    @property
    def config(self) -> Config:
        """The configuration in force (the one new requests run under)."""
        return self._generation.config

    @property
    def context(self) -> BuildContext:
        """What the guard builders of the configuration in force saw (see :class:`BuildContext`)."""
        context: BuildContext = self._generation.context
        return context

    @property
    def clients(self) -> ClientIdentifier:
        """Who sent a request, worked out as the configuration in force says (``clients``)."""
        return self.context.clients

    @property
    def resources(self) -> list[Resource]:
        """Every resource in force: the guards' stores, then those registered on the instance."""
        return [*self._generation.resources, *self._own]

    @property
    def _chain(self) -> ASGIApp:
        return self._generation.chain

    def add_resource(self, resource: Resource) -> None:
        """Register a resource to open at start-up and close at shutdown (kept across reloads)."""
        self._own.append(resource)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not self._started:
                await self.startup()
            # Read once: the request ends on the chain it started on, whatever reloads meanwhile.
            generation = self._generation
            generation.enter()
            try:
                await generation.chain(scope, receive, send)
            finally:
                generation.leave()
        elif kind == "lifespan":
            await self._lifespan(scope, receive, send)
        elif kind == "websocket" and self._guards_handshakes:
            await guard_handshake(self, scope, receive, send)
        else:
            await self.app(scope, receive, send)

    def http_generation(self) -> Generation | None:
        """The generation new HTTP requests run on once every resource is open, else ``None``.

        For a server of bastion's own (the gateway) to call the chain without
        :meth:`__call__`'s coroutine in between: it calls ``enter()`` right away, then
        the generation's ``chain``, then ``leave()`` however the chain ends.
        Anyone else calls the instance.
        """
        return self._generation if self._started else None

    def _lock_now(self) -> asyncio.Lock:
        # Created on first use, inside the event loop that serves.
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def reload(self, config: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None) -> bool:
        """Replace the configuration, between requests; ``True`` when the new one is in force.

        ``config`` is what :class:`Bastion` takes; without it, the configuration is read
        again from where it first came from (the file, plus the environment). The admin
        changes in force are laid over it again. The new chain is built, its description
        compiled and its stores opened before anything changes: on any problem the
        configuration in force stays, every problem is logged and
        ``bastion_config_reloads_total{result="error"}`` counts it. Requests in flight
        finish under the configuration they started with; the old stores close once they
        have. Reloads run one at a time.
        """
        source = self._source if config is None else config
        return await self._reload(lambda: load_config(source, env=self._env))

    async def apply_admin_changes(self, changes: Changes, *, starting: bool = False) -> bool:
        """Lay ``changes`` (every admin change, as the store holds them) over the file's
        configuration and reload as :meth:`reload` does, without reading the file again.

        ``starting``: called by :meth:`startup`, which holds the reload lock already.
        """
        self._changes = changes
        return await self._reload(lambda: self.file_config, starting=starting)

    def check_admin_changes(self, changes: Changes) -> None:
        """Raise what a reload would refuse if ``changes`` replaced the admin changes in force
        (the configuration is validated and its chain built, then thrown away)."""
        self._build(self._layered(self.file_config, changes), self._generation, file=self.file_config)

    def _layered(self, file: Config, changes: Changes) -> Config:
        """``file`` with the admin ``changes`` laid over it."""
        if not changes:
            return file
        return load_config(apply_changes(file, changes), env={})

    async def _reload(self, read_file: Callable[[], Config], *, starting: bool = False) -> bool:
        if starting:
            return await self._swap(read_file, opened=True)
        async with self._lock_now():
            return await self._swap(read_file, opened=self._started)

    async def _swap(self, read_file: Callable[[], Config], *, opened: bool) -> bool:
        """Build the new generation and put it in force (``opened``: the resources in force are open)."""
        try:
            file = read_file()
            new = self._layered(file, self._changes)
            generation = self._build(new, self._generation, file=file)
            if opened:
                await generation.open(self.logger)
        except Exception as exc:
            self._reloads.failed(exc)
            return False
        self.file_config = file
        old, self._generation = self._generation, generation
        if opened:
            self._retire(old)
        self._reloads.succeeded(old.config, new)
        return True

    def _retire(self, old: Generation) -> None:
        """Close ``old``'s resources once the requests that started on it have ended
        (those a generation still in use shares stay open)."""
        self._retired.add(old)

        async def close_when_finished() -> None:
            try:
                await old.finished()
            finally:
                # Also when shutdown cancels the wait: the resources close either way.
                self._retired.discard(old)
                await old.close(self.logger, keep=[self._generation, *self._retired])

        task = asyncio.get_running_loop().create_task(close_when_finished())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def startup(self) -> None:
        """Open every resource (idempotent; concurrent callers wait for one start)."""
        if self._started:
            return
        async with self._lock_now():
            if self._started:
                return
            await open_all(self.resources, self.logger)
            if self.admin is not None:
                # The admin changes apply before the first request (the lock is held: no
                # request runs, and the reload they make does not take it again).
                await self.admin.sync(starting=True)
            self._started = True
            self.logger.debug("bastion started", resources=[r.name for r in self.resources])

    async def shutdown(self) -> None:
        """Close every resource, in reverse order of opening (a retired chain's too)."""
        if not self._started:
            return
        self._started = False
        retiring = list(self._retiring)
        if retiring:
            # The server has drained its requests by now; a retired chain still waiting closes anyway.
            _, waiting = await asyncio.wait(retiring, timeout=1)
            for task in waiting:
                task.cancel()
            await asyncio.gather(*retiring, return_exceptions=True)
        await close_all(self.resources, self.logger)
        # Every line so far reaches the stream before the server exits (bounded: a stream
        # nobody reads does not hold the stop up).
        await asyncio.to_thread(flush_writers)

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
