"""Coercion: what a schema says about types at each place, and strings turned into those types.

Query, header, path, cookie and form values arrive as strings. Before the schema
check they are converted to the types the schema declares at their place, so
``limit=5`` is the integer 5; a string that fits no declared type stays a string
and the schema reports it where it is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import orjson

from bastion.validation.openapi import Description, escape_token

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_TRUE = frozenset({"true"})
_FALSE = frozenset({"false"})
_LENIENT_TRUE = frozenset({"true", "yes", "1", "on", "True", "TRUE", "Yes", "YES", "On", "ON"})
_LENIENT_FALSE = frozenset({"false", "no", "0", "off", "False", "FALSE", "No", "NO", "Off", "OFF"})
_COMPOSITION = ("allOf", "anyOf", "oneOf")
#: The schema (or parameter) extension that lets strings hold C0 control characters.
ALLOW_CONTROL = "x-bastion-allow-control-characters"


class Guide:
    """What the schema at one place says about types, to coerce strings before validation.

    A guide merges every schema that may apply at a place (the members of
    ``allOf``/``anyOf``/``oneOf``, followed through ``$ref``); children are built on
    first use and kept, so the work is bounded by the size of the description.
    """

    __slots__ = (
        "_description",
        "_items",
        "_nodes",
        "_other",
        "_props",
        "additional",
        "allow_control",
        "types",
    )

    def __init__(self, description: Description, nodes: list[tuple[Any, str]]) -> None:
        self._description = description
        flat: list[tuple[Mapping[str, Any], str]] = []
        self._flatten(nodes, flat, 0)
        self._nodes = flat
        types: set[str] = set()
        for node, _ in flat:
            kind = node.get("type")
            if isinstance(kind, str):
                types.add(kind)
            elif isinstance(kind, list):
                types.update(str(k) for k in kind)
            elif "properties" in node:
                types.add("object")
            elif "items" in node:
                types.add("array")
            for value in node.get("enum") or ():
                types.add(_json_type(value))
        #: The JSON types allowed here (empty: anything).
        self.types = frozenset(types)
        #: Whether members not named in ``properties`` may appear (they are coerced as strings).
        self.additional = any(n.get("additionalProperties", True) is not False for n, _ in flat)
        #: Whether a schema here says ``x-bastion-allow-control-characters: true``.
        self.allow_control = any(n.get(ALLOW_CONTROL) is True for n, _ in flat)
        self._props: dict[str, Guide] = {}
        self._other: Guide | None = None
        self._items: Guide | None = None

    def _flatten(
        self, nodes: list[tuple[Any, str]], out: list[tuple[Mapping[str, Any], str]], depth: int
    ) -> None:
        if depth > 16:
            return
        for node, at in nodes:
            node, at = self._description.resolve(node, at)
            if not isinstance(node, Mapping):
                continue
            out.append((node, at))
            for key in _COMPOSITION:
                members = node.get(key)
                if isinstance(members, list):
                    self._flatten([(m, f"{at}/{key}/{i}") for i, m in enumerate(members)], out, depth + 1)

    def prop(self, name: str) -> Guide:
        """The guide for member ``name`` of an object here."""
        guide = self._props.get(name)
        if guide is not None:
            return guide
        declared = False
        found: list[tuple[Any, str]] = []
        for node, at in self._nodes:
            properties = node.get("properties")
            if isinstance(properties, Mapping) and name in properties:
                declared = True
                found.append((properties[name], f"{at}/properties/{escape_token(name)}"))
            elif isinstance(node.get("additionalProperties"), Mapping):
                found.append((node["additionalProperties"], f"{at}/additionalProperties"))
        if declared:
            guide = self._props[name] = Guide(self._description, found)
        else:
            # Every undeclared name shares one guide, so client-chosen names never
            # grow the cache, which lives as long as the description.
            if self._other is None:
                self._other = Guide(self._description, found)
            guide = self._other
        return guide

    def items(self) -> Guide:
        """The guide for the items of an array here."""
        if self._items is None:
            found = [
                (n["items"], f"{at}/items") for n, at in self._nodes if isinstance(n.get("items"), Mapping)
            ]
            self._items = Guide(self._description, found)
        return self._items

    def warm(self, depth: int) -> None:
        """Build the guides below this one now, ``depth`` levels down, so requests only read them."""
        if depth <= 0:
            return
        if "array" in self.types or not self.types:
            self.items().warm(depth - 1)
        for name in self.property_names():
            self.prop(name).warm(depth - 1)

    def property_names(self) -> list[str]:
        """Every member name declared here."""
        names: list[str] = []
        for node, _ in self._nodes:
            for name in node.get("properties") or ():
                if name not in names:
                    names.append(str(name))
        return names


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def coerce_scalar(text: str, types: frozenset[str], lenient: bool) -> Any:
    """``text`` as the first declared scalar type it fits; unchanged when none fits."""
    if not types or ("string" in types and len(types) == 1):
        return text
    if "integer" in types and _INT_RE.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # past Python's digit limit for int(): the schema reports the string
            return text
    if "number" in types and _NUMBER_RE.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return int(number) if "integer" in types and number.is_integer() else number
    if "boolean" in types:
        if text in (_LENIENT_TRUE if lenient else _TRUE):
            return True
        if text in (_LENIENT_FALSE if lenient else _FALSE):
            return False
    if "null" in types and text in ("", "null") and "string" not in types:
        return None
    if ("object" in types or "array" in types) and text[:1] in ("{", "["):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def index_order(key: str) -> tuple[int, str]:
    """The numeric order of a string of ASCII digits, without ``int()`` (which refuses very
    long ones): by length once leading zeros are gone, then by text."""
    digits = key.lstrip("0")
    return len(digits), digits


def coerce_tree(value: Any, guide: Guide, lenient: bool, depth: int = 0) -> Any:
    """A parsed form structure (nested dicts and lists of strings) coerced along ``guide``."""
    if depth > 64:
        return value
    if isinstance(value, str):
        return coerce_scalar(value, guide.types, lenient)
    if isinstance(value, dict):
        if (
            "array" in guide.types
            and "object" not in guide.types
            and value
            and all(k.isascii() and k.isdigit() for k in value)
        ):
            ordered = [value[k] for k in sorted(value, key=index_order)]
            items = guide.items()
            return [coerce_tree(v, items, lenient, depth + 1) for v in ordered]
        return {k: coerce_tree(v, guide.prop(k), lenient, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        if "array" in guide.types or not guide.types:
            items = guide.items()
            return [coerce_tree(v, items, lenient, depth + 1) for v in value]
        # Repeated key where one value is due: the last one wins, as most servers do.
        return coerce_tree(value[-1], guide, lenient, depth + 1) if value else value
    return value
