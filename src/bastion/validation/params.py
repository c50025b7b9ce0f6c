"""Parameters: parsing every OpenAPI style and coercing strings to the declared types.

Everything here is sans-I/O: strings in, Python values out. The values then go
through the operation's compiled schema, which reports what is still wrong; a
string that cannot be coerced is left a string, so the schema says "must be an
integer" at the right place.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

import orjson

from bastion import exactjson
from bastion.validation.coerce import Guide, coerce_scalar, coerce_tree, guide_at, leaf_text, relax_text


def split_bracket_key(key: str) -> list[str]:
    """``a[b][0]`` as ``["a", "b", "0"]``; ``a[]`` as ``["a", ""]``."""
    if "[" not in key or not key.endswith("]"):
        return [key]
    head, _, rest = key.partition("[")
    return [head, *rest[:-1].split("][")]


def nest_pairs(pairs: list[tuple[str, str]], max_depth: int) -> dict[str, Any]:
    """Form pairs as a nested structure: bracket keys nest, repeated keys make lists."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_bracket_key(key)
        _insert(root, parts if len(parts) <= max_depth else [key], value)
    return root


def _insert(node: dict[str, Any], parts: list[str], value: str) -> None:
    head, rest = parts[0], parts[1:]
    if not rest:
        existing = node.get(head)
        if existing is None:
            node[head] = value
        elif isinstance(existing, list):
            existing.append(value)
        else:
            node[head] = [existing, value]
        return
    if rest[0] == "":
        items = node.get(head)
        if not isinstance(items, list):
            items = [] if items is None else [items]
            node[head] = items
        if len(rest) == 1:
            items.append(value)
            return
        # ``a[][x]=1&a[][y]=2&a[][x]=3``: a member seen again starts the next item.
        if not items or not isinstance(items[-1], dict) or rest[1] in items[-1]:
            items.append({})
        _insert(items[-1], rest[1:], value)
        return
    child = node.get(head)
    if not isinstance(child, dict):
        child = {}
        node[head] = child
    _insert(child, rest, value)


def parse_query(raw: bytes | str, errors: str = "replace") -> list[tuple[str, str]]:
    """A query string (or a form body) as decoded ``(key, value)`` pairs, in order.

    ``errors`` says what a percent-escape that is not UTF-8 becomes: ``replace``
    (U+FFFD, as web frameworks read a query) or ``strict`` (``UnicodeDecodeError``).
    """
    if not raw:
        return []
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        if not part:
            continue
        key, _, value = part.partition("=")
        if "%" in key or "+" in key:
            key = unquote_plus(key, errors=errors)
        if "%" in value or "+" in value:
            value = unquote_plus(value, errors=errors)
        pairs.append((key, value))
    return pairs


def cookie_pairs(raw: str) -> list[tuple[str, str]]:
    """A ``Cookie`` header's ``(name, value)`` pairs in order, values as sent (quotes removed).

    Values are not percent-decoded: frameworks disagree on that (Express decodes,
    Starlette, aiohttp and Werkzeug do not), so a value whose decoding would change it is
    refused by the operation check instead of read one way here.
    """
    pairs: list[tuple[str, str]] = []
    for part in raw.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            pairs.append((name, value))
    return pairs


def repeated_field(pairs: list[tuple[str, str]], guide: Guide) -> str | None:
    """A form field that is not an array but is given more than once (also as ``name[...]``).

    Starlette and FastAPI take the last value, aiohttp and Werkzeug the first, Express an
    array: such a body has no one reading. ``items[0][sku]``-style keys of an array or an
    object are not repeats of each other.
    """
    plain: set[str] = set()
    bracketed: set[str] = set()
    for key, _ in pairs:
        head, bracket, _ = key.partition("[")
        if not bracket:
            if key in plain and "array" not in guide.prop(key).types:
                return key
            plain.add(key)
        else:
            bracketed.add(head)
    both = plain & bracketed
    return min(both) if both else None


@dataclass(slots=True)
class Parameter:
    """One compiled parameter: where it is, its style, and how to coerce it."""

    name: str
    location: str
    required: bool
    style: str
    explode: bool
    guide: Guide
    #: The parameter is JSON text (``content: application/json``).
    json_content: bool = False
    #: Its value may hold C0 control characters (``x-bastion-allow-control-characters: true``
    #: on the parameter, or on its schema).
    allow_control: bool = False
    #: The parameter's own ``x-bastion-lenient``: for its value, or each item of an array.
    lenient: frozenset[str] = frozenset()
    shape: str = field(init=False)
    #: Whether a coercion is declared for its value or a part of it (so the request is rewritten).
    relaxes: bool = field(init=False)

    def __post_init__(self) -> None:
        self.allow_control = self.allow_control or self.guide.allow_control
        types = self.guide.types
        if "array" in types and "object" not in types:
            self.shape = "array"
        elif "object" in types and "array" not in types:
            self.shape = "object"
        else:
            self.shape = "scalar"
        if self.lenient:
            self.guide.add_lenient(self.lenient)
            if self.shape == "array":
                self.guide.items().add_lenient(self.lenient)
        self.guide.warm(3)
        self.relaxes = self.guide.reaches_lenient and not self.json_content

    def relaxed_text(self, text: str, separator: str = ",") -> str:
        """The text of the whole value (not exploded into keys) after the declared coercions."""
        if self.shape == "scalar":
            return relax_text(text, self.guide)
        if not text:
            return text
        parts = text.split(separator)
        if self.shape == "array":
            items = self.guide.items()
            if self.location == "header":
                parts = [p.strip() for p in parts]  # joined header lines carry spaces
            new = [relax_text(p, items) for p in parts]
            changed = new != parts
        elif self.explode:
            new = []
            for part in parts:
                name, equals, value = part.partition("=")
                new.append(f"{name}={relax_text(value, self.guide.prop(name))}" if equals else part)
            changed = new != parts
        else:
            new = [relax_text(p, self.guide.prop(parts[i - 1])) if i % 2 else p for i, p in enumerate(parts)]
            changed = new != parts
        if not changed:
            return text
        return (", " if self.location == "header" else separator).join(new)

    def query_text(self, key: str, value: str) -> str | None:
        """The text of query pair ``key=value`` after the declared coercions, if it belongs here."""
        if self.style == "deepObject":
            if key.startswith(self.name + "["):
                return leaf_text(value, guide_at(self.guide, split_bracket_key(key)[1:]))
            return None
        if self.shape == "object" and self.explode and self.style == "form":
            return relax_text(value, self.guide.prop(key)) if key in self.guide.property_names() else None
        if key != self.name:
            return None
        if self.shape == "array" and self.explode and self.style == "form":
            return relax_text(value, self.guide.items())
        separator = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(self.style, ",")
        return self.relaxed_text(value, separator)

    def repeated_in(self, query: Mapping[str, list[str]], heads: set[str]) -> bool:
        """Whether the query gives this parameter more than one reading.

        A value declared single that comes twice, or that comes also as ``name[...]``
        (which Express's ``qs`` folds into the same name), is read differently by
        different frameworks. deepObject parameters are bracketed by definition: for
        them the plain name besides the bracketed keys is the second reading. The
        members of an exploded form object are plain keys, read the same way.
        """
        if self.style == "deepObject":
            return self.name in heads and self.name in query
        if self.name in heads:
            return True
        if self.shape == "object" and self.explode and self.style == "form":
            return any(len(query.get(k, ())) > 1 or k in heads for k in self.guide.property_names())
        many = len(query.get(self.name, ())) > 1
        return many and not (self.shape == "array" and self.explode and self.style == "form")

    def claims(self, key: str) -> bool:
        """Whether query key ``key`` belongs to this parameter (for unknown-parameter checks)."""
        if key == self.name:
            return True
        if self.style == "deepObject":
            return key.startswith(self.name + "[")
        if self.shape == "object" and self.explode and self.style == "form":
            return key in self.guide.property_names() or self.guide.additional
        return False

    def _scalar(self, text: str) -> Any:
        if self.json_content:
            try:
                return exactjson.loads(text)
            except orjson.JSONDecodeError:
                return text
        return coerce_scalar(text, self.guide)

    def _array(self, items: list[str]) -> list[Any]:
        guide = self.guide.items()
        return [coerce_scalar(i, guide) for i in items]

    def _object(self, pairs: list[tuple[str, str]]) -> dict[str, Any]:
        return {k: coerce_scalar(v, self.guide.prop(k)) for k, v in pairs}

    def _split_object(self, text: str, separator: str) -> dict[str, Any]:
        if self.explode:
            pairs = [p.partition("=")[::2] for p in text.split(separator) if p]
        else:
            parts = text.split(",")
            pairs = list(zip(parts[::2], parts[1::2], strict=False))
        return self._object([(str(k), str(v)) for k, v in pairs])

    def from_text(self, text: str) -> Any:
        """The value of a ``simple``-style parameter (path, header) from its text."""
        if self.json_content or self.shape == "scalar":
            return self._scalar(text)
        if self.shape == "array":
            items = text.split(",") if text else []
            if self.location == "header":
                items = [item.strip() for item in items]  # joined header lines carry spaces
            return self._array(items)
        return self._split_object(text, ",")

    def from_path(self, text: str) -> Any:
        """The value of a path parameter, per its style (simple, label, matrix)."""
        if self.style == "label":
            text = text[1:] if text.startswith(".") else text
            if self.shape == "array":
                return self._array(text.split("." if self.explode else ",") if text else [])
            if self.shape == "object":
                return self._split_object(text, ".")
            return self._scalar(text)
        if self.style == "matrix":
            prefix = f";{self.name}="
            if self.shape == "array" and self.explode:
                return self._array([p.partition("=")[2] for p in text.split(";") if p])
            if self.shape == "object" and self.explode:
                return self._split_object(text.lstrip(";"), ";")
            text = text[len(prefix) :] if text.startswith(prefix) else text.lstrip(";")
        return self.from_text(text)

    def from_query(self, query: Mapping[str, list[str]], max_depth: int) -> Any:
        """The value of a query parameter from the grouped query, or ``_MISSING``."""
        if self.json_content:
            values = query.get(self.name)
            return _MISSING if values is None else self._scalar(values[-1])
        if self.style == "deepObject":
            prefix = self.name + "["
            pairs = [(k, v) for k, values in query.items() if k.startswith(prefix) for v in values]
            if not pairs:
                # The plain name alone is what qs and the like hand the application: a string,
                # which the schema reports, not an absent parameter.
                values = query.get(self.name)
                return _MISSING if values is None else values[-1]
            nested = nest_pairs(pairs, max_depth).get(self.name, {})
            return coerce_tree(nested, self.guide)
        if self.shape == "object" and self.explode and self.style == "form":
            names = self.guide.property_names()
            pairs = [(k, query[k][-1]) for k in names if k in query]
            return self._object(pairs) if pairs else _MISSING
        values = query.get(self.name)
        if values is None:
            return _MISSING
        if self.shape == "array":
            if self.explode and self.style == "form":
                return self._array(values)
            separator = {"spaceDelimited": " ", "pipeDelimited": "|"}.get(self.style, ",")
            text = values[-1]
            return self._array(text.split(separator) if text else [])
        if self.shape == "object":
            return self._split_object(values[-1], ",")
        return self._scalar(values[-1])


class _Missing:
    """The marker for a parameter the request does not carry."""

    __slots__ = ()


_MISSING: Any = _Missing()


def is_missing(value: Any) -> bool:
    """Whether ``value`` is the marker for an absent parameter."""
    return value is _MISSING


def group_query(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    """Query pairs grouped by key, values in order."""
    grouped: dict[str, list[str]] = {}
    for key, value in pairs:
        values = grouped.get(key)
        if values is None:
            grouped[key] = [value]
        else:
            values.append(value)
    return grouped
