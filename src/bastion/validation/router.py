"""Path templates to operations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.config import Config
from bastion.protocols import Router

if TYPE_CHECKING:
    from bastion.stack import Bastion


def build_router(config: Config, bastion: Bastion) -> Router | None:
    """The router for the configuration's OpenAPI description and route templates."""
    return None
