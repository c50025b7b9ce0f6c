"""Shared fixtures: the real Redis and PostgreSQL servers the store tests run against.

A missing service skips its tests with a message saying how to start it, except
under ``CI=true``, where a missing service fails the run.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

REDIS_URL = os.environ.get("BASTION_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("BASTION_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

_HOW_TO_START = {
    "redis": "start it with: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save ''",
    "postgres": "start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
}


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, url: str, default_port: int) -> None:
    """Skip (or under CI=true, fail) when the service at ``url`` is not reachable."""
    if _reachable(url, default_port):
        return
    message = f"{name} is not reachable at {url}; {_HOW_TO_START[name]}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """The URL of the real Redis server for tests."""
    require_service("redis", REDIS_URL, 6379)
    yield REDIS_URL


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """The URL of the real PostgreSQL server for tests."""
    require_service("postgres", POSTGRES_URL, 5432)
    yield POSTGRES_URL


def free_port() -> int:
    """A free TCP port on the loopback interface."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
