"""Helpers for tests: running ASGI apps in-process and capturing bastion's log lines."""

from __future__ import annotations

import io
from typing import Any

import httpx
import orjson

from bastion import Bastion
from bastion.asgi import ASGIApp


class LogCapture(io.BytesIO):
    """A byte stream that collects bastion's JSON log lines."""

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.getvalue().splitlines() if line.strip()]


def wrap(app: ASGIApp, config: dict[str, Any] | None = None) -> tuple[Bastion, LogCapture]:
    """``app`` behind bastion with a memory store and captured logs."""
    logs = LogCapture()
    settings: dict[str, Any] = {"store": "memory://"}
    settings.update(config or {})
    return Bastion(app, settings, env={}, log_stream=logs), logs


def client(app: ASGIApp) -> httpx.AsyncClient:
    """An httpx client that calls ``app`` in-process."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
