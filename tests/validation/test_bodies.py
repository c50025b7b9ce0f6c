"""Bodies: form-urlencoded and multipart data, JSON variants, media type matching."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from bastion.problems import MalformedBody, UnsupportedMediaType
from bastion.validation import bodies, controls
from bastion.validation.bodies import matches, parse_json, parse_media_type
from tests.validation.helpers import compile_spec, operation, spec_with

ORDER = {
    "type": "object",
    "required": ["amount"],
    "properties": {
        "amount": {"type": "integer", "minimum": 1},
        "capture": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}},
        "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"price": {"type": "string"}, "quantity": {"type": "integer"}},
            },
        },
        "shipping": {
            "anyOf": [{"type": "object", "properties": {"city": {"type": "string"}}}, {"enum": [""]}]
        },
    },
}


def check(
    media: str, raw: bytes, content_type: str | None = None, schema: Any = ORDER
) -> list[dict[str, Any]]:
    op = operation(compile_spec(spec_with(body=schema, media=media)), "POST", "/things")
    ct = (content_type or media).encode()
    result: list[dict[str, Any]] = op.check({}, b"", [(b"content-type", ct)], raw, ct)
    return result


FORM = "application/x-www-form-urlencoded"


def test_form_body_with_nesting_arrays_and_coercion() -> None:
    raw = (
        b"amount=100&capture=false&tags[]=a&tags[]=b&metadata[order]=42&lines[0][price]=p1"
        b"&lines[0][quantity]=2&lines[1][price]=p2&shipping[city]=Paris"
    )
    assert check(FORM, raw) == []
    assert check(FORM, b"amount=100&tags=a&tags=b&shipping=") == []


def test_form_body_errors_point_at_the_nested_field() -> None:
    errors = check(FORM, b"amount=0&lines[1][quantity]=x&capture=maybe&bogus=1")
    assert [(e["code"], e["pointer"]) for e in errors] == [
        ("OUT_OF_RANGE", "/amount"),
        ("NOT_ALLOWED", "/bogus"),
        ("TYPE_MISMATCH", "/capture"),
        ("TYPE_MISMATCH", "/lines/0/quantity"),
    ]
    assert check(FORM, b"")[0]["code"] == "REQUIRED"


def test_form_body_is_utf8_only() -> None:
    raw = "amount=5&metadata[name]=Zoë".encode()
    assert check(FORM, raw, FORM + '; charset="UTF-8"') == []
    with pytest.raises(UnsupportedMediaType):
        check(FORM, "amount=5&metadata[name]=Zoë".encode("latin-1"), FORM + "; charset=iso-8859-1")
    with pytest.raises(MalformedBody):
        check(FORM, b"amount=5&metadata[name]=\xff\xfe", FORM)
    with pytest.raises(MalformedBody):
        check(FORM, b"amount=5&metadata[name]=%FF", FORM)


def multipart(parts: list[tuple[str, str | None, bytes]], boundary: str = "XyZ") -> bytes:
    out = b""
    for name, filename, content in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + content + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


UPLOAD = {
    "type": "object",
    "required": ["title", "file"],
    "properties": {
        "title": {"type": "string", "maxLength": 10},
        "count": {"type": "integer"},
        "file": {"type": "string", "format": "binary", "maxLength": 64},
        "meta": {"type": "object", "properties": {"a": {"type": "integer"}}},
    },
}
MULTIPART = "multipart/form-data"


def test_multipart_fields_and_files() -> None:
    ct = MULTIPART + '; boundary="XyZ"'
    body = multipart([("title", None, b"report"), ("count", None, b"3"), ("file", "r.bin", b"\x00\xff" * 8)])
    assert check(MULTIPART, body, ct, UPLOAD) == []
    body = multipart([("title", None, b"x" * 11), ("count", None, b"three"), ("meta", None, b'{"a": "b"}')])
    errors = check(MULTIPART, body, ct, UPLOAD)
    assert [(e["code"], e["pointer"]) for e in errors] == [
        ("TYPE_MISMATCH", "/count"),
        ("REQUIRED", "/file"),
        ("TYPE_MISMATCH", "/meta/a"),
        ("TOO_LONG", "/title"),
    ]
    too_big = multipart([("title", None, b"t"), ("file", "big.bin", b"z" * 65)])
    assert [e["code"] for e in check(MULTIPART, too_big, ct, UPLOAD)] == ["TOO_LONG"]


def test_malformed_multipart() -> None:
    with pytest.raises(MalformedBody):
        check(MULTIPART, b"--XyZ\r\nno end", MULTIPART + "; boundary=XyZ", UPLOAD)
    with pytest.raises(MalformedBody):
        check(MULTIPART, multipart([("title", None, b"t")]), MULTIPART, UPLOAD)


def test_plus_json_and_wildcard_media_types() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert check("application/merge-patch+json", b'{"a": 1}', schema=schema) == []
    assert check("application/merge-patch+json", b'{"a": "x"}', schema=schema)[0]["code"] == "TYPE_MISMATCH"
    assert check("application/*", b'{"a": "x"}', "application/json", schema)[0]["code"] == "TYPE_MISMATCH"
    with pytest.raises(UnsupportedMediaType):
        check("application/json", b"a=1", FORM, schema)


def test_media_types_without_schema_pass_unparsed() -> None:
    spec = spec_with(body={"type": "string"}, media="application/octet-stream")
    op = operation(compile_spec(spec), "POST", "/things")
    assert op.check({}, b"", [], b"\x00\x01", b"application/octet-stream") == []


def test_media_type_helpers() -> None:
    media = parse_media_type('Multipart/Form-Data; boundary="a b"; charset=UTF-8')
    assert media.essence == "multipart/form-data"
    assert media.params == {"boundary": "a b", "charset": "UTF-8"}
    assert matches("*/*", "text/plain")
    assert matches("text/*", "text/plain")
    assert not matches("text/*", "application/json")


def test_parse_json_positions_and_depth() -> None:
    with pytest.raises(MalformedBody) as info:
        parse_json(b'{"a": [1, 2,]}', 32)
    assert "line 1, column 12 (byte 11)" in str(info.value.detail)
    nested = orjson.dumps([[[[["deep"]]]]])
    assert parse_json(nested, 5) == [[[[["deep"]]]]]
    with pytest.raises(MalformedBody):
        parse_json(nested, 4)
    # Brackets inside strings do not count.
    assert parse_json(orjson.dumps({"a": "[[[[[[[[[["}), 2) == {"a": "[[[[[[[[[["}


@pytest.mark.parametrize(
    "body",
    [
        b'{"a":1,"b":{"c":[1,2,{"d":"x"}]}}',
        b'{\n  "a" : "10:00:00Z",\n  "b" : ["x:y", "\\u003a", "\\u003A"]\n}',
        b'{"\\u00e9":"caf\\u00e9","q":"say \\"hi\\"","c":"a\\\\b"}',
        b'[{"k":"1"},{"k":"2"},{"k":"3"}]',
    ],
)
def test_an_ordinary_body_is_parsed_once(body: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """The colon count clears it: the standard library's parser never sees it."""

    def second_parse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("parsed a second time")

    monkeypatch.setattr(bodies.json, "loads", second_parse)
    assert parse_json(body, 64) == orjson.loads(body)


@pytest.mark.parametrize(
    ("body", "may"),
    [
        (b'{"a":"plain"}', False),
        (b'{"a":"caf\\u00e9 \\"q\\" \\n\\t\\r \\/"}', False),
        (b'{"a":"\\\\u0000 \\\\b \\\\f"}', False),
        (b'{"a":"x\\u0000"}', True),
        (b'{"a":"x\\u001F"}', True),
        (b'{"a":"x\\b"}', True),
        (b'{"a":"\\\\\\f"}', True),
    ],
)
def test_the_control_character_filter_is_exact_on_escapes(body: bytes, may: bool) -> None:
    assert controls.json_may_have(body) is may
    assert controls.has_control(orjson.loads(body)) is may


def test_json_nested_past_what_orjson_serialises_is_still_checked_for_repeated_names() -> None:
    deep = b'{"a":' * 300 + b"0" + b"}" * 300
    assert parse_json(deep, 500) == orjson.loads(deep)
    repeated = b'{"a":' * 300 + b'{"k":1,"k":2}' + b"}" * 300
    with pytest.raises(MalformedBody, match="repeats a member name"):
        parse_json(repeated, 500)
