"""Request bodies derived from schemas, without I/O: one valid instance, and invalid variants.

Each invalid variant breaks one rule and names the field it breaks, so the probe
can check that the API's 4xx names that field.
"""

from __future__ import annotations

import copy
import importlib
import re
from dataclasses import dataclass
from typing import Any

from bastion.check.document import Document

_FORMAT_SAMPLES = {
    "email": "probe@example.com",
    "uuid": "6f1c1f8e-4d3a-4c1e-9a57-1b2b3c4d5e6f",
    "date": "2024-01-02",
    "date-time": "2024-01-02T03:04:05Z",
    "uri": "https://example.com/probe",
    "url": "https://example.com/probe",
    "hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
}
UNKNOWN_FIELD = "bastion_probe_unknown_field"


@dataclass(frozen=True, slots=True)
class Variant:
    """An invalid body: what it breaks (``kind``), in which field, and the body itself."""

    kind: str
    field: str
    body: Any


class SchemaSampler:
    """Builds valid and invalid instances of schemas in one description."""

    def __init__(self, doc: Document | None) -> None:
        self.doc = doc

    def deref(self, schema: Any) -> dict[str, Any]:
        """``schema`` with ``$ref``s followed and ``allOf`` members merged (shallowly)."""
        seen = 0
        while isinstance(schema, dict) and isinstance(schema.get("$ref"), str) and self.doc is not None:
            target = self.doc.resolve(schema["$ref"])
            seen += 1
            if target is None or seen > 32:
                return {}
            schema = target[0]
        if not isinstance(schema, dict):
            return {}
        if isinstance(schema.get("allOf"), list):
            merged: dict[str, Any] = {k: v for k, v in schema.items() if k != "allOf"}
            props: dict[str, Any] = dict(merged.get("properties", {}))
            required: list[str] = list(merged.get("required", []))
            for member in schema["allOf"]:
                part = self.deref(member)
                props.update(part.get("properties", {}))
                required.extend(part.get("required", []))
                for key, value in part.items():
                    merged.setdefault(key, value)
            merged["properties"] = props
            merged["required"] = required
            return merged
        return schema

    def sample(self, schema: Any, depth: int = 0) -> Any:
        """A value that ``schema`` accepts (best effort: examples first, then the constraints)."""
        s = self.deref(schema)
        for key in ("example", "default", "const"):
            if key in s:
                return copy.deepcopy(s[key])
        if isinstance(s.get("examples"), list) and s["examples"]:
            return copy.deepcopy(s["examples"][0])
        if isinstance(s.get("enum"), list) and s["enum"]:
            return s["enum"][0]
        for key in ("oneOf", "anyOf"):
            if isinstance(s.get(key), list) and s[key]:
                return self.sample(s[key][0], depth + 1)
        kind = _type_of(s)
        if depth > 8:
            return None
        if kind == "object":
            props = s.get("properties", {}) if isinstance(s.get("properties"), dict) else {}
            required = [r for r in s.get("required", []) if r in props] or []
            return {name: self.sample(props[name], depth + 1) for name in required or list(props)[:3]}
        if kind == "array":
            count = max(1, int(s.get("minItems", 1)))
            return [self.sample(s.get("items", {}), depth + 1) for _ in range(min(count, 3))]
        if kind == "integer":
            return int(_in_range(s, 1))
        if kind == "number":
            return float(_in_range(s, 1))
        if kind == "boolean":
            return True
        if kind == "null":
            return None
        fmt = s.get("format")
        if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
            return _FORMAT_SAMPLES[fmt]
        pattern = s.get("pattern")
        if isinstance(pattern, str):
            matched = sample_pattern(pattern)
            if matched is not None:
                return matched
        low = int(s.get("minLength", 1))
        high = int(s.get("maxLength", max(low, 8)))
        return ("probe" * 4)[: max(low, min(high, 5))].ljust(low, "x")

    def variants(self, schema: Any) -> list[Variant]:
        """Invalid bodies: a wrong type, a missing required field, out of range, an unknown field."""
        s = self.deref(schema)
        if _type_of(s) != "object":
            return []
        valid = self.sample(s)
        if not isinstance(valid, dict):
            return []
        props = s.get("properties", {}) if isinstance(s.get("properties"), dict) else {}
        required = [r for r in s.get("required", []) if r in props]
        found: list[Variant] = []
        target = required[0] if required else next(iter(props), None)
        if target is not None:
            body = dict(valid)
            body[target] = _wrong_type(self.deref(props[target]))
            found.append(Variant("wrong-type", target, body))
        if required:
            body = dict(valid)
            body.pop(required[0], None)
            found.append(Variant("missing-required", required[0], body))
        for name, sub in props.items():
            bad = _out_of_range(self.deref(sub))
            if bad is not None:
                body = dict(valid)
                body[name] = bad
                found.append(Variant("out-of-range", name, body))
                break
        if s.get("additionalProperties") is False or s.get("unevaluatedProperties") is False:
            body = dict(valid)
            body[UNKNOWN_FIELD] = "x"
            found.append(Variant("unknown-field", UNKNOWN_FIELD, body))
        return found

    def changed(self, schema: Any, valid: Any) -> Any:
        """Another valid body: ``valid`` with one field changed, for key-reuse checks."""
        s = self.deref(schema)
        if not isinstance(valid, dict):
            return valid
        props = s.get("properties", {}) if isinstance(s.get("properties"), dict) else {}
        for name, value in valid.items():
            sub = self.deref(props.get(name, {}))
            if isinstance(sub.get("enum"), list) and len(sub["enum"]) > 1:
                other = next(v for v in sub["enum"] if v != value)
                return {**valid, name: other}
            if isinstance(value, bool):
                return {**valid, name: not value}
            if isinstance(value, int):
                bumped = value + 1 if _fits(sub, value + 1) else value - 1
                if _fits(sub, bumped):
                    return {**valid, name: bumped}
            if isinstance(value, str) and "enum" not in sub and "format" not in sub and "pattern" not in sub:
                return {**valid, name: (value[:-1] + ("y" if value[-1:] != "y" else "z")) if value else "z"}
        return {**valid, "bastion_probe_changed": True}


def sample_pattern(pattern: str) -> str | None:
    """A short string that ``pattern`` matches, or ``None`` when the pattern is beyond this sketch."""
    try:
        parsed = importlib.import_module("re._parser").parse(pattern)
        text = "".join(_emit(parsed.data if hasattr(parsed, "data") else parsed))
    except (re.error, ValueError, TypeError, AttributeError, RecursionError):
        return None
    return text if re.search(pattern, text) else None


def _emit(items: Any) -> list[str]:
    out: list[str] = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_class_member(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.extend(_emit(sub) * low)
        elif name == "SUBPATTERN":
            out.extend(_emit(arg[-1]))
        elif name == "BRANCH":
            out.extend(_emit(arg[1][0]))
        elif name == "CATEGORY":
            out.append(_CATEGORY.get(str(arg), "a"))
        elif name in ("AT", "ASSERT", "ASSERT_NOT"):
            continue
        else:
            raise ValueError(name)
    return out


_CATEGORY = {"CATEGORY_DIGIT": "0", "CATEGORY_WORD": "a", "CATEGORY_SPACE": " ", "CATEGORY_NOT_DIGIT": "a"}


def _class_member(items: Any) -> str:
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            return chr(arg)
        if name == "RANGE":
            return chr(arg[0])
        if name == "CATEGORY":
            return _CATEGORY.get(str(arg), "a")
        if name == "NEGATE":
            raise ValueError(name)
    raise ValueError("empty class")


def _type_of(schema: dict[str, Any]) -> str | None:
    declared = schema.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), None)
    if isinstance(declared, str):
        return declared
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return None


def _in_range(schema: dict[str, Any], wanted: float) -> float:
    low = schema.get("minimum", schema.get("exclusiveMinimum"))
    high = schema.get("maximum", schema.get("exclusiveMaximum"))
    value = wanted
    if isinstance(low, int | float) and not isinstance(low, bool) and value <= low:
        value = low + (1 if "exclusiveMinimum" in schema and "minimum" not in schema else 0)
    if isinstance(high, int | float) and not isinstance(high, bool) and value >= high:
        value = high - (1 if "exclusiveMaximum" in schema and "maximum" not in schema else 0)
    return value


def _fits(schema: dict[str, Any], value: int) -> bool:
    low, high = schema.get("minimum"), schema.get("maximum")
    return (not isinstance(low, int | float) or value >= low) and (
        not isinstance(high, int | float) or value <= high
    )


def _wrong_type(schema: dict[str, Any]) -> Any:
    kind = _type_of(schema)
    if kind in ("integer", "number", "boolean"):
        return "not-a-number"
    if kind == "string":
        return {"not": "a string"}
    return 12345


def _out_of_range(schema: dict[str, Any]) -> Any:
    kind = _type_of(schema)
    if kind in ("integer", "number"):
        if isinstance(schema.get("maximum"), int | float):
            return schema["maximum"] + 1
        if isinstance(schema.get("minimum"), int | float):
            return schema["minimum"] - 1
    if kind == "string" and isinstance(schema.get("maxLength"), int) and schema["maxLength"] < 100_000:
        return "x" * (schema["maxLength"] + 1)
    return None
