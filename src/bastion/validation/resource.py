"""The compiled description, held by the bastion instance that loaded it.

The router and the validation guard both need the compiled description; it is
loaded and compiled once per :class:`~bastion.Bastion` and registered as one of
its resources, so it lives exactly as long as the instance (no module state).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion.validation.compile import CompiledAPI, compile_description
from bastion.validation.openapi import load_description

if TYPE_CHECKING:
    from bastion.stack import Bastion


class OpenAPIResource:
    """The compiled OpenAPI description of one bastion instance."""

    name = "openapi"

    def __init__(self, api: CompiledAPI) -> None:
        self.api = api

    async def start(self) -> None:
        """Nothing to open: the description was compiled when the instance was built."""

    async def close(self) -> None:
        """Nothing to release."""

    async def ping(self) -> bool:
        """Always ready."""
        return True


def compiled_api(bastion: Bastion) -> CompiledAPI:
    """The compiled description of ``bastion.config.openapi``, compiling it on first use."""
    for resource in bastion.resources:
        if isinstance(resource, OpenAPIResource):
            return resource.api
    path = bastion.config.openapi
    if path is None:
        raise ValueError("no OpenAPI description is configured")
    description = load_description(path, bastion.config.validation.allow_external_refs)
    api = compile_description(description, bastion.config, bastion.logger)
    bastion.logger.info(
        "openapi description compiled",
        source=description.source,
        operations=len(api.operations),
        compile_ms=round(api.compile_seconds * 1000, 1),
    )
    bastion.add_resource(OpenAPIResource(api))
    return api
