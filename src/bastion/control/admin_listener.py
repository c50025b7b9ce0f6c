"""The admin API's own listener: a small aiohttp server that hands each request to an ASGI app.

It listens apart from traffic, on ``admin.listen``; every worker process binds the
same port (``SO_REUSEPORT``), so whichever worker answers applies the change at once
and the others within ``admin.poll_interval``. Admin bodies are small: a request is
read whole (at most 256 KiB) and handed on as one ``http.request`` message.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bastion.asgi import ASGIApp, Message

#: The largest admin request body read.
MAX_BODY = 256 * 1024


class AdminListener:
    """Serves one ASGI app on ``host:port`` with aiohttp."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self.app = app
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen."""
        server = web.Application(client_max_size=MAX_BODY)
        server.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(server, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port, reuse_port=True).start()

    async def stop(self) -> None:
        """Stop listening and close the connections."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        sock = request.transport.get_extra_info("sockname") if request.transport else None
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": f"{request.version.major}.{request.version.minor}",
            "method": request.method,
            "scheme": "http",
            "path": request.path,
            "raw_path": request.raw_path.split("?", 1)[0].encode("latin-1"),
            "query_string": request.query_string.encode("latin-1"),
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.raw_headers],
            "client": tuple(peer[:2]) if peer else None,
            "server": tuple(sock[:2]) if sock else None,
        }
        sent = False

        async def receive() -> Message:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []

        async def send(message: Message) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(scope, receive, send)
        response = web.Response(status=status, body=b"".join(chunks))
        for name, value in headers:
            if name.lower() not in (b"content-length", b"transfer-encoding"):
                response.headers.add(name.decode("latin-1"), value.decode("latin-1"))
        return response
