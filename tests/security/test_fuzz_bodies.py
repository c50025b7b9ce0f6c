"""Fuzzing the body parser and validator with hostile bodies (hypothesis).

Whatever a client sends, bastion answers with the application's 2xx or a 4xx
problem, never a 5xx; a problem never echoes a long piece of the input and stays
within 16 KiB; and whatever bastion let through is, read by a strict UTF-8 JSON
parser from the very bytes the application received, a document that satisfies
the schema, has no duplicate keys and no control characters.
"""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path
from typing import Any

import jsonschema_rs
import orjson
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion import Bastion
from tests.support import client

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "fuzz", "version": "1"},
    "paths": {
        "/things": {
            "post": {
                "operationId": "createThing",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["name", "age"],
                                "additionalProperties": False,
                                "properties": {
                                    "name": {"type": "string", "maxLength": 40},
                                    "age": {"type": "integer", "minimum": 18, "maximum": 150},
                                    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 50},
                                    "meta": {"type": "object", "additionalProperties": {"type": "number"}},
                                },
                            }
                        }
                    },
                },
                "responses": {"201": {"description": "created"}},
            }
        }
    },
}
SCHEMA = SPEC["paths"]["/things"]["post"]["requestBody"]["content"]["application/json"]["schema"]  # type: ignore[index]
CHECK = jsonschema_rs.validator_for(SCHEMA)
CONTROL = {chr(c) for c in range(32)} - {"\t", "\n", "\r"}
MAX_PROBLEM_BYTES = 16 * 1024


class Recorder:
    """The application: keeps the body and headers it received, answers 201."""

    def __init__(self) -> None:
        self.body = b""
        self.headers: dict[bytes, bytes] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        self.body = b"".join(chunks)
        self.headers = dict(scope["headers"])
        await send({"type": "http.response.start", "status": 201, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def spec_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "openapi.yaml"
    path.write_text(yaml.safe_dump(SPEC))
    return path


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    assert len(keys) == len(set(keys)), f"duplicate keys reached the application: {keys}"
    return dict(pairs)


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *_strings(v))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


# Hostile JSON text: objects as lists of pairs (so keys repeat), strings with escapes
# and control characters, numbers of any size, nesting, stray bytes.
_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=60) | st.sampled_from(
    ["name", "age", "tags", "meta", "\x00", "a\x1fb", "\u2028", "\ud7ff", "x" * 300]
)
_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
).map(lambda v: json.dumps(v, ensure_ascii=False))
_huge = st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n)
_escaped = st.sampled_from(['"\\u0000"', '"\\b"', '"\\f"', '"\\u001F"', '"\\\\u0000"', '"\\ud800"', '"\\t"'])


def _object(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    pair = st.tuples(_text.map(lambda k: json.dumps(k, ensure_ascii=False)), children)
    return st.lists(pair, max_size=8).map(lambda ps: "{" + ",".join(f"{k}:{v}" for k, v in ps) + "}")


_json = st.recursive(
    _scalar | _huge | _escaped,
    lambda children: (
        _object(children) | st.lists(children, max_size=6).map(lambda xs: "[" + ",".join(xs) + "]")
    ),
    max_leaves=40,
)
_thing = st.builds(
    lambda name, age, extra: "{" + ",".join([f'"name":{name}', f'"age":{age}', *extra]) + "}",
    _scalar | _escaped,
    st.sampled_from(["18", "30", "17", "1e2", "30.0", "-0", "999999999999999999999"]) | _huge,
    st.lists(
        st.tuples(st.sampled_from(['"name"', '"age"', '"tags"', '"meta"', '"x"']), _json).map(
            lambda p: f"{p[0]}:{p[1]}"
        ),
        max_size=4,
    ),
)
_body = st.one_of(
    _thing.map(lambda s: s.encode("utf-8", "surrogatepass")),
    _json.map(lambda s: s.encode("utf-8", "surrogatepass")),
    st.binary(max_size=200),
    _thing.map(lambda s: s.encode("utf-16")),
    _thing.map(lambda s: b"\xef\xbb\xbf" + s.encode("utf-8", "surrogatepass")),
)
_content_type = st.sampled_from(
    [
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=UTF-8",
        'application/json; charset="utf-8"',
        "application/json; charset=unicode_escape",
        "application/json; charset=utf-7",
        "application/json; charset=utf-16",
        "application/json; charset=<script>alert(1)</script>",
        "application/json; charset=latin-1",
        "text/plain",
        "application/json;;",
        "application/json; charset",
    ]
)
_encoding = st.sampled_from([None, "identity", "gzip", "deflate", "br", "x-unknown", "gzip, gzip"])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=_body, content_type=_content_type, encoding=_encoding)
async def test_hostile_bodies(spec_path: Path, body: bytes, content_type: str, encoding: str | None) -> None:
    recorder = Recorder()
    app = Bastion(
        recorder, {"store": "memory://", "openapi": str(spec_path), "logging": {"access": False}}, env={}
    )
    headers = {"content-type": content_type}
    if encoding is not None:
        headers["content-encoding"] = encoding
    async with client(app) as http:
        response = await http.post("/things", content=body, headers=headers)
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert response.headers["content-type"].startswith("application/problem+json")
        assert len(response.content) <= MAX_PROBLEM_BYTES
        problem = orjson.loads(response.content)
        assert problem["code"]
        assert "<script>" not in response.text
        assert "x" * 200 not in response.text
        return
    # Admitted: read what the application got as a strict UTF-8 JSON parser would.
    assert b"content-encoding" not in recorder.headers or recorder.headers[b"content-encoding"] == b"identity"
    value = json.loads(recorder.body.decode("utf-8"), object_pairs_hook=_no_duplicates)
    assert CHECK.is_valid(value), f"the application received a document the schema refuses: {value!r}"
    assert not any(CONTROL & set(s) for s in _strings(value)), value


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: "{" + ",".join(f'"k{i}":1' for i in range(n)) + "}", id="unknown keys"),
        pytest.param(
            lambda n: '{"name":"a","age":20,"tags":[' + ",".join('"\\u0000"' for _ in range(n)) + "]}",
            id="control escapes",
        ),
        pytest.param(lambda n: "{" + ",".join('"name":"a"' for _ in range(n)) + "}", id="duplicate keys"),
        pytest.param(
            lambda n: '{"name":"a","age":20,"meta":{' + ",".join(f'"m{i}":"x"' for i in range(n)) + "}}",
            id="wrong types",
        ),
    ],
)
async def test_hostile_bodies_cost_linear_time(spec_path: Path, make: Any) -> None:
    """Eight times the input costs far less than 64 times the time (best of five each).

    CPU time of this process, not the clock: other processes on a busy machine take the
    CPU away for a while, which the clock counts and this does not. And without the
    collector, whose full passes cost what the whole test session holds.
    """
    app = Bastion(
        Recorder(),
        {
            "store": "memory://",
            "openapi": str(spec_path),
            "logging": {"access": False},
            "validation": {"max_body_bytes": 4 * 1024 * 1024},
        },
        env={},
    )

    async def best(n: int) -> float:
        body = make(n).encode()
        times = []
        async with client(app) as http:
            for _ in range(5):
                # The collector off while timing: a full collection walks everything the test
                # session has allocated, which would measure the session, not this request.
                gc.collect()
                gc.disable()
                try:
                    start = time.process_time()
                    response = await http.post(
                        "/things", content=body, headers={"content-type": "application/json"}
                    )
                    times.append(time.process_time() - start)
                finally:
                    gc.enable()
                assert response.status_code < 500
                assert len(response.content) <= MAX_PROBLEM_BYTES
        return min(times)

    await best(100)  # warm up
    small, large = await best(5_000), await best(40_000)
    # Linear would be 8x; quadratic 64x. Allow generous noise above linear.
    assert large < small * 24 + 0.05, f"5,000 items: {small:.4f} s, 40,000 items: {large:.4f} s"
