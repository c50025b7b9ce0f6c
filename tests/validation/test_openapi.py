"""Loading descriptions: YAML and JSON, references, recursion, and clear errors for broken ones."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bastion.config import load_config
from bastion.validation.compile import compile_description
from bastion.validation.openapi import OpenAPIError, load_description, parse_document
from tests.validation.helpers import CHECKOUT, check_body, compile_spec, spec_with, write_spec


def test_yaml_and_json_load_the_same(tmp_path: Path) -> None:
    from_yaml = load_description(CHECKOUT)
    json_file = tmp_path / "openapi.json"
    json_file.write_bytes(orjson.dumps(from_yaml.document))
    from_json = load_description(json_file)
    assert from_json.document == from_yaml.document
    assert from_yaml.version == (3, 1)


def test_yaml_dates_stay_strings() -> None:
    description = parse_document("openapi: 3.0.0\ninfo: {title: t, version: 2024-01-01}\npaths: {}\n", "x")
    assert description.document["info"]["version"] == "2024-01-01"


@pytest.mark.parametrize(
    ("text", "pointer", "reason"),
    [
        ("swagger: '2.0'\npaths: {}\n", "/swagger", "Swagger 2.0 is not supported"),
        ("info: {}\npaths: {}\n", "/openapi", "'openapi' version field is missing"),
        ("openapi: 4.0.0\npaths: {}\n", "/openapi", "OpenAPI 4.0.0 is not supported"),
        ("openapi: 3.0.0\npaths: [1]\n", "/paths", "paths must be a mapping"),
        ("openapi: 3.0.0\npaths: {x: {}}\n", "/paths/x", "must start with /"),
        ("- a\n- b\n", "", "must be a mapping"),
    ],
)
def test_broken_outline(text: str, pointer: str, reason: str) -> None:
    with pytest.raises(OpenAPIError) as info:
        compile_spec(text)
    assert info.value.pointer == pointer
    assert reason in info.value.reason


def test_bad_yaml_names_the_line() -> None:
    with pytest.raises(OpenAPIError) as info:
        parse_document("openapi: 3.0.0\npaths:\n  /a: [unclosed\n", "spec.yaml")
    assert "not valid YAML at line" in str(info.value)
    assert str(info.value).startswith("spec.yaml")


def test_bad_json_names_the_position() -> None:
    with pytest.raises(OpenAPIError) as info:
        parse_document('{"openapi": "3.1.0",}', "spec.json")
    assert "line 1, column" in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(OpenAPIError) as info:
        load_description("/nonexistent/openapi.yaml")
    assert "cannot read the file" in str(info.value)


def test_dangling_ref_names_its_pointer() -> None:
    spec = spec_with(body={"$ref": "#/components/schemas/Nope"})
    with pytest.raises(OpenAPIError) as info:
        compile_spec(spec)
    assert info.value.pointer == "/paths/~1things/post/requestBody/content/application~1json/schema/$ref"


def test_external_ref_is_reported(tmp_path: Path) -> None:
    # A file of the description's own folder may be named, but descriptions are one file.
    (tmp_path / "other.yaml").write_text("Thing: {type: object}\n")
    path = write_spec(tmp_path, spec_with(body={"$ref": "other.yaml#/Thing"}))
    with pytest.raises(OpenAPIError) as info:
        compile_description(load_description(path), load_config({}, env={}))
    assert "not a local reference" in info.value.reason


def test_relative_ref_of_a_description_without_a_folder_is_refused() -> None:
    with pytest.raises(OpenAPIError) as info:
        compile_spec(spec_with(body={"$ref": "other.yaml#/Thing"}))
    assert "'other.yaml#/Thing' is not allowed" in info.value.reason


def test_bad_parameter_location() -> None:
    spec = spec_with(parameters=[{"name": "x", "in": "body", "schema": {"type": "string"}}])
    with pytest.raises(OpenAPIError) as info:
        compile_spec(spec)
    assert info.value.pointer == "/paths/~1things/post/parameters/0"


def test_invalid_schema_is_reported_with_its_operation() -> None:
    spec = spec_with(body={"type": "object", "properties": {"a": {"type": "no-such-type"}}})
    with pytest.raises(OpenAPIError) as info:
        compile_spec(spec)
    assert info.value.pointer == "/paths/~1things/post"
    assert "schema" in info.value.reason


def test_recursive_schemas_compile_and_validate() -> None:
    node = {
        "type": "object",
        "required": ["name"],
        "properties": {
            "name": {"type": "string"},
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        },
    }
    api = compile_spec(spec_with(body={"$ref": "#/components/schemas/Node"}, schemas={"Node": node}))
    tree = {"name": "a", "children": [{"name": "b", "children": [{"name": "c"}]}]}
    assert check_body(api, tree) == []
    errors = check_body(api, {"name": "a", "children": [{"name": "b", "children": [{"nom": "c"}]}]})
    assert [(e["code"], e["pointer"]) for e in errors] == [
        ("REQUIRED", "/children/0/children/0/name"),
        ("NOT_ALLOWED", "/children/0/children/0/nom"),
    ]


def test_refs_to_parameters_and_request_bodies() -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/things/{id}": {
                "parameters": [{"$ref": "#/components/parameters/Id"}],
                "put": {
                    "operationId": "put",
                    "requestBody": {"$ref": "#/components/requestBodies/Thing"},
                    "responses": {"200": {"description": "ok"}},
                },
            }
        },
        "components": {
            "parameters": {
                "Id": {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}
            },
            "requestBodies": {
                "Thing": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object", "properties": {"a": {}}}}},
                }
            },
        },
    }
    api = compile_spec(spec)
    op = api.operations[0]
    assert [p.name for p in op.path_params] == ["id"]
    assert op.body_required
    assert op.check({"id": "x"}, b"", [], b'{"b": 1}', b"application/json") == [
        {"code": "TYPE_MISMATCH", "in": "path", "name": "id", "field": "id", "detail": "must be an integer"},
        {
            "code": "NOT_ALLOWED",
            "in": "body",
            "pointer": "/b",
            "field": "b",
            "detail": "is not a known field",
        },
    ]
