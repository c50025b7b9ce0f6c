"""The log writer: log lines leave the request path and reach their stream from a thread of their own.

A request hands its line over (:meth:`LogWriter.put`: one append to a bounded queue,
no rendering and no system call); the writer's thread renders what has gathered with
orjson and writes it in one call, then lets lines gather for ``interval`` before the
next write. A stream that is slow or not read at all (a pipe whose reader stalls)
blocks the writer's thread, never a request: once ``capacity`` lines wait, further
lines are dropped and counted (:attr:`LogWriter.dropped`, and each
:class:`bastion.Bastion`'s ``bastion_log_lines_dropped_total``).

Only streams that are files of the operating system (standard error, a pipe, a file)
get a writer. An in-memory stream cannot block: it is written at once, on the
caller's thread, so what a test or an embedding application captures is there when
the call returns.

One writer per stream and process keeps the lines of a process in the order they
were written, whichever logger wrote them. A clean stop writes every line:
``Bastion.shutdown`` flushes, bastion's servers close the writers as they exit, and
so does :mod:`atexit`. Once closed, a writer writes each line at once on the
caller's thread, so the lines of a crash during shutdown still reach the stream.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import select
import threading
from collections import deque
from typing import IO, Any

import orjson

#: Lines waiting beyond this many are dropped (and counted), never waited for.
DEFAULT_CAPACITY = 10_000
#: How long the writer's thread lets lines gather between two writes, in seconds.
DEFAULT_INTERVAL = 0.002
#: How long a flush or close waits for a stream that is not read, in seconds.
FLUSH_TIMEOUT = 2.0

#: A line as handed over: fields to render on the writer's thread, or a rendered line.
Line = dict[str, Any] | bytes

_APPEND_NEWLINE = orjson.OPT_APPEND_NEWLINE
#: The most bytes one write to a pipe puts in without another process's write in between.
_ATOMIC_WRITE = select.PIPE_BUF


class LogWriter:
    """Writes the lines handed to it to one stream, from a thread of its own, in the order given.

    A ``dict`` line is handed over: it is rendered later, on the writer's thread, and
    must not change after :meth:`put` (nor may the lists or dicts inside it).
    """

    def __init__(
        self,
        stream: IO[bytes],
        *,
        capacity: int = DEFAULT_CAPACITY,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self.stream = stream
        self.capacity = capacity
        self.interval = interval
        #: Lines dropped because ``capacity`` lines were waiting (or could not be rendered).
        self.dropped = 0
        self._closed = False
        self._fresh_state()

    def _fresh_state(self) -> None:
        self._lines: deque[Line | threading.Event] = deque()
        # Set while the writer's thread waits for a first line: only then does a request
        # pay for waking it. The first line starts the thread.
        self._idle = True
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._write_lock = threading.Lock()
        self._start_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, line: Line) -> bool:
        """Hand ``line`` over to be written; False (and counted) when the queue is full."""
        lines = self._lines
        if len(lines) >= self.capacity:
            self.dropped += 1
            return False
        lines.append(line)
        if self._idle:
            self._wake_up()
        return True

    def flush(self, timeout: float = FLUSH_TIMEOUT) -> bool:
        """Wait until every line handed over so far is written; False if ``timeout`` passed first."""
        if not self._lines and self._thread is None:
            return True
        written = threading.Event()
        self._lines.append(written)
        if self._closed:
            self._write_pending(blocking=False)
        else:
            self._ensure_thread()
            self._wake.set()
        return written.wait(timeout)

    def close(self, timeout: float = FLUSH_TIMEOUT) -> None:
        """Write what waits and stop the thread; from then on each line is written at once."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        self._closed = True
        self._idle = True
        self._write_pending(blocking=thread is None or not thread.is_alive())

    def _wake_up(self) -> None:
        if self._closed:
            # Written on the caller's thread unless the writer's thread is stuck in a write.
            self._write_pending(blocking=False)
            return
        self._ensure_thread()
        self._wake.set()

    def _ensure_thread(self) -> None:
        if self._thread is not None:
            return
        with self._start_lock:
            if self._thread is not None:
                return
            thread = threading.Thread(target=self._run, name="bastion-log-writer", daemon=True)
            try:
                thread.start()
            except RuntimeError:
                # No new threads while the interpreter shuts down: write in place from now on.
                self._closed = True
                return
            self._thread = thread

    def _run(self) -> None:
        lines = self._lines
        while True:
            self._idle = True
            while not lines and not self._stop.is_set():
                self._wake.wait()
                self._wake.clear()
            self._idle = False
            # The thread must outlive any one bad batch.
            with contextlib.suppress(Exception):
                self._write_pending(blocking=True)
            if self._stop.is_set():
                if not lines:
                    self._idle = True
                    return
            else:
                # Lines gather meanwhile: one write (one system call) for all of them.
                self._stop.wait(self.interval)

    def _write_pending(self, *, blocking: bool) -> None:
        """Render and write the lines waiting now, in one write; set the flush markers among them."""
        if not self._write_lock.acquire(blocking):
            return
        markers: list[threading.Event] = []
        try:
            lines = self._lines
            chunks: list[bytes] = []
            # As many as wait now: lines added meanwhile go in the next write.
            for _ in range(len(lines)):
                item = lines.popleft()
                if type(item) is bytes:
                    chunks.append(item)
                elif isinstance(item, threading.Event):
                    markers.append(item)
                else:
                    try:
                        chunks.append(orjson.dumps(item, default=repr, option=_APPEND_NEWLINE))
                    except TypeError:
                        self.dropped += 1
            if chunks:
                self._write_atomically(chunks)
        finally:
            self._write_lock.release()
            for marker in markers:
                marker.set()

    def _write_atomically(self, lines: list[bytes]) -> None:
        """Write ``lines`` in as few writes as keep every line whole beside other processes' lines.

        Worker processes share one standard error: a write to a pipe of at most
        ``PIPE_BUF`` bytes is never interleaved with another's, a longer one may be.
        So lines are joined up to that size, and each write is flushed at once (a
        buffered stream would join them again).
        """
        stream = self.stream
        batch: list[bytes] = []
        size = 0
        try:
            for line in lines:
                if size + len(line) > _ATOMIC_WRITE and batch:
                    stream.write(b"".join(batch))
                    stream.flush()
                    batch.clear()
                    size = 0
                batch.append(line)
                size += len(line)
            stream.write(b"".join(batch))
            stream.flush()
        except (OSError, ValueError):
            # A closed or broken log stream must not stop the process it describes.
            pass

    def _after_fork(self) -> None:
        # The parent writes what it had waiting; the child starts empty, with its own thread.
        self._fresh_state()


class _Writers:
    """The writers of this process, one per stream (what keeps a process's lines in order)."""

    def __init__(self) -> None:
        self.by_stream: dict[int, tuple[IO[bytes], LogWriter]] = {}
        self.lock = threading.Lock()

    def get(self, stream: IO[bytes]) -> LogWriter | None:
        found = self.by_stream.get(id(stream))
        if found is not None and found[0] is stream:
            return found[1]
        if not _is_os_file(stream):
            return None
        with self.lock:
            found = self.by_stream.get(id(stream))
            if found is None or found[0] is not stream:
                found = self.by_stream[id(stream)] = (stream, LogWriter(stream))
            return found[1]

    def all(self) -> list[LogWriter]:
        with self.lock:
            return [writer for _, writer in self.by_stream.values()]

    def after_fork(self) -> None:
        self.lock = threading.Lock()
        for _, writer in self.by_stream.values():
            writer._after_fork()


_WRITERS = _Writers()


def _is_os_file(stream: IO[bytes]) -> bool:
    try:
        stream.fileno()
    except (AttributeError, OSError, ValueError):
        return False
    return True


def writer_for(stream: IO[bytes]) -> LogWriter | None:
    """This process's writer for ``stream``; None for an in-memory stream (written at once instead)."""
    return _WRITERS.get(stream)


def flush_writers(timeout: float = FLUSH_TIMEOUT) -> bool:
    """Wait until every line handed to this process's writers is written; False if one timed out."""
    return all([writer.flush(timeout) for writer in _WRITERS.all()])


def close_writers(timeout: float = FLUSH_TIMEOUT) -> None:
    """Write every waiting line and stop the writers' threads (at exit); later lines are written at once."""
    for writer in _WRITERS.all():
        writer.close(timeout)


atexit.register(close_writers)
os.register_at_fork(after_in_child=_WRITERS.after_fork)
