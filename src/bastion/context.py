"""What a capability's guard builder is given: :class:`GuardContext`.

A builder (``build_guard(app, ctx)`` in each capability package) reads its
configuration section, logs, counts, identifies clients and registers what must
open at start-up through this small surface, never through the
:class:`~bastion.Bastion` that owns it. That keeps the capability packages free
of :mod:`bastion.stack` (no import circle) and lets a test build one guard alone.

:class:`BuildContext` is the one implementation: :class:`~bastion.Bastion` makes
one per instance. It also loads and compiles the OpenAPI description, once, for
every guard that reads it (routing, validation, rate limit extensions,
idempotency requirements).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from bastion.asgi import ASGIApp
    from bastion.clients import ClientIdentifier
    from bastion.config import Config
    from bastion.observability.metrics import Metrics
    from bastion.protocols import CompiledDescription, Resource

__all__ = ["BuildContext", "GuardContext"]


class GuardContext(Protocol):
    """The surface a guard builder uses."""

    @property
    def config(self) -> Config:
        """The whole configuration (each builder reads its own section)."""

    @property
    def logger(self) -> Any:
        """The structured logger."""

    @property
    def metrics(self) -> Metrics | None:
        """The metrics registry, ``None`` when metrics are off."""

    @property
    def clients(self) -> ClientIdentifier:
        """Works out who sent a request (``clients`` in the configuration)."""

    @property
    def application(self) -> ASGIApp:
        """The application the guards wrap (for what it serves itself, such as FastAPI's ``/docs``)."""

    def add_resource(self, resource: Resource) -> None:
        """Open ``resource`` at start-up and close it at shutdown."""

    def description(self) -> CompiledDescription | None:
        """The compiled OpenAPI description, ``None`` when none is configured (compiled once)."""


class BuildContext:
    """The :class:`GuardContext` of one :class:`~bastion.Bastion`."""

    def __init__(
        self,
        config: Config,
        *,
        logger: Any,
        metrics: Metrics | None,
        clients: ClientIdentifier,
        application: ASGIApp,
        resources: list[Resource],
        compile_description: Callable[[], CompiledDescription | None],
    ) -> None:
        self.config = config
        self.logger = logger
        self.metrics = metrics
        self.clients = clients
        self.application = application
        self.resources = resources
        self._compile = compile_description
        self._description: CompiledDescription | None = None
        self._compiled = False

    def add_resource(self, resource: Resource) -> None:
        """Open ``resource`` at start-up and close it at shutdown."""
        self.resources.append(resource)

    def description(self) -> CompiledDescription | None:
        """The compiled OpenAPI description, loaded and compiled on first use and kept.

        A description that cannot be read or compiled raises
        :class:`~bastion.validation.openapi.OpenAPIError`, so a broken one stops start-up.
        """
        if not self._compiled:
            self._description = self._compile()
            self._compiled = True
        return self._description
