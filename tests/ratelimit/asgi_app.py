"""An app for the end-to-end tests: a 200 endpoint behind Bastion, configured by environment.

``BASTION_TEST_RL_CONFIG`` holds the configuration as JSON (the ``BASTION_TEST_``
prefix keeps it out of bastion's own environment overrides).
"""

from __future__ import annotations

import os

import orjson

from bastion import Bastion
from bastion.asgi import Receive, Scope, Send


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    """200 for every request."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello"})


app = Bastion(hello, orjson.loads(os.environ.get("BASTION_TEST_RL_CONFIG", "{}")))
