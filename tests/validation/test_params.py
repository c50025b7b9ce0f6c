"""Parameters: every style and explode setting, coercion, required, unknown query parameters."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.problems import AmbiguousRequest
from bastion.validation.params import cookie_pairs, nest_pairs, parse_query, split_bracket_key
from tests.validation.helpers import compile_spec, operation, spec_with

INT_ARRAY = {"type": "array", "items": {"type": "integer"}}
POINT = {"type": "object", "properties": {"x": {"type": "integer"}, "y": {"type": "integer"}}}


def seen_values(param: dict[str, Any], **request: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Compile one parameter, check a request, and return the coerced values and the errors."""
    path = "/things/{p}" if param["in"] == "path" else "/things"
    api = compile_spec(
        spec_with(parameters=[param], path=path, method="get"), **request.pop("validation", {})
    )
    op = operation(api, "GET", path)
    captured: dict[str, Any] = {}
    real = op.params_validator

    class Spy:
        def is_valid(self, instance: Any) -> bool:
            captured.update(instance)
            return real is None or bool(real.is_valid(instance))

        def iter_errors(self, instance: Any) -> Any:
            return real.iter_errors(instance)

    op.params_validator = Spy() if real is not None else None
    errors = op.check(
        request.get("path_params", {}),
        request.get("query", b""),
        request.get("headers", []),
    )
    return captured.get(param["in"], {}), errors


@pytest.mark.parametrize(
    ("style", "explode", "raw", "schema", "expected"),
    [
        ("simple", False, "5", {"type": "integer"}, 5),
        ("simple", False, "3,4,5", INT_ARRAY, [3, 4, 5]),
        ("simple", False, "x,1,y,2", POINT, {"x": 1, "y": 2}),
        ("simple", True, "x=1,y=2", POINT, {"x": 1, "y": 2}),
        ("label", False, ".5", {"type": "integer"}, 5),
        ("label", False, ".3,4,5", INT_ARRAY, [3, 4, 5]),
        ("label", True, ".3.4.5", INT_ARRAY, [3, 4, 5]),
        ("label", True, ".x=1.y=2", POINT, {"x": 1, "y": 2}),
        ("matrix", False, ";p=5", {"type": "integer"}, 5),
        ("matrix", False, ";p=3,4,5", INT_ARRAY, [3, 4, 5]),
        ("matrix", True, ";p=3;p=4;p=5", INT_ARRAY, [3, 4, 5]),
        ("matrix", False, ";p=x,1,y,2", POINT, {"x": 1, "y": 2}),
        ("matrix", True, ";x=1;y=2", POINT, {"x": 1, "y": 2}),
    ],
)
def test_path_styles(style: str, explode: bool, raw: str, schema: Any, expected: Any) -> None:
    param = {
        "name": "p",
        "in": "path",
        "required": True,
        "style": style,
        "explode": explode,
        "schema": schema,
    }
    values, errors = seen_values(param, path_params={"p": raw})
    assert errors == []
    assert values == {"p": expected}


@pytest.mark.parametrize(
    ("style", "explode", "query", "schema", "expected"),
    [
        ("form", True, b"p=5", {"type": "integer"}, 5),
        ("form", True, b"p=3&p=4&p=5", INT_ARRAY, [3, 4, 5]),
        ("form", False, b"p=3,4,5", INT_ARRAY, [3, 4, 5]),
        ("form", True, b"x=1&y=2", POINT, {"x": 1, "y": 2}),
        ("form", False, b"p=x,1,y,2", POINT, {"x": 1, "y": 2}),
        ("spaceDelimited", False, b"p=3%204%205", INT_ARRAY, [3, 4, 5]),
        ("pipeDelimited", False, b"p=3|4|5", INT_ARRAY, [3, 4, 5]),
        ("pipeDelimited", False, b"p=3%7C4%7C5", INT_ARRAY, [3, 4, 5]),
        ("deepObject", True, b"p[x]=1&p[y]=2", POINT, {"x": 1, "y": 2}),
        ("deepObject", True, b"p%5Bx%5D=1&p%5By%5D=2", POINT, {"x": 1, "y": 2}),
    ],
)
def test_query_styles(style: str, explode: bool, query: bytes, schema: Any, expected: Any) -> None:
    param = {"name": "p", "in": "query", "style": style, "explode": explode, "schema": schema}
    values, errors = seen_values(param, query=query)
    assert errors == []
    assert values == {"p": expected}


def test_query_defaults_and_coercion_errors_point_at_the_parameter() -> None:
    param = {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}
    values, errors = seen_values(param, query=b"limit=abc")
    assert values == {"limit": "abc"}
    assert errors == [
        {
            "code": "TYPE_MISMATCH",
            "in": "query",
            "name": "limit",
            "field": "limit",
            "detail": "must be an integer",
        }
    ]
    _, errors = seen_values(param, query=b"limit=1000")
    assert errors[0]["code"] == "OUT_OF_RANGE"
    _, errors = seen_values(param, query=b"")
    assert errors == []


def test_array_items_errors_name_the_item() -> None:
    param = {"name": "ids", "in": "query", "explode": False, "schema": INT_ARRAY}
    _, errors = seen_values(param, query=b"ids=1,x,3")
    assert errors == [
        {
            "code": "TYPE_MISMATCH",
            "in": "query",
            "name": "ids",
            "field": "ids[1]",
            "detail": "must be an integer",
        }
    ]


def test_missing_required_parameters() -> None:
    for location in ("query", "header", "cookie"):
        param = {"name": "Need", "in": location, "required": True, "schema": {"type": "string"}}
        _, errors = seen_values(param)
        assert errors == [
            {"code": "REQUIRED", "in": location, "name": "Need", "field": "Need", "detail": "is required"}
        ], location


def test_header_parameters_are_case_insensitive_and_coerced() -> None:
    param = {"name": "X-Page-Size", "in": "header", "schema": {"type": "integer", "maximum": 50}}
    values, errors = seen_values(param, headers=[(b"x-page-size", b" 20 ")])
    assert (values, errors) == ({"X-Page-Size": 20}, [])
    _, errors = seen_values(param, headers=[(b"x-page-size", b"99")])
    assert errors[0] == {
        "code": "OUT_OF_RANGE",
        "in": "header",
        "name": "X-Page-Size",
        "field": "X-Page-Size",
        "detail": "must be at most 50",
    }
    array = {"name": "X-Ids", "in": "header", "schema": INT_ARRAY}
    values, _ = seen_values(array, headers=[(b"x-ids", b"1,2"), (b"x-ids", b"3")])
    assert values == {"X-Ids": [1, 2, 3]}


def test_accept_content_type_and_authorization_headers_are_ignored() -> None:
    for name in ("Accept", "Content-Type", "Authorization"):
        param = {"name": name, "in": "header", "required": True, "schema": {"type": "integer"}}
        _, errors = seen_values(param)
        assert errors == [], name


def test_cookie_parameters() -> None:
    param = {
        "name": "session",
        "in": "cookie",
        "required": True,
        "schema": {"type": "string", "minLength": 8},
    }
    values, errors = seen_values(param, headers=[(b"cookie", b"theme=dark; session=abcdefgh")])
    assert (values, errors) == ({"session": "abcdefgh"}, [])
    _, errors = seen_values(param, headers=[(b"cookie", b"session=abc")])
    assert errors[0]["code"] == "TOO_SHORT" and errors[0]["in"] == "cookie"


def test_content_parameters_are_json() -> None:
    param = {"name": "filter", "in": "query", "content": {"application/json": {"schema": POINT}}}
    values, errors = seen_values(param, query=b"filter=%7B%22x%22%3A1%7D")
    assert (values, errors) == ({"filter": {"x": 1}}, [])


def test_boolean_coercion_strict_and_lenient() -> None:
    param = {"name": "flag", "in": "query", "schema": {"type": "boolean"}}
    values, errors = seen_values(param, query=b"flag=true")
    assert (values, errors) == ({"flag": True}, [])
    _, errors = seen_values(param, query=b"flag=yes")
    assert errors[0]["detail"] == "must be a boolean"
    lenient = {**param, "schema": {"type": "boolean", "x-bastion-lenient": ["boolean-words"]}}
    for raw, expected in ((b"yes", True), (b"no", False), (b"1", True), (b"0", False), (b"OFF", False)):
        values, errors = seen_values(lenient, query=b"flag=" + raw)
        assert (values, errors) == ({"flag": expected}, []), raw


def test_numbers_and_type_unions() -> None:
    param = {"name": "n", "in": "query", "schema": {"type": "number"}}
    assert seen_values(param, query=b"n=1.5e3")[0] == {"n": 1500.0}
    union = {
        "name": "u",
        "in": "query",
        "schema": {"anyOf": [{"type": "integer"}, {"type": "string", "enum": [""]}]},
    }
    assert seen_values(union, query=b"u=7") == ({"u": 7}, [])
    assert seen_values(union, query=b"u=") == ({"u": ""}, [])


def test_unknown_query_parameters_ignored_by_default_rejected_on_request() -> None:
    param = {"name": "q", "in": "query", "schema": {"type": "string"}}
    deep = {"name": "f", "in": "query", "style": "deepObject", "schema": POINT}
    assert seen_values(param, query=b"q=a&other=1")[1] == []
    _, errors = seen_values(param, query=b"q=a&other=1&f[x]=1", validation={"unknown_query": "reject"})
    assert errors == [
        {
            "code": "NOT_ALLOWED",
            "in": "query",
            "name": "f[x]",
            "field": "f[x]",
            "detail": "is not a parameter of this operation",
        },
        {
            "code": "NOT_ALLOWED",
            "in": "query",
            "name": "other",
            "field": "other",
            "detail": "is not a parameter of this operation",
        },
    ]
    api = compile_spec(spec_with(parameters=[param, deep], method="get"), unknown_query="reject")
    assert operation(api, "GET", "/things").check({}, b"q=a&f[x]=1", []) == []


def test_query_parsing_helpers() -> None:
    assert parse_query(b"a=1&b=x+y&c=%C3%A9&&d") == [("a", "1"), ("b", "x y"), ("c", "é"), ("d", "")]
    assert split_bracket_key("a[b][0]") == ["a", "b", "0"]
    assert split_bracket_key("a[]") == ["a", ""]
    assert split_bracket_key("plain") == ["plain"]
    assert nest_pairs([("a[b]", "1"), ("a[c][]", "2"), ("a[c][]", "3"), ("d", "4"), ("d", "5")], 8) == {
        "a": {"b": "1", "c": ["2", "3"]},
        "d": ["4", "5"],
    }
    assert nest_pairs([("l[][x]", "1"), ("l[][y]", "2"), ("l[][x]", "3")], 8) == {
        "l": [{"x": "1", "y": "2"}, {"x": "3"}]
    }
    assert cookie_pairs('a=1; b="two"; a=%33') == [("a", "1"), ("b", "two"), ("a", "%33")]


def test_every_bad_item_of_an_array_parameter_is_reported_in_order() -> None:
    param = {"name": "ids", "in": "query", "explode": False, "schema": INT_ARRAY}
    _, errors = seen_values(param, query=b"ids=" + b",".join([b"x"] * 12))
    assert [e["field"] for e in errors] == [f"ids[{i}]" for i in range(12)]


def test_integers_past_64_bits_are_checked_without_crashing() -> None:
    param = {"name": "n", "in": "query", "schema": {"type": "integer", "maximum": 10**25}}
    _, errors = seen_values(param, query=b"n=" + str(10**30).encode())
    assert [(e["code"], e["detail"]) for e in errors] == [("OUT_OF_RANGE", f"must be at most {10**25}")]


def test_a_deep_object_given_by_its_plain_name_is_checked_or_ambiguous() -> None:
    deep = {"name": "f", "in": "query", "style": "deepObject", "schema": POINT}
    _, errors = seen_values(deep, query=b"f=%3Cx%3E")
    assert [(e["code"], e["name"], e["detail"]) for e in errors] == [
        ("TYPE_MISMATCH", "f", "must be an object")
    ]
    api = compile_spec(spec_with(parameters=[deep], method="get"))
    with pytest.raises(AmbiguousRequest):
        operation(api, "GET", "/things").check({}, b"f=7&f[x]=1", [])
    assert seen_values(deep, query=b"f[x]=1") == ({"f": {"x": 1}}, [])


def test_a_member_of_an_exploded_object_given_also_bracketed_is_ambiguous() -> None:
    param = {"name": "f", "in": "query", "style": "form", "explode": True, "schema": POINT}
    api = compile_spec(spec_with(parameters=[param], method="get"))
    with pytest.raises(AmbiguousRequest):
        operation(api, "GET", "/things").check({}, b"x=1&x[a]=2", [])
    assert seen_values(param, query=b"x=1&y=2") == ({"f": {"x": 1, "y": 2}}, [])
