"""Documented leniency (``x-bastion-lenient``): the request rewritten the way it was checked.

A schema or a parameter may list the coercions it accepts (``boolean-words``,
``numeric-strings``, ``trim``, ``case-insensitive-enum``; see
:mod:`bastion.validation.coerce`). The value the schema checks is the coerced one,
and so is the value the application receives: the guard hands inward a request
rewritten here, in middleware and gateway mode alike.

Rewriting touches only what was coerced. In a JSON body each coerced string is
replaced by its new token in the original bytes (a boolean, the number's own
digits, or the new string), everything else is kept byte for byte: whitespace,
member order, the spelling of every other number. In a query string or a form
body only the coerced ``key=value`` pairs change. Both are one pass over the bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote_plus

import orjson

from bastion.validation.coerce import COERCIONS, LENIENT, Guide, guide_at, json_coercion, leaf_text
from bastion.validation.openapi import Description, escape_token
from bastion.validation.params import Parameter, split_bracket_key

#: A path into a JSON value: member names and array indices.
Path = tuple[str | int, ...]
#: One token of a JSON text (whitespace before it skipped): a string, punctuation, or
#: a number or literal. The text was already parsed, so the tokens are known to be valid.
_TOKEN = re.compile(rb'[ \t\r\n]*(?:("[^"\\]*(?:\\.[^"\\]*)*")|([\[\]{},:])|([^ \t\r\n\[\]{},:"]+))', re.S)


@dataclass(slots=True)
class Rewrite:
    """What the request becomes after the declared coercions; ``None`` where nothing changed."""

    query_string: bytes | None = None
    headers: list[tuple[bytes, bytes]] | None = None
    body: bytes | None = None

    def __bool__(self) -> bool:
        return self.query_string is not None or self.headers is not None or self.body is not None


def check_declarations(description: Description) -> None:
    """``OpenAPIError`` for the first ``x-bastion-lenient`` that is not a list of known coercions."""
    try:
        if b'"x-bastion-lenient"' not in orjson.dumps(description.document, option=orjson.OPT_NON_STR_KEYS):
            return  # the common case, found in a fifth of the time of a walk
    except orjson.JSONEncodeError:
        pass  # a value orjson does not write (an integer past 64 bits): walk
    known = ", ".join(COERCIONS)
    # Iteratively (documents may nest deep); a node's pointer is spelled only for an error.
    stack: list[tuple[Any, Any]] = [(description.document, None)]
    while stack:
        node, trail = stack.pop()
        if isinstance(node, Mapping):
            declared = node.get(LENIENT)
            if declared is not None:
                where = _pointer((LENIENT, trail))
                if not isinstance(declared, list):
                    raise description.error(where, f"x-bastion-lenient must be a list of coercions ({known})")
                for name in declared:
                    if name not in COERCIONS:
                        raise description.error(
                            where, f"x-bastion-lenient: unknown coercion {str(name)[:64]!r}; known: {known}"
                        )
            stack.extend((v, (k, trail)) for k, v in node.items() if isinstance(v, Mapping | list))
        elif isinstance(node, list):
            stack.extend((v, (i, trail)) for i, v in enumerate(node) if isinstance(v, Mapping | list))


def _pointer(trail: Any) -> str:
    """The JSON pointer of a trail of ``(key, parent trail)`` pairs."""
    steps: list[str] = []
    while trail is not None:
        key, trail = trail
        steps.append(escape_token(str(key)))
    return "".join(f"/{step}" for step in reversed(steps))


# -- JSON bodies ----------------------------------------------------------------------------


def relax_json(value: Any, guide: Guide) -> tuple[Any, list[tuple[Path, bytes]]]:
    """``value`` with the declared coercions applied (in place), and each change: where, and its token.

    Only the levels whose guides declare a coercion, or lead to one, are walked.
    """
    if not guide.reaches_lenient:
        return value, []
    if isinstance(value, str):
        found = json_coercion(value, guide)
        return (value, []) if found is None else (found[0], [((), found[1])])
    changes: list[tuple[Path, bytes]] = []
    stack: list[tuple[Any, Guide, Path]] = [(value, guide, ())]
    while stack:
        node, here, path = stack.pop()
        if isinstance(node, dict):
            members: Any = node.items()
            child_guide = None
        elif isinstance(node, list):
            child_guide = here.items()
            if not child_guide.reaches_lenient:
                continue
            members = enumerate(node)
        else:
            continue
        for key, child in members:
            guide_here = child_guide if child_guide is not None else here.prop(key)
            if not guide_here.reaches_lenient:
                continue
            if isinstance(child, str):
                found = json_coercion(child, guide_here)
                if found is not None:
                    node[key] = found[0]
                    changes.append(((*path, key), found[1]))
            elif isinstance(child, dict | list):
                stack.append((child, guide_here, (*path, key)))
    return value, changes


def splice_json(body: bytes, changes: list[tuple[Path, bytes]]) -> bytes:
    """``body`` with the value at each path replaced by its token, every other byte kept.

    ``body`` is a JSON text already parsed (valid, without repeated member names), so
    each path names one value. One pass over the tokens.
    """
    trie: dict[Any, Any] = {}
    root: Any = trie
    for path, replacement in changes:
        if not path:
            root = replacement
            break
        node = trie
        for step in path[:-1]:
            node = node.setdefault(step, {})
        node[path[-1]] = replacement
    edits: list[tuple[int, int, bytes]] = []
    # A frame per open container: its part of the trie (None: nothing changes inside),
    # whether it is an object, the current member name or index, and whether a name is due.
    stack: list[list[Any]] = []
    pos = 0
    match = _TOKEN.match
    while True:
        token = match(body, pos)
        if token is None:
            break
        pos = token.end()
        string, punct, _ = token.groups()
        if string is not None and stack and stack[-1][3]:
            frame = stack[-1]
            frame[3] = False
            if frame[0] is not None:
                frame[2] = json.loads(string) if b"\\" in string else string[1:-1].decode("utf-8")
            continue
        if punct is not None and punct not in b"{[":
            if punct in b"}]":
                stack.pop()
            elif punct == b"," and stack[-1][1]:
                stack[-1][3] = True
            continue
        # The start of a value: find what the trie says about it.
        if not stack:
            entry = root
        else:
            frame = stack[-1]
            if not frame[1]:
                frame[2] += 1
            entry = frame[0].get(frame[2]) if frame[0] is not None else None
        if punct is not None:
            is_object = punct == b"{"
            stack.append([entry if isinstance(entry, dict) else None, is_object, -1, is_object])
        elif isinstance(entry, bytes) and string is not None:
            edits.append((token.start(1), token.end(1), entry))
    if not edits:
        return body
    pieces: list[bytes] = []
    last = 0
    for start, end, replacement in edits:
        pieces.append(body[last:start])
        pieces.append(replacement)
        last = end
    pieces.append(body[last:])
    return b"".join(pieces)


# -- query strings and form bodies -----------------------------------------------------------


def rewrite_pairs(raw: str, texts: Any) -> str | None:
    """``raw`` (a query string or form body) with the values ``texts(key, value)`` changes
    re-encoded; ``None`` when it changes none. Every other pair is kept as it was sent."""
    parts = raw.split("&")
    changed = False
    for index, part in enumerate(parts):
        if not part:
            continue
        raw_key, _, raw_value = part.partition("=")
        key = unquote_plus(raw_key) if "%" in raw_key or "+" in raw_key else raw_key
        value = unquote_plus(raw_value) if "%" in raw_value or "+" in raw_value else raw_value
        new = texts(key, value)
        if new is not None and new != value:
            parts[index] = f"{raw_key}={quote(new, safe=',')}"
            changed = True
    return "&".join(parts) if changed else None


def rewrite_form(body: bytes, guide: Guide) -> bytes | None:
    """A form body with its coerced values rewritten; ``None`` when nothing changes."""
    if not guide.reaches_lenient:
        return None

    def texts(key: str, value: str) -> str | None:
        return leaf_text(value, guide_at(guide, split_bracket_key(key)))

    new = rewrite_pairs(body.decode("utf-8"), texts)
    return None if new is None else new.encode("utf-8")


def rewrite_query(query_string: bytes, params: list[Parameter]) -> bytes | None:
    """The query string with the values the parameters' coercions change rewritten."""

    def texts(key: str, value: str) -> str | None:
        for param in params:
            new = param.query_text(key, value)
            if new is not None:
                return new
        return None

    new = rewrite_pairs(query_string.decode("latin-1"), texts)
    return None if new is None else new.encode("latin-1")


# -- headers and cookies ---------------------------------------------------------------------


def replace_header(headers: list[tuple[bytes, bytes]], key: bytes, value: bytes) -> list[tuple[bytes, bytes]]:
    """``headers`` with every line of ``key`` replaced by one holding ``value``, where the first was."""
    out: list[tuple[bytes, bytes]] = []
    placed = False
    for name, old in headers:
        if name != key:
            out.append((name, old))
        elif not placed:
            out.append((name, value))
            placed = True
    return out


def replace_cookie(headers: list[tuple[bytes, bytes]], name: str, value: str) -> list[tuple[bytes, bytes]]:
    """``headers`` with cookie ``name``'s value replaced in the ``Cookie`` line that holds it
    (quoted if it was), every other cookie kept as it was sent."""
    out: list[tuple[bytes, bytes]] = []
    for key, line in headers:
        if key == b"cookie":
            parts = line.decode("latin-1").split(";")
            for index, part in enumerate(parts):
                head, sep, old = part.partition("=")
                if sep and head.strip() == name:
                    old = old.strip()
                    quoted = len(old) >= 2 and old[0] == old[-1] == '"'
                    parts[index] = f"{head}=" + (f'"{value}"' if quoted else value)
            line = ";".join(parts).encode("latin-1", "replace")
        out.append((key, line))
    return out
