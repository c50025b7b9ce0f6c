"""Fixtures: every behaviour test runs against each rate limit store."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bastion import Bastion
from tests.conftest import REDIS_URL, require_service

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
