"""What the upstream pool writes and refuses: the request head, the limits on an answer, the errors.

:mod:`bastion.gateway.pool` sends requests with :func:`request_head`; its
connections (:mod:`bastion.gateway.pool_connection`) parse answers within these
limits and fail with these errors, which the proxy turns into ``502`` and ``504``
problems.
"""

from __future__ import annotations

from bastion.gateway.headers import NOT_TOKEN
from bastion.gateway.seam import RequestBody
from bastion.gateway.upstream import READ_BUFSIZE

#: The most header fields a response head may have.
MAX_HEADERS = 200
#: The most bytes a response may send before its final head is complete (interim heads
#: included), or between two pieces of its body (chunk lines, trailers): no more of a
#: head is held than of a body.
MAX_HEAD_BYTES = READ_BUFSIZE
#: Methods that get no ``Content-Length: 0`` when they have no body (aiohttp's ``GET_METHODS``).
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
#: Above this size a buffered body is written after its head rather than copied onto it.
COPY_LIMIT = 65_536
#: What a method may be made of (RFC 9110 ``token``).


class UpstreamError(Exception):
    """The upstream could not be reached, broke off, or answered what cannot be relayed."""


class UpstreamConnectError(UpstreamError):
    """No connection to the upstream could be opened."""


class UpstreamDisconnected(UpstreamError):
    """The connection closed before the response was complete."""


class StaleConnection(UpstreamDisconnected):
    """A reused keep-alive connection was closed before any byte of an answer came."""


class UpstreamBadResponse(UpstreamError):
    """The upstream's answer is not a well-formed HTTP/1.1 response (or is too large a head)."""


class UpstreamConnectTimeout(TimeoutError):
    """No connection to the upstream could be made within ``connect_timeout``."""


class UpstreamReadTimeout(TimeoutError):
    """The upstream stayed silent longer than ``read_timeout``."""


def request_head(
    method: str, target: str, host: str | None, headers: list[tuple[str, str]], data: RequestBody
) -> tuple[bytes, int | None]:
    """The request head, and the length a streamed body declared (``None``: chunked or not streamed).

    ``host`` goes first as ``Host`` unless ``None`` (``preserve_host``). The body's
    framing is this function's: a buffered body's own ``Content-Length`` replaces any
    given (no body: ``0``), and ``Transfer-Encoding`` is never taken from the caller.
    """
    lines = [method, " ", target, " HTTP/1.1\r\n"]
    if host is not None:
        lines.append(f"Host: {host}\r\n")
    declared: str | None = None
    for name, value in headers:
        size = len(name)
        if size == 14 or size == 17:
            lowered = name.lower()
            if lowered == "content-length":
                if declared is not None and declared != value:
                    raise UpstreamError("the request has two different Content-Length values")
                declared = value
                continue
            if lowered == "transfer-encoding":
                continue
        lines.append(f"{name}: {value}\r\n")
    length: int | None = None
    if data is None:
        # No body is sent, whatever length was given: the upstream must not wait for one.
        if declared is not None or method not in _BODYLESS_METHODS:
            lines.append("Content-Length: 0\r\n")
    elif isinstance(data, bytes):
        lines.append(f"Content-Length: {len(data)}\r\n")
    elif declared is None:
        lines.append("Transfer-Encoding: chunked\r\n")
    else:
        if not declared.isdigit() or not declared.isascii():
            raise UpstreamError(f"the request's Content-Length is not a length: {declared!r}")
        length = int(declared)
        lines.append(f"Content-Length: {length}\r\n")
    lines.append("\r\n")
    head = "".join(lines)
    # One scan each for what would split the head: every line ends in the one CRLF added here.
    breaks = len(lines) - 3
    if (
        head.count("\n") != breaks
        or head.count("\r") != breaks
        or "\0" in head
        or " " in target
        or not method.isascii()
        or not method
        or 1 in method.encode().translate(NOT_TOKEN)
    ):
        raise UpstreamError("a request header, the method or the target holds CR, LF, NUL or a space")
    try:
        return head.encode("latin-1"), length
    except UnicodeEncodeError as exc:
        raise UpstreamError("a request header is not latin-1") from exc
