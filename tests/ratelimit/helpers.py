"""Shared helpers for the rate limit tests."""

from __future__ import annotations

import io
from typing import Any

import http_sf
import httpx

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send

# Set to a stream to see the logs of the Bastions the tests build.
LOG_STREAM: Any = None


async def ok_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A tiny app: 200 text, or a failure on /boom."""
    if scope["type"] != "http":
        return
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed")
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def make(config: dict[str, Any], app: Any = ok_app) -> Bastion:
    """A Bastion around ``app`` with memory stores and quiet logs."""
    settings = {"store": "memory://", **config}
    return Bastion(app, settings, env={}, log_stream=LOG_STREAM or io.BytesIO())


def client(bastion: Bastion) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=bastion), base_url="http://test")


def parse_headers(response: httpx.Response) -> dict[str, Any]:
    """The rate limit headers of a response, parsed as structured fields."""
    policy = http_sf.parse(response.headers["ratelimit-policy"].encode(), tltype="list")
    limits = http_sf.parse(response.headers["ratelimit"].encode(), tltype="list")
    return {
        "policy": {name: params for name, params in policy},
        "limit": {name: params for name, params in limits},
        "legacy": (
            int(response.headers["x-ratelimit-limit"]),
            int(response.headers["x-ratelimit-remaining"]),
            int(response.headers["x-ratelimit-reset"]),
        ),
    }


def check_consistent(response: httpx.Response) -> dict[str, Any]:
    """Assert the headers agree with each other; return them parsed."""
    parsed = parse_headers(response)
    assert set(parsed["policy"]) == set(parsed["limit"])
    for name, params in parsed["limit"].items():
        policy = parsed["policy"][name]
        assert isinstance(policy["q"], int)
        assert 0 <= params["r"] <= policy["q"]
        if "w" in policy:
            assert 0 <= params["t"] <= policy["w"] + 1
    limit, remaining, reset = parsed["legacy"]
    tightest = min(parsed["limit"].values(), key=lambda p: p["r"])
    assert remaining == tightest["r"]
    assert remaining <= limit
    assert reset >= 0
    return parsed


def metric(bastion: Bastion, name: str, **labels: str) -> float:
    """The value of a counter sample in the instance registry (0 when absent)."""
    assert bastion.metrics is not None
    value = bastion.metrics.registry.get_sample_value(name, labels)
    return value or 0.0
