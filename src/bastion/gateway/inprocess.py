"""An :class:`~bastion.gateway.seam.UpstreamTransport` that calls an ASGI app in this process.

The proxy's behaviour (which headers go upstream, how errors and slow answers
become problems, what reaches the client) does not depend on sockets; with
:class:`AsgiTransport` it can be exercised against an app called directly. The
request reaches the app as an HTTP/1.1 scope: the URL's path and query, the
headers as the proxy built them (a ``Host`` from the URL first when the proxy sent
none, as the connection pool does), the body as the proxy hands it on. The
response comes back as its messages arrive.

Failures look as they do on the pool: ``gateway.read_timeout`` bounds the wait
for the head and every silence of the body (``TimeoutError``); an app that raises,
or ends without a whole response, fails with :class:`UpstreamAppError`. It carries no
WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import unquote

from yarl import URL

from bastion.asgi import ASGIApp, Message
from bastion.config.gateway import GatewayConfig
from bastion.gateway.seam import RequestBody


class UpstreamAppError(ConnectionError):
    """The in-process upstream raised, or ended without a whole response."""


class _Body:
    """The response body as the app sends it (the :class:`~bastion.gateway.seam.BodyStream`)."""

    def __init__(self, response: AsgiResponse) -> None:
        self._response = response

    async def readany(self) -> bytes:
        """The next chunk the app sent (``b""`` at the end)."""
        return await self._response.next_chunk()

    def at_eof(self) -> bool:
        """Whether the app sent its last chunk and all of it was read."""
        return self._response.at_end()


class AsgiResponse:
    """An in-process response whose head is in (a :class:`~bastion.gateway.seam.UpstreamResponse`)."""

    def __init__(self, read_timeout: float | None) -> None:
        #: The app's call (set once it is started).
        self.task: asyncio.Task[None] | None = None
        self.read_timeout = read_timeout
        self.status = 0
        self.raw_headers: tuple[tuple[bytes, bytes], ...] = ()
        self.content = _Body(self)
        self.head = asyncio.Event()
        self.chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue()
        #: Whether the app sent its last body message.
        self.finished = False

    async def next_chunk(self) -> bytes:
        """The next body chunk, within the read timeout."""
        if self.at_end():
            return b""
        async with asyncio.timeout(self.read_timeout):
            chunk = await self.chunks.get()
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk

    def at_end(self) -> bool:
        """Whether nothing more will come."""
        return self.finished and self.chunks.empty()

    def release(self) -> None:
        """Done with the response: the app, if still running, is stopped."""
        self.close()

    def close(self) -> None:
        """Stop the app now."""
        if self.task is not None and not self.task.done():
            self.task.cancel()


class AsgiTransport:
    """Calls ``app`` for every request the proxy sends (``config``: the read timeout)."""

    errors: tuple[type[BaseException], ...] = (UpstreamAppError,)
    #: A call has no connection to make: it never times out connecting.
    connect_timeouts: tuple[type[BaseException], ...] = ()
    fallback_reason: str | None = None

    def __init__(self, app: ASGIApp, config: GatewayConfig | None = None) -> None:
        self.app = app
        self.config = config if config is not None else GatewayConfig()
        self._open = False

    @property
    def closed(self) -> bool:
        """Whether the transport is closed (or was never opened)."""
        return not self._open

    async def start(self) -> None:
        """Open the transport (no WebSockets: nothing to return)."""
        self._open = True

    async def close(self) -> None:
        """Close the transport."""
        self._open = False

    async def reachable(self, url: URL) -> bool:
        """The app is always there while the transport is open."""
        return self._open

    async def send(
        self, method: str, url: URL, headers: list[tuple[str, str]], data: RequestBody
    ) -> AsgiResponse:
        """Call the app with the request; returns once it has sent its response head."""
        raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers]
        if not any(name == b"host" for name, _ in raw):
            raw.insert(0, (b"host", (url.raw_authority or "").encode("latin-1")))
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method.upper(),
            "scheme": url.scheme,
            "path": unquote(url.raw_path),
            "raw_path": url.raw_path.encode("latin-1"),
            "query_string": url.raw_query_string.encode("latin-1"),
            "root_path": "",
            "headers": raw,
            "server": (url.host or "", url.port),
            "client": ("127.0.0.1", 0),
        }
        read_timeout = self.config.read_timeout.seconds or None
        response = AsgiResponse(read_timeout)
        task = response.task = asyncio.get_running_loop().create_task(self._run(scope, data, response))
        head = asyncio.ensure_future(response.head.wait())
        try:
            async with asyncio.timeout(read_timeout):
                await asyncio.wait({head, task}, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            response.close()
            raise
        finally:
            head.cancel()
        if not response.head.is_set():
            raise UpstreamAppError("the upstream app ended without a response") from _failure(task)
        return response

    async def _run(self, scope: dict[str, Any], data: RequestBody, target: AsgiResponse) -> None:
        body = _request_messages(data)
        done = asyncio.Event()

        async def receive() -> Message:
            if not done.is_set():
                try:
                    return await anext(body)
                except StopAsyncIteration:
                    pass
                except Exception:  # the client left mid-upload: the upstream sees it leave
                    done.set()
            await done.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            kind = message["type"]
            if kind == "http.response.start":
                target.status = message["status"]
                target.raw_headers = tuple(message.get("headers", ()))
                target.head.set()
            elif kind == "http.response.body":
                more = message.get("more_body", False)
                chunk = message.get("body", b"")
                if chunk or not more:
                    target.chunks.put_nowait(chunk)
                if not more:
                    target.finished = True
                    done.set()

        try:
            await self.app(scope, receive, send)
        except Exception as exc:
            if not target.head.is_set():  # send() says so, the app's error as the cause
                raise UpstreamAppError("the upstream app raised") from exc
        finally:
            done.set()
        if not target.finished:  # the body reader gets the error in place of the rest
            target.chunks.put_nowait(UpstreamAppError("the upstream app broke off its response"))


async def _request_messages(data: RequestBody) -> AsyncIterator[Message]:
    """The request body as ASGI ``http.request`` messages."""
    if data is None or isinstance(data, bytes):
        yield {"type": "http.request", "body": data or b"", "more_body": False}
        return
    async for chunk in data:
        yield {"type": "http.request", "body": chunk, "more_body": True}
    yield {"type": "http.request", "body": b"", "more_body": False}


def _failure(task: asyncio.Task[None]) -> BaseException | None:
    """What ended ``task`` (it is done), if it failed."""
    with contextlib.suppress(asyncio.CancelledError):
        return task.exception()
    return None
