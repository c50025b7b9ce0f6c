"""A small app behind bastion, for the schemathesis run against a real server (uvicorn)."""

from __future__ import annotations

from bastion import Bastion
from tests.validation.helpers import CHECKOUT, echo_app

app = Bastion(
    echo_app,
    {
        "store": "memory://",
        "openapi": str(CHECKOUT),
        # Idempotency and rate limits answer 409 / 429 to repeated generated requests;
        # this server is about validation alone.
        "idempotency": {"enabled": False},
        "rate_limits": {"enabled": False},
        "logging": {"access": False},
    },
    env={},
)
