"""Real servers on free loopback ports for the probe tests, started and stopped by process id."""

from __future__ import annotations

import http.client
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]


def wait_until_up(port: int, path: str = "/health", timeout: float = 45.0) -> None:
    """Poll ``path`` until the server answers anything, or raise."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", path)
            conn.getresponse().read()
            conn.close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answered on 127.0.0.1:{port} within {timeout} s")


@contextmanager
def serve(args: list[str], *, cwd: Path | None = None, port: int | None = None) -> Iterator[str]:
    """Run ``python -m ...args`` with ``{port}`` filled in; yields the base URL."""
    port = port or free_port()
    command = [sys.executable, *[a.replace("{port}", str(port)) for a in args]]
    # Standard error goes to a file, never a pipe: a pipe nobody reads fills up after
    # a few dozen logged tracebacks, and the server then blocks on its next log line.
    stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = subprocess.Popen(
        command, cwd=cwd or REPO, stdout=subprocess.DEVNULL, stderr=stderr, start_new_session=True
    )
    try:
        try:
            wait_until_up(port)
        except RuntimeError:
            process.kill()
            process.wait(timeout=5)
            stderr.seek(0)
            err = stderr.read()
            raise RuntimeError(f"{' '.join(command)} did not start:\n{err.decode()[-3000:]}") from None
        yield f"http://127.0.0.1:{port}"
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        stderr.close()


def uvicorn(target: str, *, factory: bool = False) -> list[str]:
    """Arguments that serve ``target`` (``module:attr``) with uvicorn."""
    extra = ["--factory"] if factory else []
    return [
        "-m",
        "uvicorn",
        "--app-dir",
        str(REPO),
        *extra,
        target,
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]
