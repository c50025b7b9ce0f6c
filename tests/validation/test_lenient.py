"""Documented leniency: ``x-bastion-lenient`` coercions, checked and passed on as checked.

Each coercion is exercised in middleware mode (the application sees the coerced
value) and in gateway mode (the upstream, called in this process through the
proxy, receives the coerced bytes).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Bastion, exactjson
from bastion.asgi import Receive, Scope, Send
from bastion.config import ConfigError, load_config
from bastion.config.gateway import GatewayConfig
from bastion.gateway.inprocess import AsgiTransport
from bastion.gateway.server import build_gateway
from bastion.validation.coerce import Guide
from bastion.validation.lenient import relax_json, splice_json
from bastion.validation.openapi import OpenAPIError, parse_document
from tests.gateway.conftest import Server, start_gateway, upstream  # noqa: F401 - the session fixture
from tests.support import LogCapture
from tests.validation.helpers import compile_spec, read_body, write_spec

LENIENT_BOOL = {"type": "boolean", "x-bastion-lenient": ["boolean-words"]}
SPEC: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "lenient", "version": "1"},
    "components": {
        "schemas": {
            "Currency": {
                "type": "string",
                "enum": ["EUR", "USD", "GBP"],
                "x-bastion-lenient": ["case-insensitive-enum", "trim"],
            },
        }
    },
    "paths": {
        "/things": {
            "post": {
                "parameters": [
                    {"name": "flag", "in": "query", "schema": LENIENT_BOOL},
                    {"name": "strict", "in": "query", "schema": {"type": "boolean"}},
                    {
                        "name": "tags",
                        "in": "query",
                        "schema": {
                            "type": "array",
                            "items": {"type": "string", "enum": ["red", "blue"]},
                        },
                        "x-bastion-lenient": ["case-insensitive-enum"],
                    },
                    {
                        "name": "X-Currency",
                        "in": "header",
                        "schema": {"$ref": "#/components/schemas/Currency"},
                    },
                    {"name": "mode", "in": "cookie", "schema": {"$ref": "#/components/schemas/Currency"}},
                ],
                "requestBody": {
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/Thing"}},
                        "application/x-www-form-urlencoded": {
                            "schema": {"$ref": "#/components/schemas/Thing"}
                        },
                        "multipart/form-data": {"schema": {"$ref": "#/components/schemas/Thing"}},
                    }
                },
                "responses": {"200": {"description": "ok"}},
            },
            "get": {  # no body: checked without waiting for anything (the guard's admit)
                "parameters": [{"name": "flag", "in": "query", "schema": LENIENT_BOOL}],
                "responses": {"200": {"description": "ok"}},
            },
        },
        "/free": {
            "post": {
                "requestBody": {"content": {"application/json": {"schema": {}}}},
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}
SPEC["components"]["schemas"]["Thing"] = {
    "type": "object",
    "x-bastion-lenient": ["trim"],  # not inherited by the members
    "properties": {
        "active": LENIENT_BOOL,
        "strict": {"type": "boolean"},
        "count": {"type": "integer", "x-bastion-lenient": ["numeric-strings"]},
        "price": {"type": "number", "x-bastion-lenient": ["numeric-strings", "trim"]},
        "name": {"type": "string", "x-bastion-lenient": ["trim"]},
        "note": {"type": "string"},
        "currency": {"$ref": "#/components/schemas/Currency"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"qty": {"type": "integer", "x-bastion-lenient": ["numeric-strings"]}},
            },
        },
    },
}


async def seen_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers with what reached it: the body bytes, the query string and the headers."""
    if scope["type"] != "http":
        return
    body = await read_body(receive)
    seen = {
        "body": body.decode("latin-1"),
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in scope["headers"]],
    }
    payload = orjson.dumps(seen)
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": payload})


@asynccontextmanager
async def serving(tmp_path: Path, mode: str, spec: dict[str, Any] = SPEC) -> AsyncIterator[httpx.AsyncClient]:
    """A client of ``seen_app`` behind bastion, as middleware or behind the gateway."""
    settings_: dict[str, Any] = {"store": "memory://", "openapi": str(write_spec(tmp_path, spec))}
    logs = LogCapture()
    app: Any
    if mode == "middleware":
        app = Bastion(seen_app, settings_, env={}, log_stream=logs)
        bastion = app
    else:
        transport = AsgiTransport(seen_app, GatewayConfig())
        settings_["upstream"] = "http://upstream.test"
        app = build_gateway(settings_, env={}, log_stream=logs, transport=transport)
        bastion = app.bastion
    try:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://testserver"
        ) as http:
            yield http
    finally:
        await bastion.shutdown()


def header(seen: dict[str, Any], name: str) -> list[str]:
    return [v for k, v in seen["headers"] if k.lower() == name]


MODES = pytest.mark.parametrize("mode", ["middleware", "gateway"])


@MODES
async def test_boolean_words_in_a_json_body_and_the_query(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        body = b'{"active": "YES",  "note": "x"}'
        answer = await http.post(
            "/things?flag=Off&strict=true", content=body, headers={"content-type": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        assert seen["body"] == '{"active": true,  "note": "x"}'  # only the coerced token changed
        if mode == "middleware":  # the gateway's pool sets it: see the real gateway's test below
            assert header(seen, "content-length") == [str(len(seen["body"]))]
        assert seen["query"] == "flag=false&strict=true"
        for word, value in (("on", "true"), ("0", "false"), ("True", "true"), ("no", "false")):
            answer = await http.post(
                "/things", content=f'{{"active":"{word}"}}', headers={"content-type": "application/json"}
            )
            assert answer.json()["body"] == f'{{"active":{value}}}', word


@MODES
async def test_undeclared_places_stay_strict(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        cases = [
            ("/things?strict=yes", b"{}", "strict"),
            ("/things", b'{"strict": "yes"}', "/strict"),
            ("/things", b'{"count": "4.0"}', "/count"),  # integers keep integer syntax
            ("/things", b'{"count": "0x10"}', "/count"),
            ("/things", b'{"count": " 4"}', "/count"),  # no trim declared on count
            ("/things", b'{"price": "NaN"}', "/price"),
            ("/things", b'{"price": "Infinity"}', "/price"),
            ("/things", b'{"price": "1e400"}', "/price"),
            ("/things", b'{"items": [{"qty": "2.5"}]}', "/items/0/qty"),
        ]
        for url, body, where in cases:
            answer = await http.post(url, content=body, headers={"content-type": "application/json"})
            assert answer.status_code == 422, (url, body)
            entry = answer.json()["errors"][0]
            assert where in (entry.get("pointer"), entry.get("name")), (url, body, entry)
        # trim on the object is not inherited by its members
        answer = await http.post(
            "/things", content=b'{"note": " x "}', headers={"content-type": "application/json"}
        )
        assert answer.json()["body"] == '{"note": " x "}'


@MODES
async def test_numeric_strings_keep_their_digits(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        body = b'{"count": "42", "price": " 0.10000000000000000001 ", "items": [{"qty": "-7"}, {"qty": 3}]}'
        answer = await http.post("/things", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"] == (
            '{"count": 42, "price": 0.10000000000000000001, "items": [{"qty": -7}, {"qty": 3}]}'
        )


@MODES
async def test_trim_and_case_insensitive_enum(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        body = b'{"name": "\\t Ada \\n", "currency": " eur ", "note": "\\u00e9"}'
        answer = await http.post("/things", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"] == '{"name": "Ada", "currency": "EUR", "note": "\\u00e9"}'
        answer = await http.post(
            "/things", content=b'{"currency": "euro"}', headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422


@MODES
async def test_parameters_are_rewritten_in_the_query_headers_and_cookies(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        answer = await http.post(
            "/things?a=%20keep%20&tags=RED&tags=blue&flag=1",
            content=b"{}",
            headers={
                "content-type": "application/json",
                "x-currency": "usd ",
                "cookie": "a=1; mode=gbp; b=2",
            },
        )
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        assert seen["query"] == "a=%20keep%20&tags=red&tags=blue&flag=true"
        assert header(seen, "x-currency") == ["USD"]
        assert header(seen, "cookie") == ["a=1; mode=GBP; b=2"]
        answer = await http.post(
            "/things?tags=green", content=b"{}", headers={"content-type": "application/json"}
        )
        assert answer.status_code == 422


@MODES
async def test_a_request_without_a_body_is_rewritten_too(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        answer = await http.get("/things?flag=%20nO&x=1")
        assert answer.status_code == 422  # no trim declared
        answer = await http.get("/things?x=%41&flag=nO")
        assert answer.status_code == 200, answer.text
        assert answer.json()["query"] == "x=%41&flag=false"


@MODES
async def test_form_bodies_are_rewritten_and_multipart_is_not_coerced(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        answer = await http.post(
            "/things",
            content=b"active=Yes&name=+Ada+&currency=gbp&note=+x+",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"] == "active=true&name=Ada&currency=GBP&note=+x+"
        answer = await http.post("/things", files={"active": (None, "yes")})
        assert answer.status_code == 422  # multipart parts go on as sent: nothing is coerced


async def test_a_repeated_member_is_refused_before_any_coercion(tmp_path: Path) -> None:
    async with serving(tmp_path, "middleware") as http:
        body = b'{"active": "yes", "active": "no"}'
        answer = await http.post("/things", content=body, headers={"content-type": "application/json"})
        assert (answer.status_code, answer.json()["code"]) == (400, "MALFORMED_BODY")


@MODES
async def test_a_body_without_coercions_is_passed_on_untouched(tmp_path: Path, mode: str) -> None:
    async with serving(tmp_path, mode) as http:
        body = b'{ "active" : true , "count" : 4 , "price" : 1.50e0 , "note" : "\\u0041" }'
        answer = await http.post("/things", content=body, headers={"content-type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["body"].encode() == body


#: Text without the control characters validation refuses (and without lone surrogates).
CHARACTERS = st.characters(blacklist_categories=("Cc", "Cs")) | st.sampled_from("\t\r\n")
TEXT = st.text(CHARACTERS)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | TEXT,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(CHARACTERS, max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)


@st.composite
def json_texts(draw: st.DrawFn) -> bytes:
    """Any JSON text, in any of several layouts (spacing, escapes)."""
    value = draw(JSON_VALUES)
    indent = draw(st.sampled_from([None, 1, 4]))
    separators = draw(st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]))
    ascii_only = draw(st.booleans())
    return json.dumps(value, indent=indent, separators=separators, ensure_ascii=ascii_only).encode()


def test_without_declared_leniency_the_gateway_forwards_the_very_bytes(tmp_path: Path) -> None:
    """For any JSON body to an operation that declares no leniency, the upstream gets it byte for byte."""

    async def forwarded(bodies: list[bytes]) -> list[bytes]:
        async with serving(tmp_path, "gateway") as http:
            results = []
            for body in bodies:
                answer = await http.post("/free", content=body, headers={"content-type": "application/json"})
                assert answer.status_code == 200, answer.text
                results.append(answer.json()["body"].encode("latin-1"))
            return results

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(json_texts(), min_size=1, max_size=5))
    def check(bodies: list[bytes]) -> None:
        assert asyncio.run(forwarded(bodies)) == bodies

    check()


def test_coercions_rewrite_exactly_the_coerced_tokens() -> None:
    """Coerced members among arbitrary others: the rewritten text is the original with only the
    coerced tokens replaced, and it reads as the value that was checked."""
    api = compile_spec(SPEC)
    guide: Guide = next(m for o in api.operations if o.template == "/things" for m in o.media).guide

    @settings(max_examples=200, deadline=None)
    @given(
        st.dictionaries(
            st.text(CHARACTERS, max_size=6).filter(lambda k: k not in ("active", "count")),
            JSON_VALUES,
            max_size=5,
        ),
        st.sampled_from(["yes", "NO", "On", "off", "1", "0", "TRUE", "false"]),
        st.integers(min_value=-(10**30), max_value=10**30),
        st.sampled_from([(",", ":"), (", ", ": "), (" , ", " : ")]),
        st.booleans(),
    )
    def check(
        others: dict[str, Any], word: str, count: int, separators: tuple[str, str], ascii_only: bool
    ) -> None:
        document = {**others, "active": word, "count": str(count)}
        body = json.dumps(document, separators=separators, ensure_ascii=ascii_only).encode()
        value, changes = relax_json(exactjson.loads(body), guide)
        rewritten = splice_json(body, changes)
        expected = {**others, "active": word.lower() in ("yes", "on", "1", "true"), "count": count}
        assert json.loads(rewritten) == expected == value
        # Byte for byte the same layout with the two coerced tokens changed, and nothing else.
        assert rewritten == json.dumps(expected, separators=separators, ensure_ascii=ascii_only).encode()

    check()


def test_an_unknown_coercion_stops_start_up_naming_the_schema_and_the_value(tmp_path: Path) -> None:
    spec = json.loads(json.dumps(SPEC))
    spec["components"]["schemas"]["Thing"]["properties"]["note"]["x-bastion-lenient"] = ["trim", "loose"]
    with pytest.raises(OpenAPIError) as caught:
        compile_spec(spec)
    message = str(caught.value)
    assert "/components/schemas/Thing/properties/note/x-bastion-lenient" in message
    assert "'loose'" in message
    note = spec["components"]["schemas"]["Thing"]["properties"]["note"]
    note["x-bastion-lenient"] = "trim"
    with pytest.raises(OpenAPIError, match="must be a list"):
        compile_spec(spec)
    note["x-bastion-lenient"] = ["loose"]
    settings_ = {"store": "memory://", "openapi": str(write_spec(tmp_path, spec))}
    with pytest.raises(OpenAPIError, match="unknown coercion 'loose'"):
        Bastion(seen_app, settings_, env={})


def test_leniency_on_a_path_parameter_stops_start_up() -> None:
    spec = json.loads(json.dumps(SPEC))
    spec["paths"]["/things/{currency}"] = {
        "get": {
            "parameters": [
                {
                    "name": "currency",
                    "in": "path",
                    "required": True,
                    "schema": {"$ref": "#/components/schemas/Currency"},
                }
            ],
            "responses": {"200": {"description": "ok"}},
        }
    }
    with pytest.raises(OpenAPIError, match="does not apply to path parameters"):
        compile_spec(spec)


def test_the_old_global_switch_is_a_configuration_error() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"validation": {"lenient_booleans": True}}, env={})
    assert "x-bastion-lenient: [boolean-words]" in str(caught.value)
    with pytest.raises(ConfigError, match="lenient_booleans"):
        load_config({}, env={"BASTION_VALIDATION__LENIENT_BOOLEANS": "false"})


def test_a_shared_enum_fold_names_neither_value() -> None:
    document = parse_document(json.dumps(SPEC), "test")
    guide = Guide(
        document,
        [({"type": "string", "enum": ["a", "A", "b"], "x-bastion-lenient": ["case-insensitive-enum"]}, "")],
    )
    assert guide.enum_spelling == {"b": "b"}


def test_a_real_gateway_forwards_the_coerced_bytes_with_their_length(
    tmp_path: Path,
    upstream: Server,  # noqa: F811
) -> None:
    spec = json.loads(json.dumps(SPEC))
    spec["paths"]["/upload"] = spec["paths"].pop("/things")
    config = {"upstream": upstream.base, "store": "memory://", "openapi": str(write_spec(tmp_path, spec))}
    gateway = start_gateway(tmp_path, config)
    try:
        body = b'{"active": "yes", "count": "12", "note": " kept "}'
        answer = httpx.post(
            f"{gateway.base}/upload?flag=ON&tags=Blue",
            content=body,
            headers={"content-type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        seen = answer.json()
        expected = b'{"active": true, "count": 12, "note": " kept "}'
        assert (seen["body_size"], seen["body_sha256"]) == (
            len(expected),
            hashlib.sha256(expected).hexdigest(),
        )
        assert header(seen, "content-length") == [str(len(expected))]
        assert seen["query"] == "flag=true&tags=blue"
    finally:
        gateway.stop()
