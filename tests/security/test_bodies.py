"""Hostile bodies and parameters: what bastion checked is exactly what the application receives.

Every test drives the real middleware through httpx's ASGI transport, in front of
an application that records the headers and bytes it is handed.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from bastion import Bastion
from bastion.asgi import SCOPE_KEY, Receive, RequestContext, Scope, Send
from bastion.problems import PayloadTooLarge
from bastion.validation.guard import ValidationGuard
from tests.validation.helpers import compile_spec, operation, write_spec

USER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["email", "age", "name"],
    "properties": {
        "email": {"type": "string", "format": "email"},
        "age": {"type": "integer", "minimum": 18},
        "name": {"type": "string"},
        "note": {"type": "string", "x-bastion-allow-control-characters": True},
        "tags": {"type": "array", "items": {"type": "string"}},
        "extra": {"type": "object", "additionalProperties": {"type": "string"}},
    },
}
FORM = {
    "type": "object",
    "properties": {"age": {"type": "integer", "minimum": 18}, "name": {"type": "string"}},
}
SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "hostile", "version": "1"},
    "paths": {
        "/users": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {"schema": USER},
                        "application/x-www-form-urlencoded": {"schema": FORM},
                        "multipart/form-data": {"schema": FORM},
                    },
                },
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/items/{id}": {
            "get": {
                "parameters": [
                    {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "q", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "raw",
                        "in": "query",
                        "schema": {"type": "string", "x-bastion-allow-control-characters": True},
                    },
                    {"name": "X-Count", "in": "header", "schema": {"type": "integer"}},
                    {"name": "X-Tag", "in": "header", "schema": {"type": "string"}},
                    {"name": "page", "in": "cookie", "schema": {"type": "integer"}},
                ],
                "responses": {"200": {"description": "ok"}},
            }
        },
    },
}


class Recorder:
    """An application that answers 200 and keeps the headers and body of every request."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict[bytes, bytes], bytes]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body", False):
                break
        self.requests.append((dict(scope["headers"]), body))
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def http(tmp_path: Path, recorder: Recorder) -> httpx.AsyncClient:
    app = Bastion(
        recorder,
        {
            "store": "memory://",
            "openapi": str(write_spec(tmp_path, SPEC)),
            "validation": {"max_body_bytes": 64 * 1024},
        },
        env={},
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


VALID = orjson.dumps({"email": "a@example.com", "age": 30, "name": "Ann"})


async def post(http: httpx.AsyncClient, body: bytes, content_type: str, **headers: str) -> httpx.Response:
    return await http.post("/users", content=body, headers={"content-type": content_type, **headers})


# -- charsets -----------------------------------------------------------------------------

# Read as unicode_escape, \u0022 is a quote: the validator saw age 30, the application
# (JSON is UTF-8) a name holding that text and age 5.
SMUGGLED = rb'{"email":"a@example.com","age":5,"name":"n\u0022,\u0022age\u0022:30,\u0022name\u0022:\u0022n"}'


@pytest.mark.parametrize(
    "charset",
    ["unicode_escape", "raw_unicode_escape", "utf-7", "utf-16", "latin-1", "us-ascii", '"<script>x"'],
)
async def test_json_in_another_charset_is_415_without_echo(
    http: httpx.AsyncClient, recorder: Recorder, charset: str
) -> None:
    response = await post(http, SMUGGLED, f"application/json; charset={charset}")
    assert response.status_code == 415, response.text
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert charset.strip('"') not in response.text and "script" not in response.text
    assert recorder.requests == []


@pytest.mark.parametrize("charset", ["utf-8", "UTF-8", '"utf-8"', '"Utf-8"'])
async def test_json_in_utf8_passes_byte_for_byte(
    http: httpx.AsyncClient, recorder: Recorder, charset: str
) -> None:
    response = await post(http, VALID, f"application/json; charset={charset}")
    assert response.status_code == 200, response.text
    assert recorder.requests[0][1] == VALID


async def test_a_repeated_charset_parameter_is_415(http: httpx.AsyncClient, recorder: Recorder) -> None:
    response = await post(http, VALID, "application/json; charset=utf-8; charset=utf-16")
    assert response.status_code == 415
    assert recorder.requests == []


async def test_invalid_utf8_and_a_byte_order_mark_are_400(
    http: httpx.AsyncClient, recorder: Recorder
) -> None:
    bad = await post(http, VALID.replace(b"Ann", b"\xffnn"), "application/json")
    bom = await post(http, b"\xef\xbb\xbf" + VALID, "application/json")
    assert (bad.status_code, bom.status_code) == (400, 400)
    assert bad.json()["code"] == bom.json()["code"] == "MALFORMED_BODY"
    assert recorder.requests == []


async def test_form_bodies_are_utf8_only(http: httpx.AsyncClient, recorder: Recorder) -> None:
    form = "application/x-www-form-urlencoded"
    latin = await post(http, "age=30&name=Zoë".encode("latin-1"), form + "; charset=iso-8859-1")
    escaped = await post(http, b"age=30&name=Zo%EB", form)
    utf8 = await post(http, "age=30&name=Zoë".encode(), form + "; charset=utf-8")
    assert (latin.status_code, escaped.status_code, utf8.status_code) == (415, 400, 200)
    assert [body for _, body in recorder.requests] == ["age=30&name=Zoë".encode()]


def multipart(part_type: str, content: bytes) -> bytes:
    return (
        b'--B\r\nContent-Disposition: form-data; name="age"\r\n\r\n30\r\n'
        + b'--B\r\nContent-Disposition: form-data; name="name"\r\n'
        + f"Content-Type: {part_type}\r\n\r\n".encode()
        + content
        + b"\r\n--B--\r\n"
    )


async def test_multipart_text_parts_are_utf8_only(http: httpx.AsyncClient, recorder: Recorder) -> None:
    ct = "multipart/form-data; boundary=B"
    utf7 = await post(http, multipart("text/plain; charset=utf-7", b"+AGEAZw-"), ct)
    invalid = await post(http, multipart("text/plain", b"\xff"), ct)
    utf8 = await post(http, multipart("text/plain; charset=utf-8", "Zoë".encode()), ct)
    assert (utf7.status_code, invalid.status_code, utf8.status_code) == (415, 400, 200)
    assert "utf-7" not in utf7.text
    assert len(recorder.requests) == 1


async def test_the_demo_no_longer_creates_a_user_aged_5(tmp_path: Path) -> None:
    from bastion.demo.server import build_demo

    demo = build_demo(tmp_path, "memory://", payment_delay=0)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=demo), base_url="http://demo") as client:
        smuggled = await client.post(
            "/users", content=SMUGGLED, headers={"content-type": "application/json; charset=unicode_escape"}
        )
        repeated = await client.post(
            "/users",
            content=b'{"email":"a@example.com","age":5,"name":"n","age":30}',
            headers={"content-type": "application/json"},
        )
    assert (smuggled.status_code, repeated.status_code) == (415, 400), (smuggled.text, repeated.text)


# -- content codings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("coding", "encode"),
    [
        ("gzip", gzip.compress),
        ("x-gzip", gzip.compress),
        ("GZIP", gzip.compress),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data, wbits=-15)),
        ("identity, gzip", gzip.compress),
    ],
)
async def test_a_compressed_body_reaches_the_app_decoded(
    http: httpx.AsyncClient, recorder: Recorder, coding: str, encode: Any
) -> None:
    response = await post(http, encode(VALID), "application/json", **{"content-encoding": coding})
    assert response.status_code == 200, response.text
    headers, body = recorder.requests[0]
    assert body == VALID
    assert b"content-encoding" not in headers
    assert headers[b"content-length"] == str(len(VALID)).encode()


async def test_a_compressed_body_is_validated_decoded(http: httpx.AsyncClient, recorder: Recorder) -> None:
    young = orjson.dumps({"email": "a@example.com", "age": 5, "name": "Ann"})
    response = await post(http, gzip.compress(young), "application/json", **{"content-encoding": "gzip"})
    assert response.status_code == 422
    assert [e["pointer"] for e in response.json()["errors"]] == ["/age"]
    assert recorder.requests == []


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br", "gzip, gzip", "<b>x</b>"])
async def test_a_coding_not_decoded_is_415(http: httpx.AsyncClient, recorder: Recorder, coding: str) -> None:
    response = await post(http, gzip.compress(VALID), "application/json", **{"content-encoding": coding})
    assert response.status_code == 415, response.text
    assert "<b>" not in response.text
    assert recorder.requests == []


async def test_identity_is_no_coding(http: httpx.AsyncClient, recorder: Recorder) -> None:
    response = await post(http, VALID, "application/json", **{"content-encoding": "identity"})
    assert response.status_code == 200
    assert recorder.requests[0][1] == VALID


async def test_a_compression_bomb_is_413(http: httpx.AsyncClient, recorder: Recorder) -> None:
    bomb = gzip.compress(b"[" + b"0," * 5_000_000 + b"0]", 9)
    assert len(bomb) < 16 * 1024
    response = await post(http, bomb, "application/json", **{"content-encoding": "gzip"})
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert recorder.requests == []


@pytest.mark.parametrize(
    "data",
    [b"not gzip at all", gzip.compress(VALID)[:-12], gzip.compress(VALID) + b"trailing", b"\x1f\x8b"],
)
async def test_corrupt_compressed_data_is_400(
    http: httpx.AsyncClient, recorder: Recorder, data: bytes
) -> None:
    response = await post(http, data, "application/json", **{"content-encoding": "gzip"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "MALFORMED_BODY"
    assert recorder.requests == []


# -- duplicate member names ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"email":"a@example.com","age":5,"name":"n","age":30}', "top-level object"),
        (b'{"email":"a@example.com","age":30,"\\u0061ge":5,"name":"n"}', "top-level object"),
        (b'{"email":"a@example.com","age":30,"name":"n","extra":{"k":"1","k":"2"}}', "/extra"),
        (b'{"email":"a@example.com","age":30,"name":"n","age":30}', "top-level object"),
        (b'{"email":"a@example.com","age":30,"name":"\\u003a","name":"x"}', "top-level object"),
    ],
)
async def test_repeated_member_names_are_400(
    http: httpx.AsyncClient, recorder: Recorder, body: bytes, where: str
) -> None:
    response = await post(http, body, "application/json")
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["code"] == "MALFORMED_BODY"
    assert where in problem["detail"]
    assert "30" not in problem["detail"] and '"2"' not in problem["detail"]
    assert recorder.requests == []


@pytest.mark.parametrize(
    "body",
    [
        b'{"email":"a@example.com","age":30,"name":"10:00:00Z","tags":["a:b","\\u003a"]}',
        b'{"email":"a@example.com","age":30,"name":"\\\\u003a","tags":[":"]}',
        b'{"email":"a@example.com","age":30,"name":"n","extra":{"a":"x","b":"x"}}',
    ],
)
async def test_colons_in_strings_are_not_repeated_names(
    http: httpx.AsyncClient, recorder: Recorder, body: bytes
) -> None:
    response = await post(http, body, "application/json")
    assert response.status_code == 200, response.text
    assert recorder.requests[0][1] == body


# -- control characters -------------------------------------------------------------------


def user(**fields: Any) -> dict[str, Any]:
    return {"email": "a@example.com", "age": 30, "name": "n", **fields}


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        (b'{"email":"a@example.com","age":30,"name":"a\\u0000b"}', "/name"),
        (b'{"email":"a@example.com","age":30,"name":"a\\bb"}', "/name"),
        (b'{"email":"a@example.com","age":30,"name":"a\\fb"}', "/name"),
        (b'{"email":"a@example.com","age":30,"name":"a\\u001Fb"}', "/name"),
        (b'{"email":"a@example.com","age":30,"name":"\\\\\\u000b"}', "/name"),
        (b'{"email":"a@example.com","age":30,"name":"n","tags":["ok","\\u0007"]}', "/tags/1"),
        (b'{"email":"a@example.com","age":30,"name":"n","extra":{"k\\u0000":"v"}}', "/extra"),
    ],
)
async def test_control_characters_in_json_strings_are_422(
    http: httpx.AsyncClient, recorder: Recorder, body: bytes, pointer: str
) -> None:
    response = await post(http, body, "application/json")
    assert response.status_code == 422, response.text
    entries = [e for e in response.json()["errors"] if e["code"] == "CONTROL_CHARACTER"]
    assert [(e["in"], e["pointer"]) for e in entries] == [("body", pointer)]
    assert recorder.requests == []


@pytest.mark.parametrize(
    "body",
    [
        orjson.dumps(user(name="tab\tcr\rlf\n")),
        b'{"email":"a@example.com","age":30,"name":"\\\\u0000 \\\\b \\\\f"}',
        orjson.dumps(user(note="\x00\x01 allowed here")),
    ],
)
async def test_allowed_control_characters_pass(
    http: httpx.AsyncClient, recorder: Recorder, body: bytes
) -> None:
    response = await post(http, body, "application/json")
    assert response.status_code == 200, response.text
    assert recorder.requests[0][1] == body


async def test_control_characters_in_parameters_are_422(http: httpx.AsyncClient, recorder: Recorder) -> None:
    query = await http.get("/items/1", params={"q": "a\x00b"})
    encoded = await http.get("/items/1?q=a%1bb")
    allowed = await http.get("/items/1", params={"raw": "a\x00\x01b", "q": "tab\there"})
    header = await http.get("/items/1", headers={"x-tag": "a\x01b"})
    assert [e["code"] for e in query.json()["errors"]] == ["CONTROL_CHARACTER"]
    assert query.json()["errors"][0]["in"] == "query"
    assert query.json()["errors"][0]["name"] == "q"
    assert encoded.status_code == 422
    assert allowed.status_code == 200, allowed.text
    assert header.status_code == 422
    assert header.json()["errors"][0]["in"] == "header"
    assert len(recorder.requests) == 1


# -- huge numbers -------------------------------------------------------------------------

HUGE = "9" * 5000


async def test_huge_integers_in_parameters_are_4xx_not_500(http: httpx.AsyncClient) -> None:
    responses = [
        await http.get(f"/items/{HUGE}"),
        await http.get(f"/items/1?limit={HUGE}"),
        await http.get("/items/1", headers={"x-count": HUGE}),
        await http.get("/items/1", headers={"cookie": f"page={HUGE}"}),
    ]
    for response in responses:
        assert response.status_code == 422, response.text
        assert [e["code"] for e in response.json()["errors"]] == ["TYPE_MISMATCH"]


async def test_huge_integers_in_bodies_are_4xx_not_500(http: httpx.AsyncClient) -> None:
    form = await post(http, f"age={HUGE}&name=n".encode(), "application/x-www-form-urlencoded")
    indexed = await post(
        http, f"age=30&name[{HUGE}]=a&name[1]=b".encode(), "application/x-www-form-urlencoded"
    )
    json_body = await post(
        http, f'{{"email":"a@example.com","age":{HUGE},"name":"n"}}'.encode(), "application/json"
    )
    assert (form.status_code, indexed.status_code, json_body.status_code) == (422, 422, 400)


async def test_a_huge_content_length_is_413_not_500(recorder: Recorder) -> None:
    users = operation(compile_spec(SPEC), "POST", "/users")
    guard = ValidationGuard(recorder, max_body_bytes=64 * 1024)
    ctx = RequestContext("0" * 32, "0" * 16, "r", operation=users)
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/users",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"content-length", HUGE.encode())],
        SCOPE_KEY: ctx,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": VALID, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        raise AssertionError("nothing is sent before the problem")

    with pytest.raises(PayloadTooLarge):
        await guard(scope, receive, send)
    assert recorder.requests == []


async def test_member_names_int_refuses_are_4xx_not_500(http: httpx.AsyncClient) -> None:
    for name in ("\u00b2", "9" * 5000):
        body = b'{"email":"a@example.com","age":30,"name":"n","' + name.encode() + b'":1}'
        response = await post(http, body, "application/json")
        assert response.status_code == 422, response.text
    form = await post(http, b"9" * 5000 + b"=1&age=30", "application/x-www-form-urlencoded")
    assert form.status_code == 422, form.text


# -- through the gateway ------------------------------------------------------------------


@pytest.mark.e2e
def test_the_upstream_gets_the_decoded_body(tmp_path: Path) -> None:
    from tests.gateway.conftest import start_gateway, start_upstream

    upstream = start_upstream(tmp_path)
    try:
        config = {
            "upstream": upstream.base,
            "openapi": str(Path(__file__).parents[1] / "gateway" / "orders-openapi.yaml"),
            "store": "memory://",
            "validation": {"max_body_bytes": 64 * 1024},
        }
        gateway = start_gateway(tmp_path, config)
        try:
            order = gzip.compress(b'{"item": "book", "quantity": 2}')
            headers = {
                "content-type": "application/json",
                "content-encoding": "gzip",
                "idempotency-key": "k1",
            }
            first = httpx.post(gateway.base + "/orders", content=order, headers=headers, timeout=10)
            again = httpx.post(gateway.base + "/orders", content=order, headers=headers, timeout=10)
            bomb = gzip.compress(b'{"item": "' + b"x" * 10_000_000 + b'"}')
            headers["idempotency-key"] = "k2"
            too_large = httpx.post(gateway.base + "/orders", content=bomb, headers=headers, timeout=10)
        finally:
            gateway.stop()
    finally:
        upstream.stop()
    # The upstream parsed the body as JSON: it got the decoded bytes.
    assert first.status_code == 201, first.text
    assert first.json()["item"] == "book"
    assert again.headers.get("idempotent-replayed") == "true"
    assert too_large.status_code == 413
