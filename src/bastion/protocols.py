"""Protocols shared across capabilities, kept in one place."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from bastion.asgi import ASGIApp
    from bastion.clients import ClientIdentifier
    from bastion.config import Config
    from bastion.observability.metrics import Metrics


#: The HTTP methods that name operations in an OpenAPI path item (lower case, as there).
HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class Resource(Protocol):
    """Something bastion opens at start-up and closes at shutdown (a store, a client pool)."""

    name: str

    async def start(self) -> None:
        """Open connections, create tables, load scripts."""

    async def close(self) -> None:
        """Release everything ``start`` acquired."""

    async def ping(self) -> bool:
        """Whether the resource is reachable now (for readiness checks)."""


#: A resource a guard builder shares across reloads (:meth:`GuardContext.shared`).
R = TypeVar("R", bound=Resource)


class Admitting(Protocol):
    """A guard that can often do its whole part for a request without waiting for anything.

    The boundary calls ``admit`` of each such guard at the top of the chain in turn,
    instead of awaiting each one's ``__call__``: a coroutine less per guard and per
    request. ``admit`` returns ``True`` when the guard's part is done (the request
    goes on to the next layer), raises a :class:`~bastion.problems.Problem` to refuse
    the request, or returns ``False``, having changed nothing, when the request needs
    the guard's ``__call__`` (a body to read, a store to wait for, a response to
    watch); that call then runs the rest of the chain.
    """

    app: Any

    def admit(self, scope: Any, ctx: Any) -> bool:
        """Do the guard's part for the request now if it can; ``False`` leaves it to ``__call__``."""


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


class DescribedOperation(Protocol):
    """One operation of the compiled description, as the guards other than validation see it."""

    @property
    def method(self) -> str: ...
    @property
    def template(self) -> str: ...
    @property
    def operation_id(self) -> str | None: ...
    @property
    def extensions(self) -> dict[str, Any]: ...


class CompiledDescription(Protocol):
    """The OpenAPI description, loaded and compiled once (``GuardContext.description()``)."""

    @property
    def operations(self) -> Sequence[DescribedOperation]: ...
    @property
    def base_paths(self) -> list[str]: ...
    @property
    def document(self) -> dict[str, Any]:
        """The parsed document (``x-bastion-*`` extensions)."""


class GuardContext(Protocol):
    """What a capability's guard builder is given (``build_guard(app, ctx)``), never ``Bastion``.

    A builder reads its configuration section, logs, counts, identifies clients and
    registers what must open at start-up through this small surface. That keeps the
    capability packages free of :mod:`bastion.stack` (no import circle) and lets a
    test build one guard alone. :class:`bastion.stack.BuildContext` implements it.
    """

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

    def shared(self, key: Hashable, open_resource: Callable[[], R]) -> R:
        """The resource ``key`` names, handed over across reloads (a store with its state and
        pool), else ``open_resource()`` registered like :meth:`add_resource`'s. ``key`` holds
        what makes two the same: the capability, the store's URL and the settings that shape it."""

    def description(self) -> CompiledDescription | None:
        """The compiled OpenAPI description, ``None`` when none is configured (compiled once)."""
