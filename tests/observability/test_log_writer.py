"""The log writer: lines off the request path, all of them at a clean stop, in order; a full queue drops.

Streams here are real pipes and files (only those get a writer), read by a thread of
the test or by nobody at all; the gateway runs as a process with its standard error
a pipe.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any
from unittest import mock

import httpx
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion import Bastion
from bastion.asgi import context_of
from bastion.observability import logging as bastion_logging
from bastion.observability.logging import AccessLog, JsonLineHandler, make_logger
from bastion.observability.logwriter import LogWriter, writer_for
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
#: Every wait in these tests is bounded by this (seconds); none is a timing assertion.
BOUND = 30.0


class PipeReader:
    """A pipe whose write end is the log stream and whose read end a thread drains (once started)."""

    def __init__(self) -> None:
        read_fd, write_fd = os.pipe()
        self.read_end = os.fdopen(read_fd, "rb", buffering=0)
        self.stream: IO[bytes] = os.fdopen(write_fd, "wb")
        self.data = bytearray()
        self.thread = threading.Thread(target=self._drain, daemon=True)

    def _drain(self) -> None:
        while chunk := self.read_end.read(65536):
            self.data += chunk

    def start(self) -> PipeReader:
        self.thread.start()
        return self

    def finish(self) -> list[dict[str, Any]]:
        """Close the write end; every line read until the end of the pipe."""
        self.stream.close()
        self.thread.join(BOUND)
        assert not self.thread.is_alive()
        self.read_end.close()
        return [orjson.loads(line) for line in bytes(self.data).splitlines()]


class GatedStream(io.RawIOBase):
    """A stream with a file number whose writes wait while the gate is closed (a stalled reader)."""

    def __init__(self) -> None:
        super().__init__()
        self._devnull = os.open(os.devnull, os.O_WRONLY)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.written = bytearray()

    def fileno(self) -> int:
        return self._devnull

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.entered.set()
        assert self.gate.wait(BOUND)
        self.written += bytes(data)
        return len(data)

    def close(self) -> None:
        if not self.closed:
            os.close(self._devnull)
        super().close()

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in bytes(self.written).splitlines()]


async def ok(request: Request) -> Response:
    return Response(b"{}", media_type="application/json")


async def boom(request: Request) -> Response:
    raise RuntimeError("boom")


async def tagged(request: Request) -> Response:
    ctx = context_of(request.scope)
    assert ctx is not None
    ctx.log["tags"] = request.app.state.tags
    return Response(b"{}", media_type="application/json")


def starlette_app() -> Starlette:
    app = Starlette(routes=[Route("/ok/{n}", ok), Route("/boom/{n}", boom), Route("/tagged", tagged)])
    app.state.tags = ["first"]
    return app


async def call(app: Any, path: str) -> int:
    """One GET through ``app`` in-process; the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


# -- the JSON of each line ----------------------------------------------------------------

# orjson refuses lone surrogates in any line, in place or not.
TEXT = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(TEXT, JSON_VALUES, max_size=8))
def test_an_access_line_renders_as_written_in_place(fields: dict[str, Any]) -> None:
    in_place = io.BytesIO()
    queued = io.BytesIO()
    writer = LogWriter(queued)
    with mock.patch.object(bastion_logging.time, "time_ns", return_value=1796622516123456789):
        AccessLog(in_place).write(dict(fields))
        AccessLog(queued, writer=writer).write(dict(fields))
    writer.close(BOUND)
    assert queued.getvalue() == in_place.getvalue()


def test_event_and_server_lines_render_as_written_in_place(tmp_path: Path) -> None:
    in_place = io.BytesIO()
    with (tmp_path / "log").open("wb") as file:
        assert writer_for(file) is not None
        assert writer_for(in_place) is None
        with mock.patch.object(bastion_logging.time, "time_ns", return_value=1796622516250000000):
            for stream in (in_place, file):
                logger = make_logger("info", stream)
                logger.info("started", resources=["memory"], n=3)
                try:
                    raise ValueError("bad")
                except ValueError as exc:
                    logger.error("failed", exc_info=exc, trace_id="abc")
                handler = JsonLineHandler(stream)
                record = logging.LogRecord(
                    "uvicorn.error", logging.WARNING, __file__, 1, "%d open", (4,), None
                )
                record.created = 1796622516.5
                handler.emit(record)
        writer = writer_for(file)
        assert writer is not None and writer.flush(BOUND)
    written = (tmp_path / "log").read_bytes()
    assert written == in_place.getvalue()
    assert len(written.splitlines()) == 3


# -- a clean stop writes every line, in order ------------------------------------------------


async def test_middleware_lines_arrive_in_order_after_a_clean_stop() -> None:
    pipe = PipeReader().start()
    bastion = Bastion(starlette_app(), {"store": "memory://"}, env={}, log_stream=pipe.stream)
    await bastion.startup()
    for n in range(300):
        status = await call(bastion, f"/boom/{n}" if n % 30 == 0 else f"/ok/{n}")
        assert status == (500 if n % 30 == 0 else 200)
    await bastion.shutdown()
    lines = pipe.finish()

    access = [line for line in lines if line["event"] == "request"]
    assert [line["path"] for line in access] == [
        f"/boom/{n}" if n % 30 == 0 else f"/ok/{n}" for n in range(300)
    ]
    # Each error line comes just before the access line of its request.
    for index, line in enumerate(lines):
        if line["event"] == "unhandled exception":
            assert lines[index + 1]["event"] == "request"
            assert lines[index + 1]["trace_id"] == line["trace_id"]
    assert sum(line["event"] == "unhandled exception" for line in lines) == 10


def gateway_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BASTION_", "PROMETHEUS_MULTIPROC"))}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT)])
    env["BASTION_STORE"] = "memory://"
    return env


@pytest.fixture
def gateway_with_piped_stderr(
    request: pytest.FixtureRequest,
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    workers = request.param
    port = free_port()
    args = [
        sys.executable, "-m", "bastion", "gateway",
        "--upstream", "http://127.0.0.1:9",  # nothing listens: every request is a 502 problem
        "--port", str(port),
        "--workers", str(workers),
    ]  # fmt: skip
    if workers > 1:
        args.append("--allow-per-process-state")
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=gateway_env(), cwd=tempfile.gettempdir()
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + BOUND
        while True:
            assert process.poll() is None, "the gateway exited at start"
            assert time.monotonic() < deadline, "the gateway did not answer"
            try:
                httpx.get(base + "/_bastion/health", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(BOUND)


def stop_and_read(process: subprocess.Popen[bytes]) -> list[dict[str, Any]]:
    """SIGTERM (a clean stop); the JSON lines the process wrote to its standard error."""
    assert process.stderr is not None
    collected = bytearray()
    reader = threading.Thread(target=lambda: collected.extend(process.stderr.read()), daemon=True)  # type: ignore[union-attr]
    reader.start()
    process.send_signal(signal.SIGTERM)
    process.wait(BOUND)
    reader.join(BOUND)
    return [orjson.loads(raw) for raw in bytes(collected).splitlines() if raw.startswith(b"{")]


@pytest.mark.e2e
@pytest.mark.parametrize("gateway_with_piped_stderr", [1], indirect=True)
def test_gateway_lines_arrive_in_order_after_sigterm(gateway_with_piped_stderr: tuple[str, Any]) -> None:
    base, process = gateway_with_piped_stderr
    with httpx.Client(base_url=base) as client:
        for n in range(200):
            response = client.get(f"/orders/{n}", headers={"X-Request-Id": f"order-{n}"})
            assert response.status_code == 502
    lines = stop_and_read(process)
    ids = [
        line["request_id"]
        for line in lines
        if line.get("event") == "request" and line["path"] != "/_bastion/health"
    ]
    assert ids == [f"order-{n}" for n in range(200)]


@pytest.mark.e2e
@pytest.mark.parametrize("gateway_with_piped_stderr", [2], indirect=True)
def test_gateway_workers_write_every_line_at_sigterm(gateway_with_piped_stderr: tuple[str, Any]) -> None:
    base, process = gateway_with_piped_stderr
    with httpx.Client(base_url=base) as client:
        for n in range(200):
            # A new connection each time, so that both workers get requests.
            response = client.get(
                f"/orders/{n}", headers={"X-Request-Id": f"order-{n}", "Connection": "close"}
            )
            assert response.status_code == 502
    lines = stop_and_read(process)
    ids = [
        line["request_id"]
        for line in lines
        if line.get("event") == "request" and line["path"] != "/_bastion/health"
    ]
    assert sorted(ids) == sorted(f"order-{n}" for n in range(200))


def test_crash_lines_reach_the_stream() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from bastion import Bastion
        from bastion.observability.logwriter import writer_for

        # Lines wait in the queue until the writer closes: only the exit can write them.
        writer_for(sys.stderr.buffer).interval = 3600

        async def app(scope, receive, send):
            pass

        async def main():
            bastion = Bastion(app, {"store": "memory://"}, env={})
            await bastion.startup()
            await bastion.shutdown()
            for n in range(50):
                bastion.logger.error("failing at shutdown", n=n)
            raise RuntimeError("crash during shutdown")

        asyncio.run(main())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, env=gateway_env(), timeout=BOUND, check=False
    )
    assert result.returncode == 1
    assert b"RuntimeError: crash during shutdown" in result.stderr
    lines = [orjson.loads(raw) for raw in result.stderr.splitlines() if raw.startswith(b"{")]
    assert [line["n"] for line in lines if line["event"] == "failing at shutdown"] == list(range(50))


# -- a full queue drops and counts, never blocks ---------------------------------------------


def test_a_full_queue_drops_and_counts() -> None:
    stream = GatedStream()
    writer = LogWriter(stream, capacity=5)
    assert writer.put({"n": 0})
    # The writer's thread has the first line and waits in the write: five more fill the queue.
    assert stream.entered.wait(BOUND)
    assert [writer.put({"n": n}) for n in range(1, 9)] == [True] * 5 + [False] * 3
    assert writer.dropped == 3
    stream.gate.set()
    assert writer.flush(BOUND)
    assert [line["n"] for line in stream.lines()] == list(range(6))
    writer.close(BOUND)


def test_the_access_log_and_the_logger_count_their_drops() -> None:
    stream = GatedStream()
    writer = writer_for(stream)  # type: ignore[arg-type]
    assert writer is not None
    writer.capacity = 2
    drops = {"access": 0, "event": 0}

    def count(line: str) -> Any:
        return lambda: drops.__setitem__(line, drops[line] + 1)

    logger = make_logger("info", stream, on_drop=count("event"))  # type: ignore[arg-type]
    access_log = AccessLog(stream, on_drop=count("access"))  # type: ignore[arg-type]
    logger.info("first")
    assert stream.entered.wait(BOUND)
    logger.info("second")
    access_log.write({"path": "/a"})
    access_log.write({"path": "/b"})
    logger.warning("third")
    assert drops == {"access": 1, "event": 1}
    assert writer.dropped == 2
    stream.gate.set()
    assert writer.flush(BOUND)
    assert [line.get("path", line["event"]) for line in stream.lines()] == ["first", "second", "/a"]


async def test_an_unread_pipe_never_blocks_a_request_and_the_drops_are_counted() -> None:
    pipe = PipeReader()  # nobody reads it until every request has finished
    bastion = Bastion(starlette_app(), {"store": "memory://"}, env={}, log_stream=pipe.stream)
    writer = writer_for(pipe.stream)
    assert writer is not None
    writer.capacity = 1000
    await bastion.startup()
    for n in range(10_000):
        assert await call(bastion, f"/ok/{n}") == 200
    assert writer.dropped > 0
    assert bastion.metrics is not None
    exposition = bastion.metrics.exposition().decode()
    found = re.search(r'^bastion_log_lines_dropped_total\{line="access"\} (\S+)$', exposition, re.M)
    assert found is not None and float(found.group(1)) == writer.dropped
    pipe.start()
    await bastion.shutdown()
    access = [line for line in pipe.finish() if line["event"] == "request"]
    assert len(access) == 10_000 - writer.dropped
    # What is written is in order; the lines dropped are the ones that found the queue full.
    numbers = [int(line["path"].rsplit("/", 1)[1]) for line in access]
    assert numbers == sorted(numbers)


async def test_the_fields_handed_over_are_rendered_as_they_were() -> None:
    stream = GatedStream()
    app = starlette_app()
    bastion = Bastion(app, {"store": "memory://"}, env={}, log_stream=stream)  # type: ignore[arg-type]
    writer = writer_for(stream)  # type: ignore[arg-type]
    assert writer is not None
    assert await call(bastion, "/ok/1") == 200
    # The writer's thread is stuck writing the first line: the next one waits, unrendered.
    assert stream.entered.wait(BOUND)
    assert await call(bastion, "/tagged") == 200
    app.state.tags.append("added after the response")
    stream.gate.set()
    assert writer.flush(BOUND)
    tagged_line = next(line for line in stream.lines() if line["path"] == "/tagged")
    assert tagged_line["tags"] == ["first"]


@given(st.integers(min_value=0, max_value=4_000_000_000 * 10**9))
def test_a_timestamp_is_the_time_to_the_microsecond(now_ns: int) -> None:
    with mock.patch.object(bastion_logging.time, "time_ns", return_value=now_ns):
        ts = bastion_logging.timestamp()
    assert abs(ts - now_ns / 1e9) <= 0.5e-6 + math.ulp(now_ns / 1e9)
    # The JSON of the number has at most six decimals, as round(..., 6) gave.
    assert len(orjson.dumps(ts).split(b".")[-1].split(b"e")[0]) <= 6


def test_a_line_that_cannot_be_rendered_is_dropped_and_the_writer_goes_on() -> None:
    stream = io.BytesIO()
    writer = LogWriter(stream)
    assert writer.put({1: "a key that is not a string"})
    assert writer.put({"n": 1})
    assert writer.flush(BOUND)
    assert stream.getvalue() == b'{"n":1}\n'
    assert writer.dropped == 1
    writer.close(BOUND)
    # Closed, it writes each line at once, on the caller's thread.
    assert writer.put({"n": 2})
    assert stream.getvalue() == b'{"n":1}\n{"n":2}\n'
