"""Integers beyond 64 bits are checked as the application reads them: exactly.

orjson reads ``18446744073709551617`` as the float ``2**64``; a maximum of ``2**64``
would then let through a number above it that every exact parser reads as such.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion import exactjson
from bastion.validation.bodies import parse_json
from tests.support import client
from tests.validation.helpers import behind_bastion, write_spec

LIMIT = 2**64

SPEC = {
    "openapi": "3.1.0",
    "info": {"title": "big", "version": "1"},
    "paths": {
        "/amounts": {
            "post": {
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "n": {"type": "integer", "maximum": LIMIT, "minimum": -LIMIT},
                                    "q": {"type": "integer", "multipleOf": 3},
                                },
                            }
                        }
                    },
                },
                "parameters": [
                    {
                        "name": "filter",
                        "in": "query",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"n": {"type": "integer", "maximum": LIMIT}},
                                }
                            }
                        },
                    }
                ],
                "responses": {"200": {"description": "ok"}},
            }
        }
    },
}


@given(st.integers(min_value=-(10**40), max_value=10**40))
def test_every_integer_is_read_exactly(number: int) -> None:
    assert parse_json(json.dumps({"n": number, "s": "12345678901234567890"}).encode(), 64) == {
        "n": number,
        "s": "12345678901234567890",
    }


def test_what_orjson_refuses_is_still_refused_when_digits_are_long() -> None:
    with pytest.raises(exactjson.JSONDecodeError):
        exactjson.loads(b'{"n": 12345678901234567890123, "x": NaN}')
    with pytest.raises(exactjson.JSONDecodeError):
        exactjson.loads(b'["\\ud800", 12345678901234567890123]')


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b'{"n": 18446744073709551616}', 200),
        (b'{"n": 18446744073709551617}', 422),
        (b'{"n": -18446744073709551617}', 422),
        (b'{"n": 100000000000000000000000000001}', 422),
        (b'{"q": 100000000000000000000000000001}', 422),  # not a multiple of 3
        (b'{"q": 100000000000000000000000000002}', 200),
    ],
)
async def test_a_number_above_the_maximum_is_refused_however_long(
    tmp_path: Path, body: bytes, status: int
) -> None:
    app, _ = behind_bastion(write_spec(tmp_path, SPEC))
    async with client(app) as http:
        response = await http.post("/amounts", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text


async def test_a_json_query_parameter_is_read_exactly_too(tmp_path: Path) -> None:
    app, _ = behind_bastion(write_spec(tmp_path, SPEC))
    async with client(app) as http:
        over = await http.post("/amounts", params={"filter": '{"n": 18446744073709551617}'}, json={})
        at = await http.post("/amounts", params={"filter": '{"n": 18446744073709551616}'}, json={})
    assert (over.status_code, at.status_code) == (422, 200)
