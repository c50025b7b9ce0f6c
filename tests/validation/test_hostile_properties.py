"""Property tests: any client input ends in error entries or a 4xx problem, never an exception.

Arbitrary text in every parameter location and arbitrary bytes as a JSON, form
or multipart body go through the operation check; the only exception allowed
out is a :class:`~bastion.problems.Problem` with a 4xx status.
"""

from __future__ import annotations

import gzip
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.problems import MalformedBody, PayloadTooLarge, Problem
from bastion.validation.bodies import decode_content
from tests.validation.helpers import compile_spec, operation

SCALARS = {
    "type": "object",
    "properties": {
        "n": {"type": "integer"},
        "x": {"type": "number"},
        "b": {"type": "boolean"},
        "s": {"type": "string", "maxLength": 5},
        "list": {"type": "array", "items": {"type": "integer"}},
        "obj": {"type": "object", "properties": {"n": {"type": "integer"}}},
    },
}


def parameters(location: str) -> list[dict[str, Any]]:
    found = [
        {"name": "n", "in": location, "required": True, "schema": {"type": "integer"}},
        {"name": "x", "in": location, "schema": {"type": ["number", "null"]}},
        {"name": "b", "in": location, "schema": {"type": "boolean"}},
        {"name": "list", "in": location, "schema": {"type": "array", "items": {"type": "integer"}}},
        {"name": "obj", "in": location, "schema": SCALARS},
    ]
    if location == "query":
        found.append({"name": "deep", "in": "query", "style": "deepObject", "schema": SCALARS})
    return found


SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "t", "version": "1"},
    "paths": {
        "/p/{n}/{x}/{b}/{list}/{obj}": {"get": {"parameters": parameters("path"), "responses": {"200": {}}}},
        "/q": {
            "get": {
                "parameters": parameters("query") + parameters("header") + parameters("cookie"),
                "responses": {"200": {}},
            },
            "post": {
                "requestBody": {
                    "content": {
                        "application/json": {"schema": SCALARS},
                        "application/x-www-form-urlencoded": {"schema": SCALARS},
                        "multipart/form-data": {"schema": SCALARS},
                    }
                },
                "responses": {"200": {}},
            },
        },
    },
}
API = compile_spec(SPEC)
PATH = operation(API, "GET", "/p/{n}/{x}/{b}/{list}/{obj}")
QUERY = operation(API, "GET", "/q")
BODY = operation(API, "POST", "/q")
# Digits long enough to pass Python's int() limit, among other text.
HUGE = ["9" * 4301, "-" + "9" * 5000, "9" * 5000 + ".5", "1" + "0" * 5000 + "e9"]
CHARACTERS = st.characters()
TEXT = st.one_of(
    st.text(CHARACTERS, max_size=50), st.sampled_from([*HUGE, "1e999", "-0", "NaN", "[1,2", "{"])
)


def total(call: Any) -> None:
    """Run a check; a problem it raises must be a 4xx."""
    status = 200
    try:
        result = call()
    except Problem as problem:
        status = problem.status
    else:
        assert isinstance(result, list)
    assert status < 500


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({name: TEXT for name in ("n", "x", "b", "list", "obj")}))
def test_any_path_parameters(values: dict[str, str]) -> None:
    total(lambda: PATH.check(values, b"", []))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=6000) | TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_query_string(query: bytes) -> None:
    total(lambda: QUERY.check({}, query, []))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.dictionaries(st.sampled_from(["n", "x", "b", "list", "obj"]), TEXT),
    st.text(),
    TEXT,
)
def test_any_headers_and_cookies(headers: dict[str, str], cookie_name: str, cookie_value: str) -> None:
    raw = [(k.encode(), v.encode("utf-8", "surrogatepass")) for k, v in headers.items()]
    raw.append(
        (b"cookie", f"{cookie_name}={cookie_value}; n={cookie_value}".encode("utf-8", "surrogatepass"))
    )
    total(lambda: QUERY.check({}, b"", raw))


BODY_TYPES = [
    b"application/json",
    b"application/json; charset=utf-16",
    b"application/x-www-form-urlencoded",
    b"multipart/form-data; boundary=B",
]


def multipart_of(parts: list[tuple[str, bytes]]) -> bytes:
    out = b""
    for name, content in parts:
        out += (
            b'--B\r\nContent-Disposition: form-data; name="'
            + name.encode()
            + b'"\r\n\r\n'
            + content
            + b"\r\n"
        )
    return out + b"--B--\r\n"


BODIES = st.one_of(
    st.binary(max_size=2000),
    TEXT.map(lambda t: t.encode("utf-8", "surrogatepass")),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(CHARACTERS, max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    ).map(lambda v: repr(v).replace("'", '"').encode("utf-8", "surrogatepass")),
    st.lists(
        st.tuples(st.sampled_from(["n", "list", "obj[n]", "list[0]"]), st.binary(max_size=50)), max_size=5
    ).map(multipart_of),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(BODIES, st.sampled_from(BODY_TYPES))
def test_any_body(body: bytes, content_type: bytes) -> None:
    total(lambda: BODY.check({}, b"", [(b"content-type", content_type)], body, content_type))


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(["gzip", "deflate"]))
def test_any_compressed_data(data: bytes, coding: str) -> None:
    total(lambda: [decode_content(data, coding, 10_000)])


def test_a_bomb_never_allocates_past_the_limit() -> None:
    limit = 256 * 1024
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), 9)
    tracemalloc.start()
    try:
        with pytest.raises(PayloadTooLarge):
            decode_content(bomb, "gzip", limit)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 3 * limit, peak


def test_a_stream_cut_short_is_malformed() -> None:
    with pytest.raises(MalformedBody):
        decode_content(gzip.compress(b"x" * 1000)[:20], "gzip", 10_000)
    assert decode_content(gzip.compress(b"x" * 1000), "x-gzip", 1000) == b"x" * 1000
