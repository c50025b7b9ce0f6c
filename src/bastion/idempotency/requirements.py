"""Which requests the idempotency guard handles, and whether they must carry a key.

A request's mode is ``REQUIRED`` (no key: ``IDEMPOTENCY_KEY_MISSING``), ``OPTIONAL``
(a key is honoured when sent) or ``OFF`` (passed through). In order of precedence:
the operation's ``x-bastion-idempotency`` extension in the OpenAPI description, the
``idempotency.require`` entries, then ``idempotency.methods`` (optional).
"""

from __future__ import annotations

from typing import Any

from bastion.asgi import RequestContext

OFF, OPTIONAL, REQUIRED = 0, 1, 2
#: The OpenAPI extension that sets an operation's mode.
EXTENSION = "x-bastion-idempotency"
_EXTENSION_MODES: dict[Any, int] = {
    "required": REQUIRED,
    True: REQUIRED,
    "optional": OPTIONAL,
    "off": OFF,
    "disabled": OFF,
    False: OFF,
}


class RequiredRoutes:
    """The ``idempotency.require`` entries (``METHOD /template``), matched against a request's route.

    The route guard names a request after the entry it matches ignoring case and a
    trailing slash (:class:`bastion.routing.ProtectiveRoutes`), and there is a route guard
    whenever there are entries (:func:`bastion.routing.router.configured_routes`): a request
    is matched by its route alone, which is the entry's own template for ``/ORDERS/`` as
    for ``/orders``.
    """

    def __init__(self, entries: list[str]) -> None:
        self.exact: set[tuple[str, str]] = set()
        for entry in entries:
            method, _, template = entry.strip().partition(" ")
            template = template.strip()
            if not template.startswith("/"):
                raise ValueError(f"idempotency.require entry {entry!r} is not 'METHOD /path'")
            self.exact.add((method.upper(), template))
        #: The methods of the entries.
        self.methods = frozenset(m for m, _ in self.exact)

    def match(self, method: str, route: str | None) -> bool:
        """Whether ``method`` on ``route`` (the request's route template) requires a key."""
        return (method, route) in self.exact


class Requirements:
    """Works out a request's mode (``OFF``, ``OPTIONAL``, ``REQUIRED``)."""

    __slots__ = ("all_methods", "methods", "plain", "required")

    def __init__(self, methods: list[str], require: list[str]) -> None:
        #: The methods a key is honoured on by default.
        self.methods = frozenset(methods)
        self.required = RequiredRoutes(require)
        #: Every method some request may need the guard for: any other passes untouched.
        self.all_methods = self.methods | self.required.methods
        #: No ``require`` entries: without an operation, a method the guard handles is optional.
        self.plain = not self.required.exact

    def mode(self, method: str, ctx: RequestContext) -> int:
        """The mode of a request with a method in :attr:`all_methods`."""
        operation = ctx.operation
        if operation is not None:
            extensions = getattr(operation, "extensions", None)
            if isinstance(extensions, dict) and EXTENSION in extensions:
                value = extensions[EXTENSION]
                mode = _EXTENSION_MODES.get(value.lower() if isinstance(value, str) else value)
                if mode is not None:
                    return mode
        elif self.plain:
            return OPTIONAL  # (all_methods is methods then)
        if self.required.match(method, ctx.route):
            return REQUIRED
        return OPTIONAL if method in self.methods else OFF
