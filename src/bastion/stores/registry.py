"""The store registry: (capability, URL kind) -> the factory that opens that store.

Each capability declares a :class:`Capability` and its stores package registers a
factory for every kind of URL it accepts, the way ``limits`` maps storage schemes
to storage classes. Opening a store is then the same for every capability: parse
the URL, look up the factory, call it. So is every refusal: a bad URL, a kind the
capability has no store for, a driver whose extra is not installed, each is a
:class:`~bastion.config.ConfigError` naming the configuration key and the reason.

A factory imports its store's module when it is called: a driver is imported only
when its store is used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, NoReturn, TypeVar

from bastion.stores.urls import StoreKind, StoreURL, parse_store_url

C = TypeVar("C")
S = TypeVar("S")
F = TypeVar("F", bound=Callable[..., Any])

#: (capability, kind) -> factory(url, context): every store any capability can open.
_FACTORIES: dict[tuple[str, StoreKind], Callable[[StoreURL, Any], Any]] = {}

#: The optional drivers: kind -> (what to call it, the module the driver is, the extra that installs it).
_DRIVERS: dict[StoreKind, tuple[str, str, str]] = {
    "redis": ("Redis", "redis", "redis"),
    "postgres": ("PostgreSQL", "asyncpg", "postgres"),
}


def registered() -> list[tuple[str, StoreKind]]:
    """Every (capability, kind) pair a factory is registered for."""
    return sorted(_FACTORIES)


def _refuse(key: str, reason: str) -> NoReturn:
    # Imported here: the configuration package itself parses store URLs with this package.
    from bastion.config import ConfigError

    raise ConfigError([(key, reason)]) from None


class Capability(Generic[C, S]):
    """One capability's part of the registry: its factories take a ``C`` and return an ``S``.

    ``holds`` says what the capability keeps in a store (``"idempotency records"``),
    for the message that refuses a kind it has no store for.
    """

    __slots__ = ("holds", "name")

    def __init__(self, name: str, holds: str) -> None:
        self.name = name
        self.holds = holds

    def register(self, *kinds: StoreKind) -> Callable[[F], F]:
        """Register the decorated ``factory(url, context)`` for each of ``kinds``."""

        def decorate(factory: F) -> F:
            for kind in kinds:
                _FACTORIES[(self.name, kind)] = factory
            return factory

        return decorate

    def supports(self, kind: StoreKind) -> bool:
        """Whether a store of ``kind`` is registered for this capability."""
        return (self.name, kind) in _FACTORIES

    def open(self, url: str | StoreURL, context: C, *, key: str) -> S:
        """The store ``url`` names, opened with ``context``; ``key`` is the configuration key
        the URL came from (``idempotency.store``, ``store``...), named by any refusal."""
        if isinstance(url, str):
            try:
                url = parse_store_url(url)
            except ValueError as exc:
                _refuse(key, str(exc))
        factory: Callable[[StoreURL, C], S] | None = _FACTORIES.get((self.name, url.kind))
        if factory is None:
            _refuse(key, f"{url.kind} cannot hold {self.holds}")
        try:
            return factory(url, context)
        except ModuleNotFoundError as exc:
            driver = _DRIVERS.get(url.kind)
            if driver is None or (exc.name or "").partition(".")[0] != driver[1]:
                raise
            label, _, extra = driver
            _refuse(key, f"{label} needs the {extra} extra: pip install 'bastion-guards[{extra}]'")
