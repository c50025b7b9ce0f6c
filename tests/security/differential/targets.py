"""The frameworks the differential suite compares bastion with, each as a real server.

Every target answers ``POST /echo`` with JSON saying how that framework reads the
request's ``role`` in each place (query, ``x-role`` header, ``role`` cookie, form
field), the way an application written for it would ask: one value, by name.
Each listens on a free loopback port and is stopped when the suite ends.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

HERE = Path(__file__).parent
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def _form_value(value: Any) -> Any:
    """A form reading as JSON: text as it is, an uploaded file as a marker."""
    if value is None or isinstance(value, str):
        return value
    return "<file>"


def send_raw(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, Any]:
    """Send ``request`` as it is and read the answer to the end: ``(status, JSON body or text)``."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _unchunk(body)
    try:
        return status, orjson.loads(body)
    except orjson.JSONDecodeError:
        return status, body.decode("latin-1")


def _unchunk(body: bytes) -> bytes:
    out = []
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(rest[:size])
        body = rest[size + 2 :]
    return b"".join(out)


class Target:
    """A server in a background thread (or process) with a ``stop``."""

    def __init__(self, name: str, port: int, stop: Callable[[], None]) -> None:
        self.name = name
        self.port = port
        self.stop = stop


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_listening(port: int, alive: Callable[[], bool], timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the server for port {port} exited")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def starlette_app() -> Any:
    """The Starlette application: what FastAPI and Starlette handlers read."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request: Request) -> JSONResponse:
        readings: dict[str, Any] = {
            "query": request.query_params.get("role"),
            "header": request.headers.get("x-role"),
            "cookie": request.cookies.get("role"),
        }
        if request.headers.get("content-type", "").startswith(FORM_TYPES):
            form = await request.form()
            readings["form"] = _form_value(form.get("role"))
        return JSONResponse(readings)

    return Starlette(routes=[Route("/echo", echo, methods=["POST"])])


def start_bastion(config: dict[str, Any]) -> Target:
    """bastion's middleware around the Starlette app, served by uvicorn (httptools) in a thread."""
    import uvicorn

    from bastion import Bastion

    port = _free_port()
    app = Bastion(starlette_app(), config, env={})
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", proxy_headers=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    _wait_until_listening(port, thread.is_alive)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return Target("bastion+starlette", port, stop)


def start_aiohttp() -> Target:
    """An aiohttp web application in its own event loop and thread."""
    from aiohttp import web

    async def echo(request: web.Request) -> web.Response:
        readings: dict[str, Any] = {
            "query": request.query.get("role"),
            "header": request.headers.get("x-role"),
            "cookie": request.cookies.get("role"),
        }
        if request.headers.get("content-type", "").startswith(FORM_TYPES):
            form = await request.post()
            readings["form"] = _form_value(form.get("role"))
        return web.Response(body=orjson.dumps(readings), content_type="application/json")

    port = _free_port()
    loop = asyncio.new_event_loop()
    application = web.Application()
    application.router.add_post("/echo", echo)
    runner = web.AppRunner(application, access_log=None)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", port).start())
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    _wait_until_listening(port, thread.is_alive)

    def stop() -> None:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    return Target("aiohttp", port, stop)


def start_werkzeug() -> Target:
    """A Werkzeug (Flask's request layer) application on Werkzeug's own server."""
    from werkzeug.serving import make_server
    from werkzeug.wrappers import Request, Response

    @Request.application  # type: ignore[arg-type]
    def echo(request: Request) -> Response:
        readings: dict[str, Any] = {
            "query": request.args.get("role"),
            "header": request.headers.get("x-role"),
            "cookie": request.cookies.get("role"),
        }
        if (request.content_type or "").startswith(FORM_TYPES):
            value = request.form.get("role")
            if value is None and "role" in request.files:
                value = "<file>"
            readings["form"] = value
        return Response(orjson.dumps(readings), content_type="application/json")

    server = make_server("127.0.0.1", 0, echo, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(10)

    return Target("werkzeug", server.server_port, stop)


def start_express(workdir: Path) -> Target | None:
    """The Express echo app under node, or ``None`` where node or express is missing."""
    import shutil
    import subprocess

    from tests.gateway.conftest import EXPRESS_APP, express_ready

    if shutil.which("node") is None:
        return None
    express_ready()
    port = _free_port()
    log = (workdir / "express-echo.stderr").open("wb")
    process = subprocess.Popen(
        ["node", str(HERE / "echo_express.js")],
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "PORT": str(port),
            "NODE_PATH": str(EXPRESS_APP / "node_modules"),
        },
        stdout=log,
        stderr=log,
    )
    _wait_until_listening(port, lambda: process.poll() is None)

    def stop() -> None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        log.close()

    return Target("express", port, stop)
