"""Drives ASGI apps in-process, with no server and no HTTP client, to time what a layer adds.

Shared by the benchmarks. Timings are medians of several rounds; compare apps
measured in the same run, since absolute times drift on shared machines.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

App = Callable[[dict[str, Any], Any, Any], Awaitable[None]]


def make_scope(
    method: str, path: str, headers: list[tuple[bytes, bytes]], query: bytes = b""
) -> dict[str, Any]:
    """An HTTP scope as uvicorn would build it."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }


async def call(app: App, scope: dict[str, Any], body: bytes = b"") -> int:
    """One request through ``app``; returns the status."""
    status = 0
    sent_body = False

    async def receive() -> dict[str, Any]:
        nonlocal sent_body
        if not sent_body:
            sent_body = True
            return {"type": "http.request", "body": body, "more_body": False}
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope, headers=list(scope["headers"])), receive, send)
    return status


async def time_per_request(
    app: App,
    make: Callable[[int], tuple[dict[str, Any], bytes]],
    *,
    requests: int = 3000,
    rounds: int = 7,
    expect: int | None = None,
) -> float:
    """Median over ``rounds`` of the mean microseconds per request."""
    scope, body = make(0)
    for i in range(200):  # warm caches, label children, JIT-free but allocator-warm
        scope, body = make(i)
        await call(app, scope, body)
    results = []
    for r in range(rounds):
        prepared = [make(r * requests + i) for i in range(requests)]
        start = time.perf_counter_ns()
        for scope, body in prepared:
            status = await call(app, scope, body)
        elapsed = time.perf_counter_ns() - start
        if expect is not None and status != expect:
            raise AssertionError(f"expected status {expect}, got {status}")
        results.append(elapsed / requests / 1000)
    return statistics.median(results)


async def compare(
    apps: dict[str, App],
    make: Callable[[int], tuple[dict[str, Any], bytes]],
    *,
    requests: int = 2000,
    rounds: int = 15,
    expect: int | None = None,
    clock: Callable[[], int] = time.perf_counter_ns,
) -> dict[str, float]:
    """Median microseconds per request of each app, with the apps interleaved round by round.

    Interleaving makes a burst of load from elsewhere on the machine hit every app
    alike instead of whichever happened to be running, so the differences hold.
    ``clock`` is wall time by default; ``time.process_time_ns`` counts the CPU time of
    the whole process instead (every thread's, none of the time spent waiting for a core).
    """
    for app in apps.values():
        for i in range(300):
            scope, body = make(i)
            await call(app, scope, body)
    samples: dict[str, list[float]] = {name: [] for name in apps}
    for r in range(rounds):
        prepared = [make(r * requests + i) for i in range(requests)]
        for name, app in apps.items():
            status = 0
            start = clock()
            for scope, body in prepared:
                status = await call(app, scope, body)
            elapsed = clock() - start
            if expect is not None and status != expect:
                raise AssertionError(f"{name}: expected status {expect}, got {status}")
            samples[name].append(elapsed / requests / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}
