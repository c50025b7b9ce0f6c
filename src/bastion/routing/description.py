"""The OpenAPI description, loaded and compiled once per :class:`~bastion.Bastion`.

Routing, validation, rate limit extensions and idempotency requirements all read
the one compiled description that :func:`compile_configured` returns; the build
context (:class:`bastion.stack.BuildContext`) calls it on first need and keeps it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.config import Config
    from bastion.validation.compile import CompiledAPI


def compile_configured(config: Config, logger: Any) -> CompiledAPI | None:
    """Load and compile ``config.openapi``; ``None`` when none is configured.

    A description that cannot be read or compiled raises
    :class:`~bastion.validation.openapi.OpenAPIError`, so a broken one stops start-up.
    """
    path = config.openapi
    if path is None:
        return None
    from bastion.validation.compile import compile_description
    from bastion.validation.openapi import load_description

    loaded = load_description(path, config.validation.allow_external_refs)
    api = compile_description(loaded, config, logger)
    logger.info(
        "openapi description compiled",
        source=loaded.source,
        operations=len(api.operations),
        compile_ms=round(api.compile_seconds * 1000, 1),
    )
    return api
