"""YAML aliases that would make a document explode or never end: refused by the loader and the linter.

A YAML alias shares one object between places. Nine aliases of nine aliases are under
a kilobyte of text and hundreds of millions of members once written out (a "billion
laughs"), and an alias inside the node it names has no finite form at all. Anything
that walks a document as a tree would take that long, or forever.
"""

from __future__ import annotations

from typing import Any

#: Aliases may make the written-out document this many times as large as the members the file
#: spells out (and up to ``ALIAS_FLOOR`` members whatever the ratio); beyond that it is an alias bomb.
ALIAS_EXPANSION = 10
ALIAS_FLOOR = 100_000


class _Cycle(Exception):
    """A container holds itself through an alias."""


def check_aliases(data: Any) -> tuple[str | None, int]:
    """Why ``data`` cannot be written out in full (or ``None``), and its depth written out.

    The expanded size and depth are computed once per distinct container (shared ones
    are looked up, never walked again), so a billion-laughs document costs what it
    spells out.
    """
    measured: dict[int, tuple[int, int]] = {}
    open_: set[int] = set()
    spelled = 0

    def measure(node: Any) -> tuple[int, int]:
        nonlocal spelled
        if not isinstance(node, dict | list):
            return 1, 0
        key = id(node)
        known = measured.get(key)
        if known is not None:
            return known
        if key in open_:
            raise _Cycle
        open_.add(key)
        total, deepest = 1, 0
        for member in node.values() if isinstance(node, dict) else node:
            size, depth = measure(member)
            total += size
            deepest = max(deepest, depth)
        open_.discard(key)
        spelled += 1 + len(node)
        measured[key] = total, deepest + 1
        return total, deepest + 1

    try:
        expanded, depth = measure(data)
    except _Cycle:
        return "an alias refers to a node that contains it, so the document has no finite form", 0
    except RecursionError:
        return "containers nest too deeply to be read", 0
    if expanded > max(ALIAS_FLOOR, ALIAS_EXPANSION * spelled):
        return (
            f"aliases expand the document to {expanded:,} members from the {spelled:,} the file "
            f"spells out (more than {ALIAS_EXPANSION}x): an alias bomb"
        ), depth
    return None, depth
