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

from bastion import exactjson
from bastion.validation.openapi import Description, escape_token

_INT_RE = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER_RE = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")
_COMPOSITION = ("allOf", "anyOf", "oneOf")
#: The schema (or parameter) extension that lets strings hold C0 control characters.
ALLOW_CONTROL = "x-bastion-allow-control-characters"
#: The schema (or parameter) extension that lists the coercions accepted at its place.
LENIENT = "x-bastion-lenient"
BOOLEAN_WORDS = "boolean-words"
NUMERIC_STRINGS = "numeric-strings"
TRIM = "trim"
CASE_INSENSITIVE_ENUM = "case-insensitive-enum"
#: Every coercion ``x-bastion-lenient`` may name.
COERCIONS = (BOOLEAN_WORDS, CASE_INSENSITIVE_ENUM, NUMERIC_STRINGS, TRIM)
_TRUE_WORDS = frozenset({"true", "yes", "on", "1"})
_FALSE_WORDS = frozenset({"false", "no", "off", "0"})
#: What ``trim`` removes: the whitespace of JSON and of HTTP fields, nothing else.
_WHITESPACE = " \t\r\n"


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
        "_reaches",
        "additional",
        "allow_control",
        "enum_spelling",
        "lenient",
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
        lenient: set[str] = set()
        for node, _ in flat:
            declared = node.get(LENIENT)
            if isinstance(declared, list):
                lenient.update(str(name) for name in declared)
        #: The coercions declared here (``x-bastion-lenient``), not those of the levels below.
        self.lenient = frozenset(lenient)
        #: With ``case-insensitive-enum``: each string enum value by its case-folded spelling
        #: (a fold shared by two values is left out: it names neither).
        self.enum_spelling: dict[str, str] = {}
        if CASE_INSENSITIVE_ENUM in lenient:
            self.enum_spelling = _enum_spellings(flat)
        self._reaches: bool | None = None
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

    def add_lenient(self, names: frozenset[str]) -> None:
        """Declare more coercions here (a parameter's own ``x-bastion-lenient``)."""
        if names - self.lenient:
            self.lenient = self.lenient | names
            if CASE_INSENSITIVE_ENUM in names:
                self.enum_spelling = _enum_spellings(self._nodes)
            self._reaches = None

    @property
    def reaches_lenient(self) -> bool:
        """Whether a coercion is declared here or at any level below (so a walk must go down)."""
        if self._reaches is None:
            self._reaches = bool(self.lenient) or _declares_below(self._description, self._nodes)
        return self._reaches

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


def _enum_spellings(nodes: list[tuple[Mapping[str, Any], str]]) -> dict[str, str]:
    spellings: dict[str, str] = {}
    shared: set[str] = set()
    for node, _ in nodes:
        for value in node.get("enum") or ():
            if isinstance(value, str):
                fold = value.casefold()
                if spellings.setdefault(fold, value) != value:
                    shared.add(fold)
    for fold in shared:
        del spellings[fold]
    return spellings


_BELOW = ("items", "additionalProperties")


def _declares_below(description: Description, nodes: list[tuple[Mapping[str, Any], str]]) -> bool:
    """Whether a schema the guides below ``nodes`` read declares ``x-bastion-lenient``.

    Follows what :class:`Guide` follows (``properties``, ``additionalProperties``,
    ``items``, compositions, ``$ref``), each schema once, so a recursive one ends.
    """
    seen: set[int] = set()
    stack: list[tuple[Any, str]] = []
    for node, at in nodes:
        stack.extend(_children(node, at))
    while stack:
        node, at = stack.pop()
        node, at = description.resolve(node, at)
        if not isinstance(node, Mapping) or id(node) in seen:
            continue
        seen.add(id(node))
        if node.get(LENIENT):
            return True
        stack.extend(_children(node, at))
        for key in _COMPOSITION:
            members = node.get(key)
            if isinstance(members, list):
                stack.extend((m, f"{at}/{key}/{i}") for i, m in enumerate(members))
    return False


def _children(node: Mapping[str, Any], at: str) -> list[tuple[Any, str]]:
    found = [(node[key], f"{at}/{key}") for key in _BELOW if isinstance(node.get(key), Mapping)]
    properties = node.get("properties")
    if isinstance(properties, Mapping):
        found.extend((v, f"{at}/properties/{escape_token(str(k))}") for k, v in properties.items())
    return found


def relax_text(text: str, guide: Guide) -> str:
    """``text`` after the coercions declared at ``guide`` that keep it text.

    ``trim`` removes leading and trailing whitespace; ``case-insensitive-enum`` gives a
    string that names an enum value in another case the enum's spelling;
    ``boolean-words`` turns a boolean word into ``true`` or ``false`` where a boolean (and
    no string) is declared. Anything else is returned as it is.
    """
    lenient = guide.lenient
    if not lenient:
        return text
    if TRIM in lenient:
        text = text.strip(_WHITESPACE)
    spelling = guide.enum_spelling
    if spelling:
        text = spelling.get(text.casefold(), text)
    if BOOLEAN_WORDS in lenient:
        types = guide.types
        if "boolean" in types and "string" not in types:
            word = text.lower()
            numeric = "integer" in types or "number" in types
            if word in _TRUE_WORDS and not (numeric and word == "1"):
                return "true"
            if word in _FALSE_WORDS and not (numeric and word == "0"):
                return "false"
    return text


def json_coercion(text: str, guide: Guide) -> tuple[Any, bytes] | None:
    """A JSON string value after the coercions declared at ``guide``, with its JSON token;
    ``None`` when none changes it.

    Besides :func:`relax_text`: with ``boolean-words``, a boolean word is a boolean; with
    ``numeric-strings``, a string in JSON number syntax is that number where an integer
    or number (and no string) is declared, and its token is its own digits, so the
    number keeps its exact value. An integer needs integer syntax (``"4.0"`` stays a
    string), a number must be finite.
    """
    relaxed = relax_text(text, guide)
    types = guide.types
    if types and "string" not in types:
        lenient = guide.lenient
        if BOOLEAN_WORDS in lenient and "boolean" in types and relaxed in ("true", "false"):
            return relaxed == "true", relaxed.encode()
        if NUMERIC_STRINGS in lenient:
            number = _number(relaxed, types)
            if number is not None:
                return number, relaxed.encode()
    if relaxed == text:
        return None
    return relaxed, orjson.dumps(relaxed)


def _number(text: str, types: frozenset[str]) -> int | float | None:
    if ("integer" in types or "number" in types) and _INT_RE.fullmatch(text):
        try:
            return int(text)
        except ValueError:  # past Python's digit limit for int(): stays a string
            return None
    if "number" in types and _NUMBER_RE.fullmatch(text):
        number = float(text)
        if math.isfinite(number):
            return number
    return None


def guide_at(guide: Guide, parts: list[str]) -> Guide:
    """The guide for a form or deepObject key's parts below ``guide`` (``items``, ``0``, ``sku``)."""
    for part in parts:
        types = guide.types
        indexed = part == "" or (part.isascii() and part.isdigit())
        listed = indexed and "array" in types and "object" not in types
        guide = guide.items() if listed else guide.prop(part)
    return guide


def leaf_text(text: str, guide: Guide) -> str:
    """A form or query value's text after the coercions declared where it goes."""
    if "array" in guide.types and "object" not in guide.types:
        guide = guide.items()  # a repeated key (``tag=a&tag=b``) gives one item each
    return relax_text(text, guide) if guide.lenient else text


def coerce_scalar(text: str, guide: Guide, relax: bool = True) -> Any:
    """``text`` (after the coercions declared at ``guide``, unless not ``relax``) as the first
    declared scalar type it fits; unchanged when none fits."""
    if relax and guide.lenient:
        text = relax_text(text, guide)
    types = guide.types
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
        if text == "true":
            return True
        if text == "false":
            return False
    if "null" in types and text in ("", "null") and "string" not in types:
        return None
    if ("object" in types or "array" in types) and text[:1] in ("{", "["):
        try:
            return exactjson.loads(text)
        except orjson.JSONDecodeError:
            return text
    return text


def index_order(key: str) -> tuple[int, str]:
    """The numeric order of a string of ASCII digits, without ``int()`` (which refuses very
    long ones): by length once leading zeros are gone, then by text."""
    digits = key.lstrip("0")
    return len(digits), digits


def coerce_tree(value: Any, guide: Guide, depth: int = 0, relax: bool = True) -> Any:
    """A parsed form structure (nested dicts and lists of strings) coerced along ``guide``
    (with the declared coercions, unless not ``relax``)."""
    if depth > 64:
        return value
    if isinstance(value, str):
        return coerce_scalar(value, guide, relax)
    if isinstance(value, dict):
        if (
            "array" in guide.types
            and "object" not in guide.types
            and value
            and all(k.isascii() and k.isdigit() for k in value)
        ):
            ordered = [value[k] for k in sorted(value, key=index_order)]
            items = guide.items()
            return [coerce_tree(v, items, depth + 1, relax) for v in ordered]
        return {k: coerce_tree(v, guide.prop(k), depth + 1, relax) for k, v in value.items()}
    if isinstance(value, list):
        if "array" in guide.types or not guide.types:
            items = guide.items()
            return [coerce_tree(v, items, depth + 1, relax) for v in value]
        # Repeated key where one value is due: the last one wins, as most servers do.
        return coerce_tree(value[-1], guide, depth + 1, relax) if value else value
    return value
