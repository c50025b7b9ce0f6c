"""Stores: the URL that picks one, the registry that opens it, the failure policy around it.

Capabilities keep their own store implementations (``idempotency/stores``,
``ratelimit/stores``) and register them in :mod:`bastion.stores.registry`, so that
every capability accepts the same URLs, opens its store the same way and reports a
bad one the same way. :class:`StorePolicy` (timeout, circuit breaker, open or
closed) makes a store that fails or freezes cost every guard the same bounded wait.
:mod:`bastion.stores.redis` is what the Redis stores share (imported only with them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from bastion.stores.policy import CircuitBreaker, PolicySettings, StorePolicy
from bastion.stores.urls import StoreKind, StoreURL, parse_store_url

if TYPE_CHECKING:
    from bastion.stores.redis import RedisResource

__all__ = [
    "CircuitBreaker",
    "PolicySettings",
    "RedisResource",
    "StoreKind",
    "StorePolicy",
    "StoreURL",
    "parse_store_url",
]


def __getattr__(name: str) -> Any:
    # RedisResource needs the redis driver: import it only when it is asked for.
    if name == "RedisResource":
        from bastion.stores.redis import RedisResource

        return RedisResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
