"""Fixtures: every behaviour test runs against each rate limit store."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from bastion import Bastion
from tests.conftest import REDIS_URL, free_port, require_service

from .helpers import make as make_bastion
from .helpers import ok_app

Make = Callable[..., Bastion]


@pytest.fixture(params=["memory", "redis"])
def store_url(request: pytest.FixtureRequest) -> str:
    """The rate limit store URL under test."""
    if request.param == "redis":
        require_service("redis", REDIS_URL, 6379)
        return REDIS_URL
    return "memory://"


@pytest.fixture
async def make(store_url: str) -> AsyncIterator[Make]:
    """Build Bastions on the store under test (a fresh key prefix each), closed at the end."""
    built: list[Bastion] = []
    prefix = "bastion-test-" + uuid.uuid4().hex

    def factory(config: dict[str, Any], app: Any = ok_app) -> Bastion:
        section = dict(config.get("rate_limits", {}))
        if "store" not in section:
            section["store"] = store_url
        section.setdefault("key_prefix", prefix)
        bastion = make_bastion({**config, "rate_limits": section}, app)
        built.append(bastion)
        return bastion

    yield factory
    for bastion in built:
        await bastion.shutdown()


class RedisServer:
    """A throwaway redis-server on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("redis-server did not start")

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=10)
        self.process = None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    server = RedisServer()
    server.start()
    yield server
    if server.process is not None:
        server.kill()
