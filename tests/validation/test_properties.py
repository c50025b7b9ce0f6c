"""Property tests: payloads generated from a schema pass; one mutation fails at exactly its place."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.validation.openapi import escape_token
from tests.validation.helpers import check_body, compile_spec, spec_with

ADDRESS = {
    "type": "object",
    "required": ["city"],
    "properties": {
        "city": {"type": "string", "minLength": 1, "maxLength": 10},
        "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
    },
}
PROFILE = {
    "type": "object",
    "additionalProperties": False,
    "required": ["email", "age", "name", "tags"],
    "properties": {
        "email": {"type": "string", "format": "email"},
        "age": {"type": "integer", "minimum": 18, "maximum": 120},
        "name": {"type": "string", "minLength": 1, "maxLength": 20},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "tags": {"type": "array", "maxItems": 3, "items": {"type": "string", "enum": ["a", "b", "c"]}},
        "address": {"$ref": "#/components/schemas/Address"},
        "history": {"type": "array", "maxItems": 3, "items": {"$ref": "#/components/schemas/Address"}},
        "active": {"type": "boolean"},
    },
}
SCHEMAS = {"Address": ADDRESS}
API = compile_spec(spec_with(body=PROFILE, schemas=SCHEMAS))


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return SCHEMAS[schema["$ref"].rsplit("/", 1)[1]]
    return schema


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values valid against the small schema subset these tests use."""
    schema = resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema["type"]
    if kind == "object":
        props = schema["properties"]
        required = {k: from_schema(props[k]) for k in schema.get("required", [])}
        optional = {k: from_schema(v) for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(required, optional=optional)
    if kind == "array":
        return st.lists(from_schema(schema["items"]), max_size=schema.get("maxItems", 5))
    if kind == "integer":
        return st.integers(schema.get("minimum"), schema.get("maximum"))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "boolean":
        return st.booleans()
    if schema.get("format") == "email":
        return st.from_regex(r"[a-z][a-z0-9]{0,9}@[a-z]{1,10}\.(com|org|dev)", fullmatch=True)
    if "pattern" in schema:
        return st.from_regex(r"[0-9]{5}", fullmatch=True)
    # C0 control characters other than tab, CR and LF are refused unless a schema allows them.
    controls = "".join(chr(c) for c in range(32) if chr(c) not in "\t\r\n")
    characters = st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters=controls)
    return st.text(characters, min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 20))


def places(
    value: Any, schema: dict[str, Any], path: tuple[str | int, ...] = ()
) -> list[tuple[tuple[Any, ...], Any]]:
    """Every (path, schema) of the value, to pick a place to mutate."""
    schema = resolve(schema)
    found = [(path, schema)]
    if isinstance(value, dict):
        for key, child in value.items():
            found.extend(places(child, schema["properties"][key], (*path, key)))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found.extend(places(child, schema["items"], (*path, index)))
    return found


def pointer(path: tuple[Any, ...]) -> str:
    return "".join("/" + escape_token(str(p)) for p in path)


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        value = value[part]
    return value


def replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    copy = orjson.loads(orjson.dumps(value))
    get(copy, path[:-1])[path[-1]] = new
    return copy


def wrong_type(schema: dict[str, Any]) -> Any:
    return 12345 if schema.get("type") == "string" or "enum" in schema else "wrong-type-value"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_schema(PROFILE))
def test_generated_payloads_are_accepted(payload: Any) -> None:
    assert check_body(API, payload) == []


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(from_schema(PROFILE), st.data())
def test_one_mutation_is_reported_at_exactly_its_place(payload: Any, data: st.DataObject) -> None:
    candidates = places(payload, PROFILE)
    path, schema = data.draw(st.sampled_from(candidates[1:] or candidates), label="place")
    objects = [(p, s) for p, s in candidates if s.get("type") == "object"]
    ranged = [(p, s) for p, s in candidates if "minimum" in s and s.get("type") == "integer"]
    mutation = data.draw(st.sampled_from(["type", "missing", "range", "unknown"]), label="mutation")
    if mutation == "missing":
        holders = [(p, s) for p, s in objects if s.get("required")]
        holder, holder_schema = data.draw(st.sampled_from(holders), label="holder")
        field = data.draw(st.sampled_from(holder_schema["required"]), label="field")
        mutated = replace(payload, holder, {k: v for k, v in get(payload, holder).items() if k != field})
        expected = ("REQUIRED", pointer((*holder, field)))
    elif mutation == "range" and ranged:
        at, bounds = data.draw(st.sampled_from(ranged), label="ranged")
        out = data.draw(st.sampled_from([bounds["minimum"] - 1, bounds["maximum"] + 1]), label="out")
        mutated, expected = replace(payload, at, out), ("OUT_OF_RANGE", pointer(at))
    elif mutation == "unknown":
        holder, _ = data.draw(st.sampled_from(objects), label="holder")
        extended = {**get(payload, holder), "zz_unknown": 1}
        mutated, expected = (
            replace(payload, holder, extended),
            ("NOT_ALLOWED", pointer((*holder, "zz_unknown"))),
        )
    else:
        mutated, expected = replace(payload, path, wrong_type(schema)), ("TYPE_MISMATCH", pointer(path))
    errors = check_body(API, mutated)
    assert [(e["code"], e["pointer"]) for e in errors] == [expected], (mutation, mutated)


# A marker no fixed text contains, so a value found in the errors was echoed, not a
# coincidence with a field name or a detail word ("pointe" is in "pointer").
SECRETISH = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=3, max_size=27).map(
    lambda text: "Zq9" + text
)


@settings(max_examples=100, deadline=None)
@given(SECRETISH, SECRETISH)
def test_submitted_values_are_never_echoed(secret: str, other: str) -> None:
    body = {"email": secret, "age": secret, "name": secret * 3, "tags": [other], "address": {"zip": other}}
    rendered = orjson.dumps(check_body(API, body)).decode()
    for value in (secret, other):
        assert value not in rendered
