"""Upstream-side faults: the proxy's call to the upstream, slow or failing on purpose (docs/faults.md).

:func:`call_upstream` applies a :class:`~bastion.faults.Fault` the fault
guard chose for the request to the proxy's call, so that the client sees what it
would see if the upstream itself were slow or failing: the proxy's usual timeouts,
``502``/``504`` problems, an error response made a problem, a body cut off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.faults import Fault
    from bastion.gateway.seam import BodyStream, UpstreamResponse


class _CutBody:
    """A response body that breaks off after half its first chunk."""

    def __init__(self, content: BodyStream, failure: type[BaseException]) -> None:
        self._content = content
        self._failure = failure
        self._read = False

    async def readany(self) -> bytes:
        if self._read:
            raise self._failure("the upstream connection was reset (injected fault)")
        self._read = True
        chunk = await self._content.readany()
        return chunk[: len(chunk) // 2]

    def at_eof(self) -> bool:
        return False


class _CutResponse:
    """The upstream's response, whose body breaks off (an injected ``reset_mid_body``)."""

    def __init__(self, response: UpstreamResponse, failure: type[BaseException]) -> None:
        self._response = response
        self.status = response.status
        self.raw_headers = response.raw_headers
        self.content = _CutBody(response.content, failure)

    def release(self) -> None:
        self._response.close()

    def close(self) -> None:
        self._response.close()


class _EmptyBody:
    async def readany(self) -> bytes:
        return b""

    def at_eof(self) -> bool:
        return True


class _StatusResponse:
    """An upstream answer with an injected status and an empty plain-text body."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.raw_headers = ((b"Content-Type", b"text/plain"), (b"Content-Length", b"0"))
        self.content = _EmptyBody()

    def release(self) -> None:
        """Nothing to release."""

    def close(self) -> None:
        """Nothing to close."""


async def call_upstream(
    fault: Fault,
    send: Callable[[], Awaitable[UpstreamResponse]],
    *,
    read_timeout: float | None,
    failure: type[BaseException],
) -> UpstreamResponse:
    """``send()`` with ``fault`` applied, as the upstream would fail.

    A delay past ``read_timeout`` raises ``TimeoutError`` when the timeout runs out;
    ``drop`` (and ``status: 502``) raise ``failure``, the transport's own error, and
    ``status: 504`` ``TimeoutError``, so the proxy answers its usual 502 and 504. Any
    other status is the upstream's answer (an error body that is no problem then
    becomes one, as ``errors.normalize_upstream`` says); ``reset_mid_body`` lets the
    upstream answer and breaks its body off.
    """
    if fault.delay > 0:
        if read_timeout and fault.delay >= read_timeout:
            await asyncio.sleep(read_timeout)
            raise TimeoutError("the upstream did not answer in time (injected delay)")
        await asyncio.sleep(fault.delay)
    if fault.abort == "drop" or fault.status == 502:
        raise failure("the upstream dropped the connection (injected fault)")
    if fault.status == 504:
        raise TimeoutError("the upstream did not answer in time (injected fault)")
    if fault.abort == "status" and fault.status is not None:
        return _StatusResponse(fault.status)
    response = await send()
    if fault.abort == "reset_mid_body":
        return _CutResponse(response, failure)
    return response
