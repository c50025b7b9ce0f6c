"""jsonschema-rs errors to the entries of a problem's ``errors[]``.

The detail of an entry is written here from the keyword and the schema, never
from the library's message, which quotes the submitted value (a password, a
token). Entries come out in a deterministic order: parameters before the body,
then by location, then by code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any

import orjson

from bastion.validation.coerce import index_order
from bastion.validation.openapi import escape_token

#: The ``detail`` of an unknown object member's entry, which tells it from the other
#: ``NOT_ALLOWED`` ones (a ``false`` schema, a query parameter the operation does not
#: have): ``validation.relax`` with ``allow-unknown-fields`` lets only these through.
UNKNOWN_FIELD = "is not a known field"

#: Where an entry is: the members of the instance the combined validator checks.
LOCATIONS = ("path", "query", "header", "cookie", "body")
_LOCATION_RANK = {name: rank for rank, name in enumerate(LOCATIONS)}

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "a boolean",
    "array": "an array",
    "object": "an object",
    "null": "null",
}

_FORMAT_WORDS = {
    "email": "must be an email address",
    "idn-email": "must be an email address",
    "uuid": "must be a UUID",
    "date": "must be a date (YYYY-MM-DD)",
    "date-time": "must be a date and time (RFC 3339, for example 2024-05-01T10:00:00Z)",
    "time": "must be a time (RFC 3339, for example 10:00:00Z)",
    "duration": "must be an ISO 8601 duration",
    "uri": "must be an absolute URI",
    "uri-reference": "must be a URI reference",
    "iri": "must be an absolute IRI",
    "ipv4": "must be an IPv4 address",
    "ipv6": "must be an IPv6 address",
    "hostname": "must be a host name",
    "idn-hostname": "must be a host name",
    "regex": "must be a regular expression",
    "json-pointer": "must be a JSON pointer",
}

_SIMPLE: dict[str, tuple[str, str]] = {
    # keyword: (code, detail template over the schema's limit)
    "minimum": ("OUT_OF_RANGE", "must be at least {limit}"),
    "maximum": ("OUT_OF_RANGE", "must be at most {limit}"),
    "exclusiveMinimum": ("OUT_OF_RANGE", "must be greater than {limit}"),
    "exclusiveMaximum": ("OUT_OF_RANGE", "must be less than {limit}"),
    "minLength": ("TOO_SHORT", "must be at least {limit} characters long"),
    "maxLength": ("TOO_LONG", "must be at most {limit} characters long"),
    "minItems": ("TOO_SHORT", "must have at least {limit} items"),
    "maxItems": ("TOO_LONG", "must have at most {limit} items"),
    "minProperties": ("TOO_SHORT", "must have at least {limit} members"),
    "maxProperties": ("TOO_LONG", "must have at most {limit} members"),
}


def _json(value: Any) -> str:
    # Schema values only (limits, enum members), never the instance. Big numbers
    # come back as Decimal, which orjson does not serialise.
    try:
        return orjson.dumps(value, default=str).decode()
    except TypeError:  # an integer past 64 bits
        return json.dumps(value, default=str)


def _choices(options: Iterable[Any]) -> str:
    listed = list(options)
    shown = ", ".join(v if isinstance(v, str) else _json(v) for v in listed[:10])
    return shown + (f" (and {len(listed) - 10} more)" if len(listed) > 10 else "")


#: The longest name, field or pointer an entry echoes: anything longer is cut and
#: ends in :data:`CUT`, so a client's 30,000-character key never comes back whole.
MAX_ECHO = 128
#: What ends a cut name, field or pointer.
CUT = "\u2026"

#: An entry's place: its location, then the steps of its path (names cut to
#: ``MAX_ECHO``), which is what de-duplication and shadowing compare.
_Place = tuple[str | int, ...]


def cut(text: str) -> str:
    """``text`` as an entry may echo it: at most ``MAX_ECHO`` characters, the last one ``CUT`` if cut."""
    return text if len(text) <= MAX_ECHO else text[: MAX_ECHO - 1] + CUT


def field_name(path: Iterable[str | int]) -> str:
    """A dotted field name for a location: ``items[0].sku``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _entry(
    code: str, path: list[str | int], detail: str, names: Mapping[str, str]
) -> tuple[_Place, dict[str, Any]]:
    location = str(path[0]) if path else "body"
    # Each step is cut before anything is built from it, so the work per entry is
    # bounded by the nesting depth, not by the length of a submitted key.
    rest = [part if isinstance(part, int) else cut(str(part)) for part in path[1:]]
    if location == "body":
        pointer = "".join("/" + escape_token(str(p)) for p in rest)
        entry = {"code": code, "in": "body", "pointer": cut(pointer), "field": cut(field_name(rest))}
    else:
        first = str(path[1]) if len(path) > 1 else ""
        rest[:1] = [cut(names.get(first, first))]
        name = str(rest[0])
        entry = {"code": code, "in": location, "name": name, "field": cut(field_name(rest))}
    entry["detail"] = detail
    return (location, *rest), entry


def _describe(
    error: Any, names: Mapping[str, str], root: str | None, room: int
) -> list[tuple[_Place, dict[str, Any]]]:
    """The places and entries for one jsonschema-rs ``ValidationError``, at most ``room`` of them.

    Usually one; several for unknown fields, where one error names every unknown
    key of an object. ``root`` replaces the first step of the error's path (the
    member of the instance that holds the checked value) as the entries' location.
    """
    kind = error.kind
    keyword = kind.name
    if keyword == "oneOf":
        # Both oneOf failures share the keyword; the kind's class tells them apart.
        keyword = "oneOfMultipleValid" if type(kind).__name__ == "OneOfMultipleValid" else "oneOfNotValid"
    path = list(error.instance_path)
    if root is not None and path:
        path[0] = root
    if keyword in _SIMPLE:
        code, template = _SIMPLE[keyword]
        return [_entry(code, path, template.format(limit=_json(kind.limit)), names)]
    if keyword == "required":
        return [_entry("REQUIRED", [*path, kind.property], "is required", names)]
    if keyword == "type":
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in sorted(kind.types, key=_type_order))
        return [_entry("TYPE_MISMATCH", path, f"must be {words}", names)]
    if keyword == "format":
        detail = _FORMAT_WORDS.get(kind.format, f"must be in the {kind.format} format")
        return [_entry("INVALID_FORMAT", path, detail, names)]
    if keyword == "pattern":
        return [_entry("PATTERN_MISMATCH", path, f"must match the pattern {kind.pattern}", names)]
    if keyword in ("backtrackLimitExceeded", "regexEngineFailure"):
        return [_entry("PATTERN_MISMATCH", path, "could not be checked against its pattern in time", names)]
    if keyword in ("additionalProperties", "unevaluatedProperties"):
        return [
            _entry("NOT_ALLOWED", [*path, name], UNKNOWN_FIELD, names)
            for name in islice(kind.unexpected, room)
        ]
    if keyword == "falseSchema":
        return [_entry("NOT_ALLOWED", path, "is not allowed here", names)]
    if keyword == "enum":
        return [_entry("ENUM_MISMATCH", path, f"must be one of: {_choices(kind.options)}", names)]
    if keyword == "const":
        return [_entry("ENUM_MISMATCH", path, f"must be {_json(kind.expected_value)}", names)]
    if keyword in ("anyOf", "oneOfNotValid"):
        narrowed = _narrow(kind.context, list(error.instance_path), names, root, room)
        if narrowed is not None:
            return narrowed
        return [_entry("INVALID", path, "does not match any of the allowed shapes", names)]
    if keyword == "oneOfMultipleValid":
        return [_entry("INVALID", path, "matches more than one of the allowed shapes", names)]
    return [_entry("INVALID", path, _OTHER_WORDS.get(keyword, f"breaks the {keyword} rule"), names)]


_OTHER_WORDS = {
    "multipleOf": "must be a multiple of the step its schema sets",
    "uniqueItems": "must not contain duplicate items",
    "not": "has a shape that is not allowed",
    "contains": "must contain at least one matching item",
    "propertyNames": "has a member name that is not allowed",
    "unevaluatedItems": "has more items than allowed",
    "additionalItems": "has more items than allowed",
}


def _type_order(name: str) -> tuple[int, str]:
    return (name == "null", name)


def _narrow(
    context: list[list[Any]], path: list[Any], names: Mapping[str, str], root: str | None, room: int
) -> list[tuple[_Place, dict[str, Any]]] | None:
    """When exactly one branch of an ``anyOf``/``oneOf`` fits the value's type, that branch's errors."""
    fitting = [
        branch
        for branch in context
        if branch
        and not any(
            e.kind.name in ("type", "enum", "const") and list(e.instance_path) == path for e in branch
        )
    ]
    if len(fitting) != 1:
        return None
    entries: list[tuple[_Place, dict[str, Any]]] = []
    for error in fitting[0]:
        if len(entries) >= room:
            break
        entries.extend(_describe(error, names, root, room - len(entries)))
    return entries


def collect(
    errors: Iterable[Any], names: Mapping[str, str], limit: int, root: str | None = None
) -> list[dict[str, Any]]:
    """The sorted, de-duplicated entries for a validator's errors, at most ``limit``.

    The work is bounded before any entry is built: at most ``limit + SPARE``
    entries are made (one error naming 50,000 unknown keys makes no more than
    that), then shadowed ones are dropped and the rest sorted, in linear time.
    """
    budget = limit + SPARE
    found: dict[tuple[_Place, str], dict[str, Any]] = {}
    for error in errors:
        for place, entry in _describe(error, names, root, budget - len(found)):
            found.setdefault((place, entry["code"]), entry)
        if len(found) >= budget:
            break
    entries = _drop_shadowed(found)
    entries.sort(key=sort_key)
    return entries[:limit]


#: How many entries are built beyond the limit: enough that for any ordinary
#: request the entries returned are the first in sorted order whichever error the
#: validator reported first, and that shadowed entries have room to be dropped.
SPARE = 200


def _place(entry: Mapping[str, Any]) -> str:
    """Where an entry is, as a path ending in ``/`` (``body/items/0/``, ``query/ids/1/``)."""
    if entry["in"] == "body":
        return f"body{entry['pointer']}/"
    name = entry["name"]
    rest = entry["field"][len(name) :].replace(".", "/").replace("[", "/").replace("]", "")
    return f"{entry['in']}/{escape_token(name)}{rest}/"


def _drop_shadowed(found: Mapping[tuple[_Place, str], dict[str, Any]]) -> list[dict[str, Any]]:
    """The entries that no other entry makes redundant, in one pass over them.

    A value of the wrong type needs no enum or format entry besides. And when a
    member of an ``anyOf`` branch fails, the branch's properties are not
    "evaluated", so ``unevaluatedProperties`` also flags them; that second entry
    would send a client looking for a typo that is not there. So an unknown-field
    entry goes when another entry is at its place or below it.
    """
    # Places become node numbers of a tree built on the fly, so an entry's
    # ancestors cost one dictionary step per level instead of a slice per level.
    nodes: dict[tuple[int, str | int], int] = {}
    numbered: list[tuple[int, str, dict[str, Any]]] = []
    mistyped: set[int] = set()
    claimed: set[int] = set()
    above: set[int] = set()
    for (place, code), entry in found.items():
        node = 0
        for step in place:
            above.add(node)
            node = nodes.setdefault((node, step), len(nodes) + 1)
        numbered.append((node, code, entry))
        if code == "TYPE_MISMATCH":
            mistyped.add(node)
        if code != "NOT_ALLOWED":
            claimed.add(node)
    kept = []
    for node, code, entry in numbered:
        if code != "TYPE_MISMATCH" and node in mistyped:
            continue  # enum, format or range checks of a value of the wrong type only add noise
        if code == "NOT_ALLOWED" and (node in claimed or node in above):
            continue
        kept.append(entry)
    return kept


def _step_key(step: str) -> tuple[int, int, str]:
    """Array indexes (ASCII digits) in numeric order before names, without ``int()``.

    Comparing by length, then text, orders decimal numbers of any length: a member
    name of 5,000 digits or "²" is ordered, never converted.
    """
    if step.isascii() and step.isdigit():
        return (0, *index_order(step))
    return (1, 0, step)


def sort_key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """The deterministic order of entries: location, place (array indexes numerically), code."""
    steps = tuple(_step_key(s) for s in _place(entry).split("/"))
    return (_LOCATION_RANK.get(entry["in"], len(LOCATIONS)), steps, entry["code"], entry["detail"])
