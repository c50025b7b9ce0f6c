"""The admin port: metrics, health and readiness on their own port, away from clients.

Each worker process serves it on the same port (``SO_REUSEPORT``); whichever
worker answers a scrape reports the sum over every worker, because the metrics
of a multi-process gateway live in shared files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from bastion.gateway.server import HEALTH_PATH, READY_PATH
from bastion.ratelimit.observed import OBSERVED_PATH, observed_snapshot

if TYPE_CHECKING:
    from bastion.gateway.server import GatewayApp


class AdminServer:
    """A small aiohttp server for the operations endpoints of one gateway worker."""

    def __init__(self, gateway: GatewayApp, host: str, port: int) -> None:
        self.gateway = gateway
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    def _app(self) -> web.Application:
        app = web.Application()
        app.router.add_get(HEALTH_PATH, self._health)
        app.router.add_get(READY_PATH, self._ready)
        if self.gateway.bastion.metrics is not None:
            app.router.add_get(self.gateway.config.metrics.path, self._metrics)
        app.router.add_get(OBSERVED_PATH, self._observed)
        return app

    async def _observed(self, _request: web.Request) -> web.Response:
        """This worker's observed client rates, for ``bastion limits suggest --url``."""
        body = observed_snapshot(self.gateway.bastion.resources)
        return web.json_response(body, headers={"Cache-Control": "no-store"})

    async def start(self) -> None:
        """Listen on the admin port."""
        self._runner = web.AppRunner(self._app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_port=True)
        await site.start()

    async def stop(self) -> None:
        """Stop listening and close the admin connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _health(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"}, headers={"Cache-Control": "no-store"})

    async def _ready(self, _request: web.Request) -> web.Response:
        failing = await self.gateway.failing_resources()
        if not failing:
            return web.json_response({"status": "ready"}, headers={"Cache-Control": "no-store"})
        # Only operators reach this port: name what is down.
        return web.json_response(
            {"status": "not ready", "unreachable": failing},
            status=503,
            headers={"Cache-Control": "no-store", "Retry-After": "5"},
        )

    async def _metrics(self, _request: web.Request) -> web.Response:
        metrics = self.gateway.bastion.metrics
        assert metrics is not None
        return web.Response(body=metrics.exposition(), headers={"Content-Type": metrics.content_type})
