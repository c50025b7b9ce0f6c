"""What makes a serving process reload: SIGHUP, and with ``--watch`` a changed file.

:class:`Reloader` runs in each process that serves (each worker of ``--workers N``).
It installs its SIGHUP handler as soon as it is made, so that a SIGHUP never ends
the process (the default action), not even one that arrives while it starts; the
reloads themselves run in one task on the serving loop, one at a time: a SIGHUP
that arrives while a reload runs queues one more reload, however many arrive.

With ``watch``, the task also looks at the files every ``interval`` seconds (their
modification time and size) and reloads when either changed. A file written in
several steps may be seen half-written: that reload is refused and logged, and the
next change reloads again; writing a new file and renaming it over the old one
avoids the refusal.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Awaitable, Callable, Iterable
from types import FrameType

#: How often ``--watch`` looks at the files, in seconds.
WATCH_INTERVAL = 1.0

#: A file's (modification time in ns, size), or ``None`` when it cannot be read.
Signature = tuple[int, int] | None


def signatures(paths: Iterable[str | os.PathLike[str]]) -> dict[str, Signature]:
    """What ``--watch`` compares: each file's modification time and size."""
    found: dict[str, Signature] = {}
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            found[str(path)] = None
        else:
            found[str(path)] = (stat.st_mtime_ns, stat.st_size)
    return found


class Reloader:
    """Calls ``reload`` on SIGHUP and, with ``watch``, when one of ``files()`` changes.

    ``files`` is asked again after each look, since a reload can name another description.
    """

    def __init__(
        self,
        reload: Callable[[], Awaitable[bool]],
        files: Callable[[], list[str]],
        *,
        watch: bool = False,
        interval: float = WATCH_INTERVAL,
    ) -> None:
        self._reload = reload
        self._files = files
        self.watch = watch
        self.interval = interval
        self._requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        signal.signal(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self, signum: int, frame: FrameType | None) -> None:
        # A signal handler: set the flag, wake the task; the reload runs on the loop.
        self._requested = True
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def request(self) -> None:
        """Ask for a reload, as SIGHUP does (queued behind one that runs)."""
        self._requested = True
        if self._wake is not None:
            self._wake.set()

    def start(self) -> None:
        """Start the reloading task on the running loop (a SIGHUP received before is acted on now)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = self._loop.create_task(self._run())

    async def stop(self) -> None:
        """Stop the task (a reload that runs is cancelled: the configuration in force stays).

        A SIGHUP after this (the loop closing) only sets the flag: it does nothing more.
        """
        self._loop = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        assert self._wake is not None
        seen = signatures(self._files()) if self.watch else {}
        while True:
            if not self._requested:
                # Bounded even without --watch: a missed wake-up delays a SIGHUP by one interval.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.interval)
            self._wake.clear()
            changed = False
            if self.watch:
                now = signatures(self._files())
                changed, seen = now != seen, now
            if self._requested or changed:
                self._requested = False
                # ``seen`` was taken before the reload read the files: a change written
                # meanwhile is seen at the next look (and a reload naming another
                # description changes the set of files, which reloads once more).
                await self._reload()
