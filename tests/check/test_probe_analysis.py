"""The probe's sans-I/O parts: leak patterns, problem shape, headers, payloads derived from schemas."""

from __future__ import annotations

from typing import Any

import jsonschema_rs
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.check.probes.analysis import (
    is_replay,
    leaks,
    problem_issues,
    remaining_quota,
    trace_issue,
)
from bastion.check.probes.client import Exchange, retry_after_seconds
from bastion.check.probes.payloads import SchemaSampler

LEAKS = {
    "python": (
        'Traceback (most recent call last):\n  File "/app/main.py", line 12, in create\n'
        "    order = body['item']\nKeyError: 'item'\n"
    ),
    "node": (
        "TypeError: Cannot read properties of undefined (reading 'id')\n"
        "    at createOrder (/srv/app/routes/orders.js:42:17)\n"
        "    at Layer.handle (/srv/node_modules/x.js:95:5)"
    ),
    "java": (
        "java.lang.NullPointerException: null\n"
        "\tat com.example.orders.OrderService.create(OrderService.java:57)"
    ),
    "dotnet": (
        "System.InvalidOperationException: Sequence contains no elements\n"
        "   at Orders.Api.OrderController.Create(OrderDto dto) in C:\\src\\Orders\\OrderController.cs:line 41"
    ),
    "go": "panic: runtime error: invalid memory address\n\ngoroutine 17 [running]:\nmain.handler(...)",
    "php": (
        "PHP Fatal error:  Uncaught Error: Call to undefined function foo() in /var/www/index.php on line 7"
    ),
    "ruby": (
        "NoMethodError (undefined method `id' for nil:NilClass):\n"
        "  app/controllers/orders_controller.rb:12:in `create'"
    ),
    "sql": "ERROR: duplicate key; statement: INSERT INTO orders (id, item) VALUES ($1, $2)",
    "sql-error": 'psycopg2.errors.SyntaxError: syntax error at or near "FROM"',
}

CLEAN = (
    '{"type":"https://bastion.dev/errors/validation-failed","title":"Request validation failed",'
    '"status":422,"detail":"1 problem in the request body","code":"VALIDATION_FAILED",'
    '"errors":[{"code":"REQUIRED","field":"item","detail":"is required"}]}',
    "Not Found",
    "Select an item from the list, then update your order.",
    '{"error": "The server could not handle the exception; retry later."}',
)


@pytest.mark.parametrize("platform", sorted(LEAKS))
def test_leak_patterns_catch_each_platform(platform: str) -> None:
    assert leaks(LEAKS[platform]), platform


@pytest.mark.parametrize("text", CLEAN)
def test_leak_patterns_leave_ordinary_bodies_alone(text: str) -> None:
    assert leaks(text) == []


def exchange(status: int, body: Any, headers: dict[str, str] | None = None) -> Exchange:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return Exchange("GET", "/x", status, list((headers or {}).items()), raw)


def test_problem_shape() -> None:
    good = exchange(
        404,
        {"type": "about:blank", "title": "Not found", "status": 404},
        {"Content-Type": "application/problem+json"},
    )
    assert problem_issues(good) == []
    wrong_status = exchange(
        404, {"type": "t", "title": "t", "status": 400}, {"Content-Type": "application/problem+json"}
    )
    assert any("differs" in issue for issue in problem_issues(wrong_status))
    plain = exchange(404, b"Not Found", {"Content-Type": "text/plain"})
    assert len(problem_issues(plain)) == 2


def test_trace_id_must_match_a_header() -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    body = {"type": "t", "title": "t", "status": 400, "trace_id": trace}
    parent = {"traceparent": f"00-{trace}-00f067aa0ba902b7-01"}
    assert trace_issue(exchange(400, body, parent)) is None
    assert trace_issue(exchange(400, body, {"X-Request-ID": trace})) is None
    assert "matches no response header" in (trace_issue(exchange(400, body, {"X-Request-ID": "other"})) or "")
    assert trace_issue(exchange(400, {"type": "t"}, parent)) == "the body carries no trace_id"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"RateLimit": '"per-client";r=7;t=30'}, 7),
        ({"RateLimit": "limit=10, remaining=3, reset=5"}, 3),
        ({"X-RateLimit-Remaining": "0"}, 0),
        ({"RateLimit-Remaining": "12"}, 12),
        ({"Content-Type": "text/plain"}, None),
    ],
)
def test_remaining_quota(headers: dict[str, str], expected: int | None) -> None:
    assert remaining_quota(exchange(200, b"", headers)) == expected


def test_retry_after_and_replay_marker() -> None:
    assert retry_after_seconds("3") == 3
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_seconds("soon") is None
    assert retry_after_seconds(None) is None
    assert is_replay(exchange(201, b"", {"Idempotent-Replayed": "true"}))
    assert not is_replay(exchange(201, b""))


_field = st.sampled_from(
    [
        {"type": "string", "maxLength": 20},
        {"type": "string", "minLength": 3, "maxLength": 5},
        {"type": "string", "format": "email"},
        {"type": "integer", "minimum": 1, "maximum": 100},
        {"type": "integer", "minimum": 10},
        {"type": "number", "maximum": -5},
        {"type": "boolean"},
        {"type": "string", "enum": ["a", "b"]},
        {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 9}, "maxItems": 3},
    ]
)


@settings(max_examples=100, deadline=None)
@given(
    props=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), _field, min_size=1, max_size=5),
    data=st.data(),
    closed=st.booleans(),
)
def test_samples_are_valid_and_variants_are_not(
    props: dict[str, Any], data: st.DataObject, closed: bool
) -> None:
    required = data.draw(st.lists(st.sampled_from(sorted(props)), unique=True))
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if closed:
        schema["additionalProperties"] = False
    validator = jsonschema_rs.validator_for(schema)
    sampler = SchemaSampler(None)
    valid = sampler.sample(schema)
    assert validator.is_valid(valid), valid
    changed = sampler.changed(schema, valid)
    assert changed != valid
    for variant in sampler.variants(schema):
        assert not validator.is_valid(variant.body), variant
        assert variant.field in props or variant.kind == "unknown-field"


def test_sql_select_fragment_is_caught() -> None:
    assert leaks("sqlalchemy error: [SQL: SELECT orders.id, orders.item FROM orders WHERE orders.id = ?]")


@pytest.mark.parametrize(
    "pattern",
    [r"^[A-Z0-9-]{3,32}$", r"^ord_[a-z]+$", r"^\d{4}-\d{2}-\d{2}$", r"^(foo|bar)+$", r"^\w+@\w+\.com$"],
)
def test_sampled_strings_match_their_pattern(pattern: str) -> None:
    import re

    from bastion.check.probes.payloads import sample_pattern

    text = sample_pattern(pattern)
    assert text is not None
    assert re.search(pattern, text)
