"""OpenAPI 3.0 versus 3.1 schema semantics, formats, unknown fields and linear-time patterns."""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.validation.helpers import check_body, compile_spec, spec_with


def codes(errors: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["code"], e["pointer"]) for e in errors]


def test_30_nullable() -> None:
    body = {
        "type": "object",
        "properties": {
            "note": {"type": "string", "nullable": True},
            "size": {"type": "string", "enum": ["s", "m"], "nullable": True},
            "strict": {"type": "string"},
        },
    }
    api = compile_spec(spec_with(version="3.0.3", body=body))
    assert check_body(api, {"note": None, "size": None}) == []
    assert codes(check_body(api, {"strict": None})) == [("TYPE_MISMATCH", "/strict")]
    # In 3.1, nullable is not a keyword: null needs a type list.
    api31 = compile_spec(spec_with(version="3.1.0", body=body))
    assert codes(check_body(api31, {"note": None})) == [("TYPE_MISMATCH", "/note")]


def test_30_nullable_on_a_composition() -> None:
    schemas = {"Address": {"type": "object", "properties": {"city": {"type": "string"}}}}
    body = {
        "type": "object",
        "properties": {"address": {"allOf": [{"$ref": "#/components/schemas/Address"}], "nullable": True}},
    }
    api = compile_spec(spec_with(version="3.0.3", body=body, schemas=schemas))
    assert check_body(api, {"address": None}) == []
    assert check_body(api, {"address": {"city": "Paris"}}) == []
    assert codes(check_body(api, {"address": {"town": "Paris"}})) == [("NOT_ALLOWED", "/address/town")]


def test_31_type_lists_with_null() -> None:
    body = {"type": "object", "properties": {"note": {"type": ["string", "null"]}}}
    api = compile_spec(spec_with(version="3.1.0", body=body))
    assert check_body(api, {"note": None}) == []
    assert check_body(api, {"note": 5})[0]["detail"] == "must be a string or null"


def test_30_boolean_exclusive_bounds() -> None:
    body = {
        "type": "object",
        "properties": {
            "open": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "maximum": 10,
                "exclusiveMaximum": True,
            },
            "closed": {"type": "number", "minimum": 0, "exclusiveMinimum": False},
        },
    }
    api = compile_spec(spec_with(version="3.0.3", body=body))
    assert check_body(api, {"open": 5, "closed": 0}) == []
    low = check_body(api, {"open": 0})
    assert low == [
        {
            "code": "OUT_OF_RANGE",
            "in": "body",
            "pointer": "/open",
            "field": "open",
            "detail": "must be greater than 0",
        }
    ]
    assert check_body(api, {"open": 10})[0]["detail"] == "must be less than 10"


def test_31_numeric_exclusive_bounds() -> None:
    body = {"type": "object", "properties": {"n": {"type": "integer", "exclusiveMinimum": 1}}}
    api = compile_spec(spec_with(version="3.1.0", body=body))
    assert check_body(api, {"n": 2}) == []
    assert check_body(api, {"n": 1})[0]["detail"] == "must be greater than 1"


@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_read_only_is_neither_required_nor_accepted_in_requests(version: str) -> None:
    schemas = {
        "User": {
            "type": "object",
            "required": ["id", "email"],
            "properties": {
                "id": {"type": "integer", "readOnly": True},
                "email": {"type": "string"},
                "password": {"type": "string", "writeOnly": True},
                "created": {"$ref": "#/components/schemas/Stamp"},
            },
        },
        "Stamp": {"type": "string", "format": "date-time", "readOnly": True},
    }
    api = compile_spec(
        spec_with(version=version, body={"$ref": "#/components/schemas/User"}, schemas=schemas)
    )
    assert check_body(api, {"email": "a", "password": "secret"}) == []
    sent = check_body(api, {"id": 5, "email": "a", "created": "2024-01-01T00:00:00Z"})
    assert codes(sent) == [("NOT_ALLOWED", "/created"), ("NOT_ALLOWED", "/id")]


def test_discriminator_points_into_the_named_branch() -> None:
    schemas = {
        "Cat": {
            "type": "object",
            "required": ["kind", "lives"],
            "properties": {"kind": {"type": "string"}, "lives": {"type": "integer", "maximum": 9}},
        },
        "Dog": {
            "type": "object",
            "required": ["kind", "bark"],
            "properties": {"kind": {"type": "string"}, "bark": {"type": "boolean"}},
        },
        "Pet": {
            "oneOf": [{"$ref": "#/components/schemas/Cat"}, {"$ref": "#/components/schemas/Dog"}],
            "discriminator": {"propertyName": "kind", "mapping": {"dog": "#/components/schemas/Dog"}},
        },
    }
    api = compile_spec(spec_with(version="3.0.3", body={"$ref": "#/components/schemas/Pet"}, schemas=schemas))
    assert check_body(api, {"kind": "Cat", "lives": 7}) == []
    assert check_body(api, {"kind": "dog", "bark": True}) == []
    assert codes(check_body(api, {"kind": "Cat", "lives": 12})) == [("OUT_OF_RANGE", "/lives")]
    assert codes(check_body(api, {"kind": "dog"})) == [("REQUIRED", "/bark")]
    # A member of the other branch is an unknown field for this one.
    assert codes(check_body(api, {"kind": "dog", "bark": True, "lives": 1})) == [("NOT_ALLOWED", "/lives")]
    wrong = check_body(api, {"kind": "fish"})
    assert codes(wrong) == [("ENUM_MISMATCH", "/kind")]
    assert wrong[0]["detail"] == "must be one of: dog, Cat"
    # Without the discriminator no branch applies, so its members are not known either.
    assert codes(check_body(api, {"lives": 1})) == [("REQUIRED", "/kind"), ("NOT_ALLOWED", "/lives")]


def test_unknown_fields_with_all_of_composition() -> None:
    schemas = {
        "Base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "Named": {
            "allOf": [
                {"$ref": "#/components/schemas/Base"},
                {"type": "object", "properties": {"name": {"type": "string"}}},
            ]
        },
    }
    api = compile_spec(spec_with(body={"$ref": "#/components/schemas/Named"}, schemas=schemas))
    # Each member's properties are known to the composition, not rejected by the other member.
    assert check_body(api, {"id": "1", "name": "n"}) == []
    assert codes(check_body(api, {"id": "1", "name": "n", "extra": 1})) == [("NOT_ALLOWED", "/extra")]


def test_free_form_objects_and_explicit_additional_properties_stay_open() -> None:
    body = {
        "type": "object",
        "properties": {
            "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
            "anything": {"type": "object"},
        },
    }
    api = compile_spec(spec_with(body=body))
    assert check_body(api, {"metadata": {"a": "b"}, "anything": {"x": [1]}}) == []
    assert codes(check_body(api, {"metadata": {"a": 1}})) == [("TYPE_MISMATCH", "/metadata/a")]


def test_schema_level_unknown_fields_allow() -> None:
    body = {
        "type": "object",
        "properties": {
            "open": {"type": "object", "x-bastion-unknown-fields": "allow", "properties": {"a": {}}}
        },
    }
    api = compile_spec(spec_with(body=body))
    assert check_body(api, {"open": {"a": 1, "b": 2}}) == []
    assert codes(check_body(api, {"closed": 1})) == [("NOT_ALLOWED", "/closed")]


@pytest.mark.parametrize(
    ("fmt", "good", "bad", "detail"),
    [
        ("email", "ada@example.com", "nope", "must be an email address"),
        ("uuid", "0b7e9a44-1f6c-4bbf-9a0b-5f2b3c4d5e6f", "0b7e9a44", "must be a UUID"),
        ("date", "2024-02-29", "2024-02-30", "must be a date (YYYY-MM-DD)"),
        ("date-time", "2024-05-01T10:00:00Z", "2024-05-01 10:00", "must be a date and time"),
        ("uri", "https://example.com/a?b=c", "not a uri", "must be an absolute URI"),
        ("ipv4", "192.0.2.1", "192.0.2.256", "must be an IPv4 address"),
        ("ipv6", "2001:db8::1", "2001:db8:::1", "must be an IPv6 address"),
    ],
)
@pytest.mark.parametrize("version", ["3.0.3", "3.1.0"])
def test_formats(fmt: str, good: str, bad: str, detail: str, version: str) -> None:
    body = {"type": "object", "properties": {"v": {"type": "string", "format": fmt}}}
    api = compile_spec(spec_with(version=version, body=body))
    assert check_body(api, {"v": good}) == []
    errors = check_body(api, {"v": bad})
    assert codes(errors) == [("INVALID_FORMAT", "/v")]
    assert errors[0]["detail"].startswith(detail)
    assert bad not in str(errors)


def test_unknown_formats_are_ignored() -> None:
    body = {"type": "object", "properties": {"v": {"type": "string", "format": "int64-as-string"}}}
    assert check_body(compile_spec(spec_with(body=body)), {"v": "x"}) == []


def test_hostile_input_against_a_backtracking_pattern_runs_in_linear_time() -> None:
    body = {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(a+)+$"}}}
    api = compile_spec(spec_with(body=body))
    assert api.backtracking == []
    hostile = "a" * 50_000 + "!"
    start = time.perf_counter()
    errors = check_body(api, {"v": hostile})
    elapsed = time.perf_counter() - start
    assert codes(errors) == [("PATTERN_MISMATCH", "/v")]
    assert elapsed < 0.5, elapsed
    assert hostile not in str(errors)


def test_look_around_patterns_fall_back_to_bounded_backtracking() -> None:
    body = {"type": "object", "properties": {"v": {"type": "string", "pattern": "^(?=.*[0-9])(a|aa)+[0-9]$"}}}
    api = compile_spec(spec_with(body=body))
    assert api.backtracking == ["op"]
    assert check_body(api, {"v": "aaa1"}) == []
    start = time.perf_counter()
    errors = check_body(api, {"v": "a" * 5_000 + "1!"})
    assert time.perf_counter() - start < 1.0
    assert [e["code"] for e in errors] == ["PATTERN_MISMATCH"]


@pytest.mark.parametrize(
    ("schema", "value", "code", "detail"),
    [
        ({"type": "string", "maxLength": 3}, "abcd", "TOO_LONG", "must be at most 3 characters long"),
        ({"type": "string", "minLength": 2}, "a", "TOO_SHORT", "must be at least 2 characters long"),
        ({"type": "array", "maxItems": 1}, [1, 2], "TOO_LONG", "must have at most 1 items"),
        ({"type": "array", "minItems": 2}, [1], "TOO_SHORT", "must have at least 2 items"),
        ({"type": "integer", "maximum": 5}, 6, "OUT_OF_RANGE", "must be at most 5"),
        ({"enum": ["a", "b"]}, "c", "ENUM_MISMATCH", "must be one of: a, b"),
        ({"const": "x"}, "y", "ENUM_MISMATCH", 'must be "x"'),
        (
            {"type": "string", "pattern": "^[0-9]+$"},
            "12a",
            "PATTERN_MISMATCH",
            "must match the pattern ^[0-9]+$",
        ),
        (
            {"type": "integer", "multipleOf": 5},
            7,
            "INVALID",
            "must be a multiple of the step its schema sets",
        ),
        ({"type": "array", "uniqueItems": True}, [1, 1], "INVALID", "must not contain duplicate items"),
        ({"type": "boolean"}, "true", "TYPE_MISMATCH", "must be a boolean"),
        ({"oneOf": [{"type": "integer"}, {"type": "boolean"}]}, "x", "INVALID", "does not match any"),
        ({"oneOf": [{"type": "integer"}, {"minimum": 0}]}, 1, "INVALID", "matches more than one"),
    ],
)
def test_each_keyword_has_its_code_and_a_readable_detail(
    schema: Any, value: Any, code: str, detail: str
) -> None:
    api = compile_spec(spec_with(body={"type": "object", "properties": {"v": schema}}))
    errors = check_body(api, {"v": value})
    assert [e["code"] for e in errors] == [code]
    assert errors[0]["detail"].startswith(detail)
    assert errors[0]["pointer"] == "/v"


def test_any_of_narrows_to_the_branch_that_fits_the_type() -> None:
    # Stripe's shape: an object or the empty string.
    branch = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 5}}}
    body = {
        "type": "object",
        "properties": {"address": {"anyOf": [branch, {"type": "string", "enum": [""]}]}},
    }
    api = compile_spec(spec_with(body=body))
    assert check_body(api, {"address": ""}) == []
    assert codes(check_body(api, {"address": {"city": "Parisian"}})) == [("TOO_LONG", "/address/city")]
    assert codes(check_body(api, {"address": {"town": "x"}})) == [("NOT_ALLOWED", "/address/town")]


def test_pointer_escaping() -> None:
    body = {"type": "object", "properties": {"a/b": {"type": "integer"}, "c~d": {"type": "integer"}}}
    errors = check_body(compile_spec(spec_with(body=body)), {"a/b": "x", "c~d": "y"})
    assert [e["pointer"] for e in errors] == ["/a~1b", "/c~0d"]


def test_31_ref_siblings_apply_with_the_reference() -> None:
    schemas = {"Base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}
    body = {
        "$ref": "#/components/schemas/Base",
        "properties": {"note": {"type": "string"}},
        "required": ["note"],
    }
    api = compile_spec(spec_with(version="3.1.0", body=body, schemas=schemas))
    assert check_body(api, {"id": "1", "note": "n"}) == []
    assert codes(check_body(api, {"id": "1"})) == [("REQUIRED", "/note")]
    assert codes(check_body(api, {"id": "1", "note": "n", "x": 1})) == [("NOT_ALLOWED", "/x")]
    # In 3.0 the siblings of $ref are ignored.
    api30 = compile_spec(spec_with(version="3.0.3", body=body, schemas=schemas))
    assert codes(check_body(api30, {"id": "1"})) == []
