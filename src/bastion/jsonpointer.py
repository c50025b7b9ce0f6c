"""JSON pointers (RFC 6901), parsed once where a configuration or a description names them.

Shared by the idempotency guard (``x-bastion-idempotency-fingerprint``) and the checker,
which reports the same value as a finding: one parser, so they cannot disagree. Nothing
here imports the rest of bastion.
"""

from __future__ import annotations

import re
from typing import Any

#: A ``~`` that does not start one of the two escapes, ``~0`` (``~``) and ``~1`` (``/``).
_BAD_ESCAPE = re.compile(r"~(?![01])")

#: The reference tokens of each pointer of a list.
Pointers = tuple[tuple[str, ...], ...]


def parse_pointer(pointer: str) -> tuple[str, ...]:
    """The reference tokens of an RFC 6901 JSON pointer (``"/a~1b/0"`` is ``("a/b", "0")``).

    Raises :class:`ValueError` for a string that is not a pointer: one not empty and
    not starting with ``/``, or with a ``~`` not followed by ``0`` or ``1``.
    """
    if pointer == "":
        return ()
    if not pointer.startswith("/"):
        raise ValueError(f"{pointer!r} is not a JSON pointer: it must be empty or start with '/'")
    tokens = pointer[1:].split("/")
    if any(_BAD_ESCAPE.search(token) for token in tokens):
        raise ValueError(f"{pointer!r} is not a JSON pointer: '~' must be followed by 0 or 1")
    return tuple(t.replace("~1", "/").replace("~0", "~") for t in tokens)


def parse_pointer_list(value: Any) -> Pointers:
    """The pointers of a non-empty list of JSON pointers; :class:`ValueError` saying what is
    wrong otherwise (a string alone, an empty list, an item that is not a pointer)."""
    if not isinstance(value, list) or not value:
        raise ValueError("must be a non-empty list of JSON pointers, for example [/amount, /items]")
    pointers = []
    for item in value:
        if not isinstance(item, str):
            raise ValueError(f"{item!r} is not a JSON pointer (a string such as /amount)")
        pointers.append(parse_pointer(item))
    return tuple(pointers)
