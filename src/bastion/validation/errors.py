"""jsonschema-rs errors to the entries of a problem's ``errors[]``.

The detail of an entry is written here from the keyword and the schema, never
from the library's message, which quotes the submitted value (a password, a
token). Entries come out in a deterministic order: parameters before the body,
then by location, then by code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from bastion.validation.openapi import escape_token

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


def field_name(path: Iterable[str | int]) -> str:
    """A dotted field name for a location: ``items[0].sku``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _entry(code: str, path: list[str | int], detail: str, names: Mapping[str, str]) -> dict[str, Any]:
    location = str(path[0]) if path else "body"
    rest = path[1:]
    if location == "body":
        return {
            "code": code,
            "in": "body",
            "pointer": "".join("/" + escape_token(str(p)) for p in rest),
            "field": field_name(rest),
            "detail": detail,
        }
    name = str(rest[0]) if rest else ""
    name = names.get(name, name)
    return {
        "code": code,
        "in": location,
        "name": name,
        "field": field_name([name, *rest[1:]]),
        "detail": detail,
    }


def describe(error: Any, names: Mapping[str, str], root: str | None = None) -> list[dict[str, Any]]:
    """The entries for one jsonschema-rs ``ValidationError`` (usually one; several for unknown fields).

    ``root`` replaces the first step of the error's path (the member of the
    instance that holds the checked value) as the entries' location.
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
            _entry("NOT_ALLOWED", [*path, name], "is not a known field", names) for name in kind.unexpected
        ]
    if keyword == "falseSchema":
        return [_entry("NOT_ALLOWED", path, "is not allowed here", names)]
    if keyword == "enum":
        return [_entry("ENUM_MISMATCH", path, f"must be one of: {_choices(kind.options)}", names)]
    if keyword == "const":
        return [_entry("ENUM_MISMATCH", path, f"must be {_json(kind.expected_value)}", names)]
    if keyword in ("anyOf", "oneOfNotValid"):
        narrowed = _narrow(kind.context, list(error.instance_path), names, root)
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
    context: list[list[Any]], path: list[Any], names: Mapping[str, str], root: str | None
) -> list[dict[str, Any]] | None:
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
    entries: list[dict[str, Any]] = []
    for error in fitting[0]:
        entries.extend(describe(error, names, root))
    return entries


def collect(
    errors: Iterable[Any], names: Mapping[str, str], limit: int, root: str | None = None
) -> list[dict[str, Any]]:
    """The sorted, de-duplicated entries for a validator's errors, at most ``limit``."""
    entries: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for error in errors:
        for entry in describe(error, names, root):
            key = (entry["in"], _place(entry), entry["code"])
            if key in seen:
                continue
            seen.add(key)
            entries.append(entry)
        if len(entries) >= max(limit * 20, 1000):
            break  # bounded work for a body with thousands of bad items
    entries = _drop_shadowed(entries)
    entries.sort(key=sort_key)
    return entries[:limit]


def _place(entry: Mapping[str, Any]) -> str:
    """Where an entry is, as a path ending in ``/`` (``body/items/0/``, ``query/ids/1/``)."""
    if entry["in"] == "body":
        return f"body{entry['pointer']}/"
    name = entry["name"]
    rest = entry["field"][len(name) :].replace(".", "/").replace("[", "/").replace("]", "")
    return f"{entry['in']}/{escape_token(name)}{rest}/"


def _drop_shadowed(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries that another entry makes redundant.

    A value of the wrong type needs no enum or format entry besides. And when a
    member of an ``anyOf`` branch fails, the branch's properties are not
    "evaluated", so ``unevaluatedProperties`` also flags them; that second entry
    would send a client looking for a typo that is not there.
    """
    if len(entries) < 2:
        return entries
    places = [_place(e) for e in entries]
    mistyped = {place for place, e in zip(places, entries, strict=True) if e["code"] == "TYPE_MISMATCH"}
    kept = []
    for entry, place in zip(entries, places, strict=True):
        if place in mistyped and entry["code"] != "TYPE_MISMATCH":
            continue  # enum, format or range checks of a value of the wrong type only add noise
        if entry["code"] == "NOT_ALLOWED" and any(
            (other != place and other.startswith(place)) or (other == place and e["code"] != "NOT_ALLOWED")
            for other, e in zip(places, entries, strict=True)
        ):
            continue
        kept.append(entry)
    return kept


def sort_key(entry: Mapping[str, Any]) -> tuple[Any, ...]:
    """The deterministic order of entries: location, place (array indexes numerically), code."""
    steps = tuple((0, int(s), "") if s.isdigit() else (1, 0, s) for s in _place(entry).split("/"))
    return (_LOCATION_RANK.get(entry["in"], len(LOCATIONS)), steps, entry["code"], entry["detail"])
