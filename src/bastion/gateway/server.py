"""``bastion gateway``: the proxy behind every guard, served by uvicorn in one or more processes.

The served app is :class:`GatewayApp`: the operations endpoints (``/_bastion/health``,
``/_bastion/ready``) answered before the guard chain, then
``Bastion(ProxyApp(upstream), config)``. With ``--workers N`` uvicorn starts N
processes on one port; each builds its app from the configuration file named in
``BASTION_CONFIG`` (plus the ``BASTION_...`` overrides the command line sets), so
every worker runs the same configuration. SIGTERM stops accepting connections,
lets requests in flight finish within ``gateway.drain_timeout``, then exits.
SIGHUP (and with ``--watch`` a changed file) reloads the configuration and the
OpenAPI description in every worker, without a restart (docs/reload.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import socket
from pathlib import Path
from typing import Any

import orjson

from bastion.asgi import Message, Receive, Scope, Send
from bastion.config import Config, ConfigError, load_config
from bastion.config.gateway import GatewayConfig
from bastion.control.watch import Reloader
from bastion.gateway.proxy import ProxyApp
from bastion.gateway.seam import UpstreamTransport
from bastion.observability.logging import make_logger
from bastion.problems import BadRequest, DependencyUnavailable, NotFound, Problem, render
from bastion.routing.paths import canonicalize
from bastion.stack import Bastion
from bastion.tracing import new_span_id, new_trace_id
from bastion.validation.compile import check_description

HEALTH_PATH = "/_bastion/health"
READY_PATH = "/_bastion/ready"
CONFIG_ENV = "BASTION_CONFIG"
#: Set (to ``1``) when ``--watch`` asks every worker to reload on a changed file.
WATCH_ENV = "BASTION_CONFIG_WATCH"
_PING_TIMEOUT = 2.0


class GatewayApp:
    """The gateway's ASGI app: operations endpoints first, then bastion around the proxy."""

    def __init__(
        self, bastion: Bastion, proxy: ProxyApp, *, tune_gc: bool = False, reloader: Reloader | None = None
    ) -> None:
        self.bastion = bastion
        #: Reloads the configuration on SIGHUP (and ``--watch``) while the app serves.
        self.reloader = reloader
        #: Whether start-up tunes this process's garbage collector (``gateway.gc_*``): the
        #: gateway's own worker processes do; an app embedded in another process does not.
        self.tune_gc = tune_gc
        self.proxy = proxy
        self.config: Config = bastion.config
        self.type_base = self.config.errors.problem_links()
        admin_port = self.config.gateway.admin_port
        # With an admin port, metrics are served there only, not to every client.
        self.hidden_metrics_path = (
            self.config.metrics.path if admin_port is not None and bastion.metrics is not None else None
        )
        self.admin: Any = None
        self._startup_check: asyncio.Task[None] | None = None
        if admin_port is not None:
            from bastion.gateway.admin import AdminServer

            self.admin = AdminServer(self, self.config.gateway.host, admin_port)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            # Compared in canonical form (``//metrics`` is ``/metrics``). The scope keeps it
            # settled, so the boundary's own call costs a lookup; a path it refuses is
            # refused there, with its problem.
            with contextlib.suppress(BadRequest):
                canonicalize(scope)
            path = scope["path"]
            if path == HEALTH_PATH:
                await self.send_health(send)
                return
            if path == READY_PATH:
                await self.send_ready(path, send)
                return
            if path == self.hidden_metrics_path:
                await self._send_problem(NotFound(), path, send)
                return
            # Once started, the guard chain itself: one coroutine fewer per request. The
            # generation is read once: the request ends under the configuration it began with.
            generation = self.bastion.http_generation()
            if generation is not None:
                generation.enter()
                try:
                    await generation.chain(scope, receive, send)
                finally:
                    generation.leave()
                return
        elif kind == "lifespan" and (self.admin is not None or self.tune_gc or self.reloader is not None):
            await self._lifespan(scope, receive, send)
            return
        await self.bastion(scope, receive, send)

    async def send_health(self, send: Send) -> None:
        """``200``: the process is alive and serving (nothing else is checked)."""
        await _send_json(send, 200, {"status": "ok"})

    async def failing_resources(self) -> list[str]:
        """Names of the resources (stores, the upstream pool) that do not answer a ping."""
        try:
            await self.bastion.startup()
        except Exception as exc:
            self.bastion.logger.error("readiness: start-up failed", exc_info=exc)
            return ["start-up"]
        failing = []
        for resource in self.bastion.resources:
            try:
                ok = await asyncio.wait_for(resource.ping(), _PING_TIMEOUT)
            except Exception:
                ok = False
            if not ok:
                failing.append(resource.name)
        return failing

    async def send_ready(self, path: str, send: Send) -> None:
        """``200`` when every store and the upstream pool answer; else ``503 DEPENDENCY_UNAVAILABLE``."""
        failing = await self.failing_resources()
        if not failing:
            await _send_json(send, 200, {"status": "ready"})
            return
        self.bastion.logger.warning("not ready", unreachable=failing)
        problem = DependencyUnavailable(
            detail=f"not ready: {', '.join(failing)} cannot be reached",
            headers={"Retry-After": "5"},
            extensions={"unreachable": failing},
        )
        await self._send_problem(problem, path, send)

    async def _send_problem(self, problem: Problem, path: str, send: Send) -> None:
        trace_id = new_trace_id()
        rendered = render(
            problem,
            type_base=self.type_base,
            trace_id=trace_id,
            instance=path,
            extra_headers=[(b"traceparent", f"00-{trace_id}-{new_span_id()}-01".encode())],
        )
        await send({"type": "http.response.start", "status": rendered.status, "headers": rendered.headers})
        await send({"type": "http.response.body", "body": rendered.body, "more_body": False})

    async def _report_unreachable(self) -> None:
        """Log, once at start-up, every dependency that cannot be reached (``/_bastion/ready`` says 503)."""
        failing = await self.failing_resources()
        if failing:
            self.bastion.logger.warning(
                f"started, but {', '.join(failing)} cannot be reached:"
                " /_bastion/ready answers 503 until it can",
                unreachable=failing,
            )

    async def _lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        """bastion's lifespan, with the admin server, the reloader and the collector's tuning around it."""
        admin = self.admin
        reloader = self.reloader

        async def receive_and_stop_admin() -> Message:
            message = await receive()
            if message["type"] == "lifespan.shutdown":
                if reloader is not None:
                    await reloader.stop()
                if admin is not None:
                    await admin.stop()
            return message

        async def send_and_start_admin(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                if admin is not None:
                    try:
                        await admin.start()
                    except OSError as exc:
                        await send({"type": "lifespan.startup.failed", "message": f"admin port: {exc}"})
                        return
                if reloader is not None:
                    reloader.start()
                if self.tune_gc:
                    tune_gc(self.config.gateway)
                    # Once per worker, off the start-up path: a store or upstream that is down
                    # now is said at once, not first discovered by a client.
                    self._startup_check = asyncio.get_running_loop().create_task(self._report_unreachable())
            await send(message)

        await self.bastion(scope, receive_and_stop_admin, send_and_start_admin)


def tune_gc(settings: GatewayConfig) -> None:
    """Set up this process's garbage collector for serving (``gateway.gc_threshold``, ``gc_freeze``).

    Called once a worker has started: what is alive then (modules, configuration,
    compiled schemas) lives as long as the process, so after one last collection it is
    frozen out of every later one.
    """
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(settings.gc_threshold, middle, oldest)
    if settings.gc_freeze:
        gc.collect()
        gc.freeze()


async def _send_json(send: Send, status: int, data: dict[str, Any]) -> None:
    body = orjson.dumps(data)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def build_gateway(
    config: Config | str | os.PathLike[str] | None,
    *,
    tune_gc: bool = False,
    transport: UpstreamTransport | None = None,
    **bastion_options: Any,
) -> GatewayApp:
    """The gateway app for a configuration: operations endpoints, guards, proxy.

    ``tune_gc`` sets up the process's garbage collector at start-up (``gateway.gc_*``):
    for the gateway's own worker processes only. ``transport`` replaces the upstream
    connection pool (:mod:`bastion.gateway.seam`). ``bastion_options`` go to
    :class:`~bastion.Bastion` (``env``, ``log_stream``).
    Raises :class:`~bastion.config.ConfigError` when ``upstream`` is missing.
    """
    if not isinstance(config, Config):
        config = load_config(config, env=bastion_options.get("env"))
    if config.upstream is None:
        raise ConfigError([("upstream", "the gateway needs the upstream API's URL (or --upstream)")])
    proxy = ProxyApp.from_config(config, transport=transport)
    bastion = Bastion(proxy, config, **bastion_options)
    proxy.attach(bastion.context)
    return GatewayApp(bastion, proxy, tune_gc=tune_gc)


def app_from_environment() -> GatewayApp:
    """The factory each uvicorn worker calls: the configuration file in ``BASTION_CONFIG``.

    The worker reloads that file (and the environment) on SIGHUP, and with ``--watch``
    (``BASTION_CONFIG_WATCH``) when it or the OpenAPI description changes.
    """
    path = os.environ.get(CONFIG_ENV)
    gateway = build_gateway(path, tune_gc=True)
    bastion = gateway.bastion

    def files() -> list[str]:
        openapi = bastion.config.openapi
        return [name for name in (path, openapi) if name]

    # Made now, before start-up: from here on a SIGHUP reloads instead of ending the worker.
    gateway.reloader = Reloader(lambda: bastion.reload(path), files, watch=os.environ.get(WATCH_ENV) == "1")
    return gateway


def run_gateway(
    config_path: str | os.PathLike[str] | None,
    *,
    upstream: str | None = None,
    host: str | None = None,
    port: int | None = None,
    workers: int | None = None,
    admin_port: int | None = None,
    allow_per_process_state: bool = False,
    watch: bool = False,
) -> None:
    """Serve the gateway with uvicorn until SIGTERM or SIGINT (what ``bastion gateway`` runs).

    Every line it writes to standard error is JSON, uvicorn's own included; the client
    connections get the limits of :mod:`bastion.gateway.serving`. SIGHUP reloads the
    configuration in every worker; so does, with ``watch``, a change to its files.
    """
    import logging.config

    from bastion.gateway.serving import ServerLimits, raise_open_files_limit, serve, uvicorn_options
    from bastion.observability.logging import server_log_config

    log_config = server_log_config("warning")
    logging.config.dictConfig(log_config)

    # Command-line values travel to the workers as configuration overrides in the
    # environment, so a worker process builds exactly the configuration checked here.
    if config_path is not None:
        os.environ[CONFIG_ENV] = str(Path(config_path).resolve())
    else:
        os.environ.pop(CONFIG_ENV, None)
    overrides = {
        "BASTION_UPSTREAM": upstream,
        "BASTION_GATEWAY__HOST": host,
        "BASTION_GATEWAY__PORT": port,
        "BASTION_GATEWAY__WORKERS": workers,
        "BASTION_GATEWAY__ADMIN_PORT": admin_port,
    }
    for name, value in overrides.items():
        if value is not None:
            os.environ[name] = str(value)
    if watch:
        os.environ[WATCH_ENV] = "1"
    else:
        os.environ.pop(WATCH_ENV, None)
    config = load_config(os.environ.get(CONFIG_ENV))
    if config.upstream is None:
        raise ConfigError([("upstream", "the gateway needs the upstream API's URL (or --upstream)")])
    # Refused here, in one clear line, rather than in every worker after "listening".
    check_description(config)
    settings = config.gateway
    shared_state_problems = per_process_state(config) if settings.workers > 1 else []
    if shared_state_problems and not allow_per_process_state:
        raise ConfigError(shared_state_problems)
    if settings.workers > 1 and config.metrics.enabled:
        from bastion.observability.multiprocess import ENV_VAR, prepare_multiprocess_dir

        if not os.environ.get(ENV_VAR):
            prepare_multiprocess_dir()
    limits = ServerLimits.from_config(settings, config.errors.problem_links()).within_open_files(
        raise_open_files_limit(), reserved=settings.pool_size
    )
    # The address is tried first, so a port in use is one clear error, and "listening" is
    # only said of an address that can be bound.
    with socket.create_server((settings.host, settings.port)):
        pass
    logger = make_logger("info")
    logger.info(listening_line(config), listen=f"http://{settings.host}:{settings.port}")
    if shared_state_problems:
        logger.warning("per-process state with several workers", problems=dict(shared_state_problems))
    serve(
        "bastion.gateway.server:app_from_environment",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        lifespan="on",
        log_level="warning",
        log_config=log_config,
        access_log=False,
        **uvicorn_options(limits, coalesce=True, own=settings.server == "bastion"),
        # The upstream's Server and Date headers pass through; uvicorn must not add a second pair.
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=max(1, round(settings.drain_timeout.seconds)),
    )


def listening_line(config: Config) -> str:
    """The start-up line: where the gateway listens, with how many workers, on which stores."""
    from bastion.stores import parse_store_url

    settings = config.gateway
    workers = f"{settings.workers} worker{'s' if settings.workers != 1 else ''}"
    idempotency = parse_store_url(config.idempotency.store or config.store).redacted
    limits = parse_store_url(config.rate_limits.store or config.store)
    rate = limits.redacted if limits.kind in ("redis", "memory") else "memory://"
    admin = f", admin on http://{settings.host}:{settings.admin_port}" if settings.admin_port else ""
    return (
        f"listening on http://{settings.host}:{settings.port} ({workers}, idempotency store "
        f"{idempotency}, rate limit store {rate}{admin}), forwarding to {_public(config.upstream or '')}"
    )


def _public(url: str) -> str:
    """``url`` without credentials, for the start-up line."""
    from yarl import URL

    return str(URL(url).with_user(None))


def per_process_state(config: Config) -> list[tuple[str, str]]:
    """``(key, reason)`` for each store that several workers would each keep on their own.

    Rate limits on memory (or on SQLite or PostgreSQL, which they do not use) would
    allow each limit once per worker; idempotency on memory would not see another
    worker's keys, so a retry that lands elsewhere runs again.
    """
    from bastion.stores import parse_store_url

    workers = config.gateway.workers
    problems: list[tuple[str, str]] = []
    limits = parse_store_url(config.rate_limits.store or config.store)
    if limits.kind != "redis" and (config.rate_limits.rules or config.openapi):
        problems.append(
            (
                "rate_limits.store",
                f"rate limits would be kept per worker: {workers} workers allow each limit {workers} times."
                " Use a shared store (rate_limits.store: redis://HOST:6379/0) or --allow-per-process-state",
            )
        )
    if parse_store_url(config.idempotency.store or config.store).kind == "memory":
        problems.append(
            (
                "idempotency.store",
                "idempotency keys would be kept per worker: a retry that reaches another worker runs"
                " again. Use a shared store (sqlite:///PATH on one host, redis:// or postgresql://)"
                " or --allow-per-process-state",
            )
        )
    return problems
