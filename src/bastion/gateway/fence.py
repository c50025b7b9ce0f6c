"""The version half of the fences around the framework internals the gateway relies on.

The gateway's HTTP protocol (:mod:`bastion.gateway.transport`) subclasses uvicorn's
and writes response heads as uvicorn does; its upstream client
(:mod:`bastion.gateway.upstream`) drives aiohttp's request and response classes
without the session. Each checks, once at import, that the installed release is one
the code was tested on and that the attributes and signatures it relies on are
there, and otherwise takes the framework's public path. A shape check alone cannot
see a changed behaviour behind an unchanged signature: the release range is what
covers that.
"""

from __future__ import annotations


def outside_tested(name: str, version: str, tested: tuple[tuple[int, int], tuple[int, int]]) -> str | None:
    """Why ``name`` ``version`` is not in ``tested`` (from, up to but not including), or ``None``."""
    try:
        release = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return f"{name} {version} has an unknown version scheme"
    low, high = tested
    if not low <= release < high:
        return (
            f"{name} {version} is outside the tested range "
            f"({low[0]}.{low[1]} up to {high[0]}.{high[1]}, not included)"
        )
    return None
