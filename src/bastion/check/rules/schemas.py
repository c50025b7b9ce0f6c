"""The validation rules, applied to every schema a request can reach (bodies and parameters).

Each schema is visited once however many operations share it, and ``$ref`` cycles
(recursive schemas) end at the first repeat. A finding sits where the schema is
defined, so a shared component is reported once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from bastion.check.document import Document, Path_
from bastion.check.findings import FindingSink

_MAX_REF_HOPS = 32


def deref(doc: Document, node: Any, path: Path_) -> tuple[Any, Path_]:
    """Follow a chain of local ``$ref``s; a broken, external or circular one yields ``(None, path)``."""
    hops = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str):
        target = doc.resolve(node["$ref"])
        hops += 1
        if target is None or hops > _MAX_REF_HOPS:
            return None, path
        node, path = target
    return node, path


_TYPE_KEYS = ("type", "$ref", "allOf", "anyOf", "oneOf", "enum", "const", "properties")
_STRING_BOUNDS = ("maxLength", "enum", "const", "format", "pattern")
_COMPOSITIONS = ("allOf", "anyOf", "oneOf")


def _types(schema: dict[str, Any]) -> set[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return {declared}
    if isinstance(declared, list):
        return {t for t in declared if isinstance(t, str)}
    if "properties" in schema:
        return {"object"}
    if "items" in schema:
        return {"array"}
    return set()


class SchemaWalker:
    """Walks input schemas, reporting unbounded strings, integers, arrays and open objects."""

    def __init__(self, doc: Document, sink: FindingSink) -> None:
        self.doc = doc
        self.sink = sink
        self.visited: set[int] = set()
        self.active = any(
            sink.enabled(r) for r in ("string-bounded", "integer-bounded", "array-max-items", "object-closed")
        )

    def typed(self, schema: Any) -> bool:
        """Whether ``schema`` says what type its value has."""
        return isinstance(schema, dict) and any(key in schema for key in _TYPE_KEYS)

    def walk(self, schema: Any, path: Path_) -> None:
        """Check ``schema`` and everything it reaches."""
        if not self.active:
            return
        stack: list[tuple[Any, Path_, bool]] = [(schema, path, False)]
        while stack:
            node, where, in_all_of = stack.pop()
            node, where = deref(self.doc, node, where)
            if not isinstance(node, dict) or id(node) in self.visited:
                continue
            self.visited.add(id(node))
            if node.get("readOnly") is True:
                continue
            self._check(node, where, in_all_of)
            stack.extend(self._children(node, where))

    def _check(self, schema: dict[str, Any], path: Path_, in_all_of: bool) -> None:
        types = _types(schema)
        if "string" in types and not any(k in schema for k in _STRING_BOUNDS):
            self.sink.add("string-bounded", path, "string without maxLength, enum, format or pattern")
        if "integer" in types and "enum" not in schema and "const" not in schema:
            missing = [
                bound
                for bound, keys in (
                    ("minimum", ("minimum", "exclusiveMinimum")),
                    ("maximum", ("maximum", "exclusiveMaximum")),
                )
                if not any(k in schema for k in keys)
            ]
            if missing:
                self.sink.add("integer-bounded", path, f"integer without {' and '.join(missing)}")
        if "array" in types and "maxItems" not in schema:
            self.sink.add("array-max-items", path, "array without maxItems")
        if "object" in types and not in_all_of and not self._closed(schema):
            if "additionalProperties" not in schema and "unevaluatedProperties" not in schema:
                why = "additionalProperties is missing, so unknown fields are accepted"
            else:
                why = "additionalProperties is not false, so unknown fields are accepted"
            self.sink.add("object-closed", path, f"open object: {why}")

    @staticmethod
    def _closed(schema: dict[str, Any]) -> bool:
        if schema.get("unevaluatedProperties") is False:
            return True
        extra = schema.get("additionalProperties")
        # A non-empty schema for extra members is a typed map: its values are checked.
        return extra is False or (isinstance(extra, dict) and bool(extra))

    @staticmethod
    def _children(schema: dict[str, Any], path: Path_) -> Iterable[tuple[Any, Path_, bool]]:
        props = schema.get("properties")
        if isinstance(props, dict):
            for name, sub in props.items():
                yield sub, (*path, "properties", name), False
        for key in ("additionalProperties", "items", "unevaluatedProperties", "not", "contains"):
            sub = schema.get(key)
            if isinstance(sub, dict):
                yield sub, (*path, key), False
        for key in ("prefixItems", "items"):
            subs = schema.get(key)
            if isinstance(subs, list):
                for index, sub in enumerate(subs):
                    yield sub, (*path, key, index), False
        patterns = schema.get("patternProperties")
        if isinstance(patterns, dict):
            for name, sub in patterns.items():
                yield sub, (*path, "patternProperties", name), False
        for key in _COMPOSITIONS:
            subs = schema.get(key)
            if isinstance(subs, list):
                for index, sub in enumerate(subs):
                    # allOf members cannot close themselves without rejecting each other's members.
                    yield sub, (*path, key, index), key == "allOf"

    def missing_properties(self, schema: Any, names: Iterable[str]) -> list[str]:
        """Which of ``names`` the object ``schema`` (through $refs and allOf) does not declare."""
        declared: set[str] = set()
        seen: set[int] = set()
        stack = [schema]
        while stack:
            node = stack.pop()
            node, _ = deref(self.doc, node, ())
            if not isinstance(node, dict) or id(node) in seen:
                continue
            seen.add(id(node))
            props = node.get("properties")
            if isinstance(props, dict):
                declared.update(str(k) for k in props)
            all_of = node.get("allOf")
            if isinstance(all_of, list):
                stack.extend(all_of)
        return [name for name in names if name not in declared]
