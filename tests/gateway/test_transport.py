"""The gateway's HTTP protocol: coalesced writes, and response heads checked as uvicorn checks them."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from bastion.gateway.transport import CoalescingTransport, GatewayResponseCycle


class RecordingTransport:
    """What a cycle wrote, and whether it closed the connection."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def write_eof(self) -> None:
        self.writes.append(b"<eof>")

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 0

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def _cycle(kind: type[RequestResponseCycle], method: str, keep_alive: bool) -> tuple[Any, RecordingTransport]:
    transport = RecordingTransport()
    cycle = kind(
        scope={"type": "http", "method": method, "path": "/", "headers": []},  # type: ignore[typeddict-item]
        transport=transport,  # type: ignore[arg-type]
        flow=FlowControl(transport),  # type: ignore[arg-type]
        logger=logging.getLogger("test"),
        access_logger=logging.getLogger("test.access"),
        access_log=False,
        default_headers=[],
        message_event=asyncio.Event(),
        expect_100_continue=False,
        keep_alive=keep_alive,
        on_response=lambda: None,
    )
    return cycle, transport


async def _run(cycle: Any, messages: list[dict[str, Any]]) -> str | None:
    try:
        for message in messages:
            await cycle.send(message)
    except RuntimeError as exc:
        return str(exc)
    return None


NAMES = st.one_of(
    st.sampled_from(
        [b"content-type", b"Content-Length", b"transfer-encoding", b"connection", b"x-a", b"traceparent"]
    ),
    st.binary(min_size=1, max_size=12),
)
VALUES = st.one_of(
    st.sampled_from([b"12", b"0", b"chunked", b"Chunked", b"close", b"keep-alive, Close", b"a b", b"x\tz"]),
    st.binary(max_size=16),
)


MESSAGES_AFTER_THE_HEAD = st.lists(
    st.one_of(
        st.fixed_dictionaries(
            {
                "type": st.just("http.response.body"),
                "body": st.sampled_from([b"", b"hello", b"x" * 12]),
                "more_body": st.booleans(),
            }
        ),
        st.just({"type": "http.response.start", "status": 200, "headers": []}),
        st.just({"type": "http.response.trailers"}),
    ),
    max_size=4,
)


@st.composite
def framed_responses(draw: st.DrawFn) -> tuple[list[tuple[bytes, bytes]], list[dict[str, Any]]]:
    """A head whose framing fits its body (or is off by one, or absent), then the body messages."""
    chunks = draw(st.lists(st.sampled_from([b"", b"ab", b"hello"]), min_size=1, max_size=4))
    size = sum(len(c) for c in chunks) + draw(st.sampled_from([0, 0, 0, -1, 1]))
    framing = draw(st.sampled_from(["length", "chunked", "none", "close"]))
    headers = [(b"content-type", b"text/plain")]
    if framing == "length":
        headers.append((draw(st.sampled_from([b"content-length", b"Content-Length"])), str(size).encode()))
    elif framing == "chunked":
        headers.append((b"transfer-encoding", b"chunked"))
    elif framing == "close":
        headers += [(b"content-length", str(size).encode()), (b"connection", b"close")]
    bodies = [
        {"type": "http.response.body", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ]
    return headers, bodies


@settings(max_examples=300, deadline=None)
@given(
    response=framed_responses(),
    status=st.sampled_from([200, 204, 304]),
    method=st.sampled_from(["GET", "HEAD"]),
    keep_alive=st.booleans(),
)
def test_framed_responses_are_written_as_uvicorn_writes_them(
    response: tuple[list[tuple[bytes, bytes]], list[dict[str, Any]]],
    status: int,
    method: str,
    keep_alive: bool,
) -> None:
    headers, bodies = response
    messages = [{"type": "http.response.start", "status": status, "headers": headers}, *bodies]
    assert _outcome(GatewayResponseCycle, messages, method, keep_alive) == _outcome(
        RequestResponseCycle, messages, method, keep_alive
    )


def _outcome(
    kind: type[RequestResponseCycle], messages: list[dict[str, Any]], method: str, keep_alive: bool
) -> tuple[Any, ...]:
    cycle, transport = _cycle(kind, method, keep_alive)
    try:
        error = asyncio.run(_run(cycle, messages))
    except ValueError as exc:  # a Content-Length that is not a number: int() refuses it in both
        error = f"ValueError {exc}"
    return (
        error,
        transport.writes,
        transport.closed,
        cycle.response_started,
        cycle.response_complete,
        cycle.keep_alive,
        cycle.chunked_encoding,
        cycle.expected_content_length,
    )


@settings(max_examples=500, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 304, 404, 500]),
    headers=st.lists(st.tuples(NAMES, VALUES), max_size=8),
    method=st.sampled_from(["GET", "HEAD", "POST"]),
    keep_alive=st.booleans(),
    after=MESSAGES_AFTER_THE_HEAD,
    first=st.sampled_from(["http.response.start", "http.response.body"]),
)
def test_the_gateway_cycle_writes_and_refuses_exactly_what_uvicorn_does(
    status: int,
    headers: list[tuple[bytes, bytes]],
    method: str,
    keep_alive: bool,
    after: list[dict[str, Any]],
    first: str,
) -> None:
    messages = [{"type": first, "status": status, "headers": headers}, *after]
    assert _outcome(GatewayResponseCycle, messages, method, keep_alive) == _outcome(
        RequestResponseCycle, messages, method, keep_alive
    )


def test_invalid_header_names_and_values_are_still_refused() -> None:
    for headers, error in [
        ([(b"x-ok", b"1"), (b"bad name", b"1")], "Invalid HTTP header name."),
        ([(b"x-ok", b"1"), (b"x-b", b"a\r\nInjected: yes")], "Invalid HTTP header value."),
    ]:
        cycle, transport = _cycle(GatewayResponseCycle, "GET", True)
        message = {"type": "http.response.start", "status": 200, "headers": headers}
        assert asyncio.run(_run(cycle, [message])) == error
        assert transport.writes == []


def test_writes_of_one_event_loop_turn_leave_as_one() -> None:
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(b"body")
        assert inner.writes == []  # nothing before the turn ends
        await asyncio.sleep(0)
        transport.write(b"more")
        transport.close()  # close sends what is gathered first
        return inner.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"more"]


@pytest.mark.parametrize("finish", ["write_eof", "abort"])
def test_half_close_flushes_and_abort_drops(finish: str) -> None:
    async def scenario() -> list[bytes]:
        inner = RecordingTransport()
        transport = CoalescingTransport(inner, asyncio.get_running_loop())  # type: ignore[arg-type]
        transport.write(b"gathered")
        getattr(transport, finish)()
        await asyncio.sleep(0)
        return inner.writes

    expected = [b"gathered", b"<eof>"] if finish == "write_eof" else []
    assert asyncio.run(scenario()) == expected


def test_the_version_fence_refuses_a_uvicorn_of_another_release_or_shape(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import uvicorn
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from bastion.gateway import uvicorn_fit

    assert uvicorn_fit.shape_problem() is None  # the installed uvicorn is one the protocols fit
    for version in ("0.29.0", "1.0.0", "2024.1"):
        monkeypatch.setattr(uvicorn, "__version__", version)
        assert uvicorn_fit.shape_problem() is not None, version
    monkeypatch.undo()
    monkeypatch.delattr(HttpToolsProtocol, "_start_asgi_task")
    assert "_start_asgi_task" in (uvicorn_fit.shape_problem() or "")
    monkeypatch.undo()
    monkeypatch.setattr(RequestResponseCycle, "__init__", lambda self, transport, flow: None)
    assert uvicorn_fit.shape_problem() == "uvicorn's httptools protocol takes other arguments"
