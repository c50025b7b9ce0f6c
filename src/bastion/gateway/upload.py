"""The request side of the proxy: whether a request has a body, and the body streamed as it arrives.

A body no guard buffered goes upstream chunk by chunk as the client sends it;
:class:`UploadState` records how far it got, so that the proxy knows whether the
client left mid-upload (then nobody is left to answer) and whether the body was
all read before the response started.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from bastion.asgi import ClientDisconnected, Receive, Scope


class UploadState:
    """How far the streamed request body got."""

    __slots__ = ("client_gone", "finished")

    def __init__(self) -> None:
        self.finished = False
        self.client_gone = False


async def stream_request(receive: Receive, state: UploadState) -> AsyncIterator[bytes]:
    """The request body as it arrives, for the transport to send upstream (chunked when no length)."""
    while True:
        message = await receive()
        kind = message["type"]
        if kind == "http.disconnect":
            state.client_gone = True
            # Raising (not returning) makes the transport abort the upstream request, so the
            # upstream never mistakes a cut-off body for a complete one.
            raise ClientDisconnected
        if kind != "http.request":
            continue
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        if chunk:
            yield chunk
        if not more:
            state.finished = True
            return


def has_body(scope: Scope) -> bool:
    """Whether the request announces a body (a non-zero ``Content-Length``, or ``Transfer-Encoding``)."""
    length = None
    for key, value in scope["headers"]:
        if key == b"content-length":
            length = value
        elif key == b"transfer-encoding":
            return True
    # HTTP/1.1: a request with neither header has no body, whatever its method.
    return length is not None and length.strip() not in (b"0", b"")
