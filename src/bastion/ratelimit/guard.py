"""The ratelimit guard."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.asgi import ASGIApp

if TYPE_CHECKING:
    from bastion.stack import Bastion


def build_guard(app: ASGIApp, bastion: Bastion) -> ASGIApp | None:
    """The ratelimit guard for the configuration, or ``None`` when it has nothing to do."""
    return None
