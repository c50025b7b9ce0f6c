"""Protocols shared across capabilities, kept in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


class Resource(Protocol):
    """Something bastion opens at start-up and closes at shutdown (a store, a client pool)."""

    name: str

    async def start(self) -> None:
        """Open connections, create tables, load scripts."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    async def ping(self) -> bool:
        """Whether the resource is reachable now (for readiness checks)."""


@dataclass(slots=True)
class RouteMatch:
    """A request matched to a route of the API description (or of the configuration)."""

    template: str
    operation_id: str | None = None
    #: The compiled operation, for the validation guard; ``None`` for config-only routes.
    operation: Any = None
    path_params: dict[str, str] = field(default_factory=dict)


class Router(Protocol):
    """Finds the route of a request."""

    #: Whether unknown paths and methods are errors (an OpenAPI description is the
    #: whole API) or simply unlabelled (routes named only in the configuration).
    authoritative: bool

    def resolve(self, method: str, path: str) -> RouteMatch | list[str] | None:
        """The match; or, when the path is known but not the method, the allowed methods;
        or ``None`` when no route has this path."""
