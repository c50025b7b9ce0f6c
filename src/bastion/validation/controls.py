"""NUL and C0 control characters in request strings: refused unless the description allows them.

Tab, CR and LF are ordinary text; U+0000 to U+0008, U+000B, U+000C and U+000E
to U+001F are not, and many a store, log line or C library truncates or
misreads a string at them. They are ``CONTROL_CHARACTER`` entries of the 422
wherever they appear (JSON member names and string values, parameter values)
unless the schema at that place, or the parameter, says
``x-bastion-allow-control-characters: true``.

The common request has none, so each place is first scanned as raw bytes in
one pass; values are only walked after a hit.
"""

from __future__ import annotations

import re
from typing import Any

from bastion.validation.coerce import Guide
from bastion.validation.errors import field_name
from bastion.validation.openapi import escape_token

#: A control character written as a JSON escape, after an even run of backslashes
#: (``\\u0000`` is a backslash and the text ``u0000``). A valid JSON text holds no
#: raw control character at all, so the escapes are the only way one gets in.
_JSON_ESCAPED = re.compile(rb"(?<!\\)(?:\\\\)*\\(?:u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|[bf])")
#: One, raw or percent-encoded, in a query string.
_QUERY = re.compile(rb"%(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])|[\x00-\x08\x0b\x0c\x0e-\x1f]")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f]")
#: The longest pointer an entry names.
MAX_POINTER = 128
DETAIL = "must not contain control characters (U+0000 to U+001F other than tab, CR and LF)"
NAME_DETAIL = "has a member name with control characters (U+0000 to U+001F other than tab, CR and LF)"


def json_may_have(body: bytes) -> bool:
    """Whether a valid JSON ``body`` may hold a control character (``False`` is certain).

    Plain substring searches come first: they run at memory speed, and text with
    other escapes (quotes, ``\\u00e9``) never reaches the slower regular expression.
    """
    if b"\\" not in body:  # no escape at all: one search at memory speed, the common case
        return False
    if not (b"\\u000" in body or b"\\u001" in body or b"\\b" in body or b"\\f" in body):
        return False
    return _JSON_ESCAPED.search(body) is not None


def query_may_have(query_string: bytes) -> bool:
    """Whether a raw query string may hold a control character (``False`` is certain)."""
    return _QUERY.search(query_string) is not None


def has_control(value: Any) -> bool:
    """Whether a string, or any string (member names included) inside a parsed value, has one."""
    if isinstance(value, str):
        return _CONTROL.search(value) is not None
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            if _CONTROL.search(node):
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def parameter_entry(location: str, name: str) -> dict[str, Any]:
    """The entry for a parameter whose value holds a control character."""
    return {"code": "CONTROL_CHARACTER", "in": location, "name": name, "field": name, "detail": DETAIL}


def body_entries(value: Any, guide: Guide, limit: int) -> list[dict[str, Any]]:
    """The entries for strings of a JSON body that hold control characters, at most ``limit``.

    The walk follows the body's schema through ``guide``, so the allowance is read
    where the string is: a string value is allowed by its own schema, a member
    name by the schema of the object holding it. Nothing is inherited from the
    levels above.
    """
    found: list[dict[str, Any]] = []
    stack: list[tuple[Any, Guide, tuple[str | int, ...]]] = [(value, guide, ())]
    while stack and len(found) < limit:
        node, here, path = stack.pop()
        if isinstance(node, str):
            if not here.allow_control and _CONTROL.search(node):
                found.append(_body_entry(path, DETAIL))
        elif isinstance(node, dict):
            if not here.allow_control and any(_CONTROL.search(k) for k in node):
                found.append(_body_entry(path, NAME_DETAIL))
            for key, child in node.items():
                if isinstance(child, str | dict | list):
                    stack.append((child, here.prop(key), (*path, key)))
        elif isinstance(node, list) and node:
            items = here.items()
            stack.extend(
                (child, items, (*path, i))
                for i, child in enumerate(node)
                if isinstance(child, str | dict | list)
            )
    return found


def _body_entry(path: tuple[str | int, ...], detail: str) -> dict[str, Any]:
    pointer = "".join("/" + escape_token(str(p)) for p in path)
    return {
        "code": "CONTROL_CHARACTER",
        "in": "body",
        "pointer": pointer[:MAX_POINTER],
        "field": field_name(path)[:MAX_POINTER],
        "detail": detail,
    }
