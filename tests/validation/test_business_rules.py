"""``x-bastion-rules``: CEL business rules on schemas, compiled with the description, evaluated on bodies
that passed their schema; the same in the middleware and in the gateway."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bastion.demo
from bastion import Bastion
from bastion.check.lint import lint_text
from bastion.demo.app import create_demo_app
from bastion.validation.openapi import OpenAPIError
from bastion.validation.rules import MAX_ITERATIONS, RuleCompiler, cost_problem
from tests.validation.helpers import behind_bastion, check_body, client, compile_spec, spec_with, write_spec

DATE = {"type": "string", "format": "date"}
DATE_TIME = {"type": "string", "format": "date-time"}
INT = {"type": "integer"}
STR = {"type": "string"}
ITEMS = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"sku": STR, "quantity": INT, "primary": {"type": "boolean"}, "price": INT},
    },
}

#: (rule, properties of the object it is on, a value that passes, a value that fails, what the failure says)
SUITE: list[tuple[str, dict[str, Any], Any, Any, str]] = [
    (
        "self.start < self.end",
        {"start": DATE, "end": DATE},
        {"start": "2024-05-01", "end": "2024-05-03"},
        {"start": "2024-05-03", "end": "2024-05-01"},
        "",
    ),
    (
        "self.start < self.end",
        {"start": DATE, "end": DATE},
        {"start": "2024-12-31", "end": "2025-01-01"},
        {"start": "2024-05-01", "end": "2024-05-01"},
        "",
    ),
    (
        "timestamp(self.start) < timestamp(self.end)",
        {"start": DATE_TIME, "end": DATE_TIME},
        {"start": "2024-05-01T10:00:00+02:00", "end": "2024-05-01T09:00:00Z"},
        {"start": "2024-05-01T10:00:00Z", "end": "2024-05-01T09:00:00+02:00"},
        "",
    ),
    (
        "timestamp(self.end) - timestamp(self.start) <= duration('720h')",
        {"start": DATE_TIME, "end": DATE_TIME},
        {"start": "2024-05-01T00:00:00Z", "end": "2024-05-20T00:00:00Z"},
        {"start": "2024-05-01T00:00:00Z", "end": "2024-06-20T00:00:00Z"},
        "",
    ),
    (
        "timestamp(self.end + 'T00:00:00Z') - timestamp(self.start + 'T00:00:00Z') <= duration('168h')",
        {"start": DATE, "end": DATE},
        {"start": "2024-05-01", "end": "2024-05-08"},
        {"start": "2024-05-01", "end": "2024-05-09"},
        "",
    ),
    (
        "!has(self.coupon) || self.amount >= 1000",
        {"amount": INT, "coupon": STR},
        {"amount": 10},
        {"amount": 10, "coupon": "SPRING"},
        "",
    ),
    ("has(self.email) || has(self.phone)", {"email": STR, "phone": STR}, {"phone": "1"}, {}, ""),
    (
        "self.items.all(i, i.quantity <= 10)",
        {"items": ITEMS},
        {"items": [{"quantity": 10}]},
        {"items": [{"quantity": 1}, {"quantity": 11}]},
        "",
    ),
    (
        "self.items.exists(i, i.sku == 'GIFT')",
        {"items": ITEMS},
        {"items": [{"sku": "A"}, {"sku": "GIFT"}]},
        {"items": [{"sku": "A"}]},
        "",
    ),
    (
        "self.items.exists_one(i, i.primary)",
        {"items": ITEMS},
        {"items": [{"primary": True}, {"primary": False}]},
        {"items": [{"primary": True}, {"primary": True}]},
        "",
    ),
    (
        "size(self.items.filter(i, i.quantity > 5)) <= 1",
        {"items": ITEMS},
        {"items": [{"quantity": 6}, {"quantity": 1}]},
        {"items": [{"quantity": 6}, {"quantity": 7}]},
        "",
    ),
    (
        "self.items.map(i, i.quantity).all(q, q > 0)",
        {"items": ITEMS},
        {"items": [{"quantity": 1}]},
        {"items": [{"quantity": 0}]},
        "",
    ),
    (
        "self.tags.all(t, t.startsWith('x-'))",
        {"tags": {"type": "array", "items": STR}},
        {"tags": ["x-a"]},
        {"tags": ["x-a", "b"]},
        "",
    ),
    ("self.currency in ['EUR', 'USD']", {"currency": STR}, {"currency": "EUR"}, {"currency": "JPY"}, ""),
    ("self.code.matches('^[A-Z]{3}-[0-9]+$')", {"code": STR}, {"code": "ABC-12"}, {"code": "abc-12"}, ""),
    ("!self.name.contains('@')", {"name": STR}, {"name": "ada"}, {"name": "a@b"}, ""),
    ("self.name.endsWith('.pdf')", {"name": STR}, {"name": "a.pdf"}, {"name": "a.exe"}, ""),
    ("size(self.name) <= 5", {"name": STR}, {"name": "ada"}, {"name": "lovelace"}, ""),
    ("self.min <= self.max", {"min": INT, "max": INT}, {"min": 1, "max": 1}, {"min": 2, "max": 1}, ""),
    (
        "self.price * self.quantity <= 100000",
        {"price": INT, "quantity": INT},
        {"price": 100, "quantity": 3},
        {"price": 100000, "quantity": 3},
        "",
    ),
    ("double(self.amount) / 100.0 < 50.0", {"amount": INT}, {"amount": 4999}, {"amount": 5000}, ""),
    ("self.amount % 5 == 0", {"amount": INT}, {"amount": 10}, {"amount": 11}, ""),
    (
        "size(self.items) == self.count",
        {"items": ITEMS, "count": INT},
        {"items": [{}], "count": 1},
        {"items": [{}], "count": 2},
        "",
    ),
    (
        "self.role != 'admin' || self.level >= 5",
        {"role": STR, "level": INT},
        {"role": "admin", "level": 5},
        {"role": "admin", "level": 1},
        "",
    ),
    (
        "self.ratio >= 0.0 && self.ratio <= 1.0",
        {"ratio": {"type": "number"}},
        {"ratio": 0.5},
        {"ratio": 1.5},
        "",
    ),
    (
        "self.nested.inner < self.limit",
        {"nested": {"type": "object", "properties": {"inner": INT}}, "limit": INT},
        {"nested": {"inner": 1}, "limit": 2},
        {"nested": {"inner": 3}, "limit": 2},
        "",
    ),
    (
        "self.items.all(i, i.quantity <= self.limit)",
        {"items": ITEMS, "limit": INT},
        {"items": [{"quantity": 2}], "limit": 2},
        {"items": [{"quantity": 3}], "limit": 2},
        "",
    ),
    ("type(self.value) == string", {"value": {}}, {"value": "x"}, {"value": 1}, ""),
    ("self.flag == true", {"flag": {"type": "boolean"}}, {"flag": True}, {"flag": False}, ""),
    # Runtime errors are failed rules with a reason, never a 500.
    ("self.a / self.b >= 1", {"a": INT, "b": INT}, {"a": 2, "b": 1}, {"a": 1, "b": 0}, "divides by zero"),
    ("self.big + 1 > 0", {"big": INT}, {"big": 1}, {"big": 9223372036854775807}, "an integer overflows"),
    ("self.value > 0", {"value": {}}, {"value": 5}, {"value": "x"}, "a type the rule does not handle"),
    ("self.missing == 1", {"missing": INT}, {"missing": 1}, {}, "a field it reads is missing"),
    (
        "self.items[0].quantity > 0",
        {"items": ITEMS},
        {"items": [{"quantity": 1}]},
        {"items": []},
        "past the end of a list",
    ),
    (
        "timestamp(self.when) > timestamp('2000-01-01T00:00:00Z')",
        {"when": STR},
        {"when": "2024-01-01T00:00:00Z"},
        {"when": "yesterday"},
        "not a timestamp",
    ),
]


def suite_spec(path: str = "/upload") -> dict[str, Any]:
    """``POST path``: a body whose member ``rN`` carries the suite's rule N."""
    schemas = {
        f"R{n}": {
            "type": "object",
            "properties": props,
            "x-bastion-rules": [{"rule": rule, "message": f"breaks rule {n}", "code": f"RULE_{n}"}],
        }
        for n, (rule, props, _, _, _) in enumerate(SUITE)
    }
    body = {
        "type": "object",
        "properties": {f"r{n}": {"$ref": f"#/components/schemas/R{n}"} for n in range(len(SUITE))},
    }
    return spec_with(body=body, schemas=schemas, path=path)


CASES = [(n, good, bad, reason) for n, (_, _, good, bad, reason) in enumerate(SUITE)]


def expected_failure(n: int, reason: str) -> dict[str, Any]:
    detail = f"breaks rule {n}" + (" (the rule could not be evaluated: " if reason else "")
    return {
        "code": f"RULE_{n}",
        "in": "body",
        "pointer": f"/r{n}",
        "field": f"r{n}",
        "rule": SUITE[n][0],
        "detail": detail,
    }


def assert_failure(entries: list[dict[str, Any]], n: int, reason: str) -> None:
    assert len(entries) == 1, entries
    entry = entries[0]
    expected = expected_failure(n, reason)
    assert {k: entry[k] for k in ("code", "in", "pointer", "field", "rule")} == {
        k: expected[k] for k in ("code", "in", "pointer", "field", "rule")
    }
    assert entry["detail"].startswith(expected["detail"])
    assert reason in entry["detail"]


def test_the_suite_has_at_least_thirty_rules() -> None:
    assert len(SUITE) >= 30


@pytest.fixture(scope="module")
def suite_api() -> Any:
    return compile_spec(suite_spec())


@pytest.mark.parametrize(("n", "good", "bad", "reason"), CASES, ids=[r for r, *_ in SUITE])
def test_rule_suite_in_process(suite_api: Any, n: int, good: Any, bad: Any, reason: str) -> None:
    assert check_body(suite_api, {f"r{n}": good}, template="/upload") == []
    assert_failure(check_body(suite_api, {f"r{n}": bad}, template="/upload"), n, reason)


async def test_rule_suite_through_the_middleware(tmp_path: Path) -> None:
    app, _ = behind_bastion(write_spec(tmp_path, suite_spec()))
    async with client(app) as http:
        for n, good, bad, reason in CASES:
            passed = await http.post("/upload", json={f"r{n}": good})
            assert passed.status_code == 200, (SUITE[n][0], passed.text)
            failed = await http.post("/upload", json={f"r{n}": bad})
            assert failed.status_code == 422, (SUITE[n][0], failed.text)
            assert_failure(failed.json()["errors"], n, reason)


# -- the demo -------------------------------------------------------------------------------------------


async def test_the_demo_refuses_a_booking_that_ends_before_it_starts(tmp_path: Path) -> None:
    spec = Path(bastion.demo.__file__).parent / "openapi.yaml"
    app = Bastion(create_demo_app(tmp_path), {"openapi": str(spec), "store": "memory://"}, env={})
    async with client(app) as http:
        refused = await http.post(
            "/bookings", json={"room": "R1", "start": "2024-05-03", "end": "2024-05-01"}
        )
        made = await http.post("/bookings", json={"room": "R1", "start": "2024-05-01", "end": "2024-05-03"})
        mistyped = await http.post("/bookings", json={"room": "R1", "start": "2024-05-01", "end": "soon"})
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {
            "code": "ENDS_BEFORE_START",
            "in": "body",
            "pointer": "/end",
            "field": "end",
            "detail": "must be after the start date",
            "rule": "self.start < self.end",
        }
    ]
    assert made.status_code == 201, made.text
    assert made.json()["end"] == "2024-05-03"
    # A value that breaks the schema is reported as such; the rule never sees it.
    assert [e["code"] for e in mistyped.json()["errors"]] == ["INVALID_FORMAT"]


# -- where rules apply -----------------------------------------------------------------------------------


def rule(source: str, **extra: Any) -> list[dict[str, Any]]:
    return [{"rule": source, "message": "breaks the rule", **extra}]


def test_rules_apply_to_each_instance_through_items_properties_ref_allof_and_maps() -> None:
    line = {
        "type": "object",
        "properties": {"q": INT, "max": INT},
        "x-bastion-rules": rule("self.q <= self.max"),
    }
    spec = spec_with(
        body={
            "type": "object",
            "properties": {
                "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}},
                "byName": {"type": "object", "additionalProperties": {"$ref": "#/components/schemas/Line"}},
                "pair": {"type": "array", "prefixItems": [{"$ref": "#/components/schemas/Line"}, INT]},
                "both": {
                    "allOf": [{"$ref": "#/components/schemas/Line"}, {"x-bastion-rules": rule("self.q > 0")}]
                },
            },
        },
        schemas={"Line": line},
    )
    api = compile_spec(spec)
    ok = {"q": 1, "max": 2}
    bad = {"q": 3, "max": 2}
    assert check_body(api, {"lines": [ok, ok], "byName": {"a": ok}, "pair": [ok, 99], "both": ok}) == []
    entries = check_body(
        api,
        {
            "lines": [ok, bad, bad],
            "byName": {"a": ok, "b~/": bad},
            "pair": [bad, 5],
            "both": {"q": 0, "max": -1},
        },
    )
    assert [e["pointer"] for e in entries] == [
        "/both",
        "/both",
        "/byName/b~0~1",
        "/lines/1",
        "/lines/2",
        "/pair/0",
    ]


def test_a_recursive_schema_applies_its_rule_at_every_level() -> None:
    node = {
        "type": "object",
        "properties": {
            "size": INT,
            "children": {"type": "array", "items": {"$ref": "#/components/schemas/Node"}},
        },
        "x-bastion-rules": rule("self.size >= 0"),
    }
    api = compile_spec(spec_with(body={"$ref": "#/components/schemas/Node"}, schemas={"Node": node}))
    tree = {"size": 1, "children": [{"size": -1, "children": [{"size": -2}]}, {"size": 0}]}
    assert [e["pointer"] for e in check_body(api, tree)] == ["/children/0", "/children/0/children/0"]


def test_field_names_a_place_below_the_value() -> None:
    body = {
        "type": "object",
        "properties": {"a b": INT},
        "x-bastion-rules": rule("self['a b'] > 0", field="/a b"),
    }
    [entry] = check_body(compile_spec(spec_with(body=body)), {"a b": 0})
    assert (entry["pointer"], entry["field"], entry["code"]) == ("/a b", "a b", "RULE_FAILED")


def test_rules_wait_for_the_schema() -> None:
    body = {
        "type": "object",
        "properties": {"n": INT, "m": {"type": "integer", "minimum": 0}},
        "x-bastion-rules": rule("self.n > 5"),
    }
    api = compile_spec(spec_with(body=body))
    # The schema fails: only its errors, the rule does not run on a body that broke it.
    assert [e["code"] for e in check_body(api, {"n": 1, "m": -1})] == ["OUT_OF_RANGE"]
    assert [e["code"] for e in check_body(api, {"n": 1, "m": 1})] == ["RULE_FAILED"]


def test_failures_are_capped_at_max_errors() -> None:
    item = {"type": "integer", "x-bastion-rules": rule("self > 0")}
    api = compile_spec(spec_with(body={"type": "array", "items": item}), max_errors=5)
    entries = check_body(api, [0] * 100)
    assert [e["pointer"] for e in entries] == ["/0", "/1", "/2", "/3", "/4"]


def test_an_unused_schema_and_the_whole_plan_are_skipped_when_no_rule_applies() -> None:
    api = compile_spec(
        spec_with(
            body={"type": "object", "properties": {"a": INT}},
            schemas={"Unused": {"type": "object", "x-bastion-rules": rule("self.x > 0")}},
        )
    )
    assert all(m.rules is None for op in api.operations for m in op.media)


# -- compile errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entries", "pointer", "words"),
    [
        (rule("self.start <"), "/x-bastion-rules/0/rule", "does not compile: at 1:"),
        (rule("self.a + "), "/x-bastion-rules/0/rule", "does not compile"),
        (rule("size(self.name)"), "/x-bastion-rules/0/rule", "gives int, not a boolean"),
        (rule("1 + 'a' == 2"), "/x-bastion-rules/0/rule", "does not compile"),
        (rule("self.a > 0", code="lower"), "/x-bastion-rules/0/code", "UPPER_SNAKE_CASE"),
        (rule("self.a > 0", field="end"), "/x-bastion-rules/0/field", "JSON pointer"),
        (rule("self.a > 0", severity="high"), "/x-bastion-rules/0", "not severity"),
        ([{"message": "x"}], "/x-bastion-rules/0", "needs a `rule`"),
        ({"rule": "self.a > 0"}, "/x-bastion-rules", "must be a list"),
        (rule("self.a > 0 " + "&& true " * 200), "/x-bastion-rules/0/rule", "at most 1000 characters"),
    ],
)
def test_a_rule_that_cannot_compile_stops_start_up(entries: Any, pointer: str, words: str) -> None:
    schema = {"type": "object", "properties": {"a": INT, "name": STR}, "x-bastion-rules": entries}
    with pytest.raises(OpenAPIError) as caught:
        compile_spec(spec_with(body={"$ref": "#/components/schemas/Thing"}, schemas={"Thing": schema}))
    assert caught.value.pointer == "/components/schemas/Thing" + pointer
    assert words in caught.value.reason
    if isinstance(entries, list) and "rule" in entries[0] and "does not compile" in words:
        assert repr(entries[0]["rule"]) in caught.value.reason  # the rule is named


@pytest.mark.parametrize("composition", ["oneOf", "anyOf"])
def test_a_rule_under_one_of_or_any_of_is_refused_at_compile_time(composition: str) -> None:
    branch = {"type": "object", "properties": {"a": INT}, "x-bastion-rules": rule("self.a > 0")}
    body = {composition: [{"$ref": "#/components/schemas/A"}, {"type": "string"}]}
    with pytest.raises(OpenAPIError) as caught:
        compile_spec(spec_with(body=body, schemas={"A": branch}))
    assert caught.value.pointer.endswith(f"/schema/{composition}")
    assert f"x-bastion-rules under {composition} is not applied" in caught.value.reason
    # On the schema holding the composition, a rule is fine.
    holder = {
        composition: [{"type": "object", "properties": {"a": INT}}, {"type": "string"}],
        "x-bastion-rules": rule("type(self) == string || self.a > 0"),
    }
    api = compile_spec(spec_with(body=holder))
    assert check_body(api, "x") == []
    assert [e["code"] for e in check_body(api, {"a": 0})] == ["RULE_FAILED"]


def test_check_description_and_lint_report_the_same_broken_rule(tmp_path: Path) -> None:
    spec = spec_with(body={"type": "object", "properties": {"a": INT}, "x-bastion-rules": rule("self.a >")})
    with pytest.raises(OpenAPIError):
        compile_spec(spec)
    import yaml

    result = lint_text(yaml.safe_dump(spec))
    found = [f for f in result.findings if f.rule == "business-rules-compile"]
    assert len(found) == 1
    assert found[0].pointer.endswith("/schema/x-bastion-rules/0/rule")


# -- cost bound -----------------------------------------------------------------------------------------


def locate(types: dict[str, str]) -> Any:
    return lambda path: {"type": types[".".join(path)]} if ".".join(path) in types else None


@pytest.mark.parametrize(
    "source",
    [
        "self.items.all(i, self.items.exists(j, j == i))",  # quadratic: every pair
        "self.items.all(i, i in self.items)",  # linear membership per element
        "self.items.map(i, self.name + i.sku).size() > 0",  # copies a body-sized string per element
        "self.items.all(i, i.tags.all(t, i.tags.exists(u, u == t)))",  # quadratic inside one element
        "self.items.all(i, self.name.contains(i.sku))",
        "self.items.all(i, self.limit.x > 0)",
        "self.items.all(i, self[\"name\"] != '')",
    ],
)
def test_hostile_rules_are_refused_at_compile_time(source: str) -> None:
    problem = cost_problem(source, locate({"limit": "integer", "name": "string"}))
    assert problem is not None
    assert "linear" in problem


@pytest.mark.parametrize(
    "source",
    [
        "self.items.all(i, i.quantity <= self.limit)",
        "self.orders.all(o, o.items.all(i, i.quantity > 0))",
        "self.items.map(i, i.sku).exists(s, s == 'x')",
        "self.items.all(i, i.sku.startsWith('x') && i.sku in ['a', 'b'])",
        "self.start < self.end && self.items.exists(i, has(i.sku))",
        "self.items.all(i, 'self.items' != i.sku)",
    ],
)
def test_linear_rules_are_accepted(source: str) -> None:
    assert cost_problem(source, locate({"limit": "integer"})) is None


def test_a_hostile_rule_in_a_description_stops_start_up() -> None:
    body = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": STR}},
        "x-bastion-rules": rule("self.items.all(i, self.items.exists(j, j == i))"),
    }
    with pytest.raises(OpenAPIError, match="linear in the size of the body"):
        compile_spec(spec_with(body=body))


def test_a_maximal_body_costs_a_bounded_time() -> None:
    """1 MiB bodies (the default limit): each accepted rule answers, a comprehension stops at the budget."""
    body = {
        "type": "object",
        "properties": {"items": ITEMS, "text": STR, "copy": STR},
        "x-bastion-rules": [
            {
                "rule": "!has(self.items) || self.items.all(i, i.quantity <= 10)",
                "message": "items",
                "code": "ITEMS",
            },
            {"rule": "!has(self.text) || self.text.matches('^(a|aa)*b$')", "message": "text", "code": "TEXT"},
            {"rule": "!has(self.text) || self.text == self.copy", "message": "copy", "code": "COPY"},
        ],
    }
    api = compile_spec(spec_with(body=body))
    many = {"items": [{"quantity": 1}] * 70_000}
    started = time.process_time()
    entries = check_body(api, many)
    assert [e["code"] for e in entries] == ["ITEMS"]
    assert f"more than {MAX_ITERATIONS} iterations" in entries[0]["detail"]
    text = "a" * 500_000
    entries = check_body(api, {"text": text, "copy": text})
    assert [e["code"] for e in entries] == ["TEXT"]
    # Generous: the two 1 MiB bodies take about 0.1 s of CPU; a quadratic rule would take hours.
    assert time.process_time() - started < 10


def test_rule_evaluation_grows_linearly_with_the_value() -> None:
    compiler = RuleCompiler()
    [checked] = compiler.compile_all(
        rule("self.text.matches('^(a|aa)*b$') || self.a == self.b"), "", locate({})
    )

    def cpu(size: int) -> float:
        value = {"text": "a" * size, "a": list(range(size // 10)), "b": list(range(size // 10))}
        started = time.process_time()
        for _ in range(3):
            checked.failure(compiler.activation(value))
        return time.process_time() - started

    small, large = cpu(50_000), cpu(800_000)
    assert large < small * 16 * 4  # 16 times the input: linear is ~16x, quadratic would be 256x


# -- never raises -----------------------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.sampled_from(["a", "b", "items", "s"]), inner, max_size=4)
    ),
    max_leaves=30,
)

_ANY_RULES = [
    "self.a < self.b",
    "self.items.all(i, i.a > 0)",
    "self.items.exists(i, i == 'x')",
    "has(self.a) && self.a + 1 > 0",
    "self.a / self.b > 0",
    "size(self.s) > 1",
    "self.s.startsWith('a')",
    "timestamp(self.s) < timestamp(self.s)",
    "self.items[3] == self.a",
    "self.a * self.a > self.b",
    "-self.a < 0",
    "self",
    "self.items.map(i, i.a).exists(x, x == null)",
]


@pytest.fixture(scope="module")
def open_api() -> Any:
    free = {"x-bastion-rules": [{"rule": r, "message": "m"} for r in _ANY_RULES]}
    body = {
        "type": "object",
        "properties": {
            "nested": {"$ref": "#/components/schemas/Free"},
            "list": {"type": "array", "items": {"$ref": "#/components/schemas/Free"}},
        },
        "additionalProperties": {"$ref": "#/components/schemas/Free"},
    }
    return compile_spec(spec_with(body=body, schemas={"Free": free}))


@settings(
    max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
@given(value=JSON_VALUES)
def test_evaluation_never_raises_for_a_body_that_passed_its_schema(open_api: Any, value: Any) -> None:
    body = {"nested": value, "list": [value, value], "other": value}
    entries = check_body(open_api, body)
    assert all(e["detail"] and e["pointer"].startswith(("/nested", "/list", "/other")) for e in entries)


# -- the gateway ------------------------------------------------------------------------------------------


#: The upstreams behind the gateway: the route the suite is posted to, and its answer.
UPSTREAMS = {"starlette": ("/upload", 200), "express": ("/orders", 201)}


@pytest.fixture(scope="module", params=sorted(UPSTREAMS))
def gateway(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str, int]]:
    """The gateway with the suite in front of the Starlette test upstream, and of Express where node is."""
    from tests.gateway.conftest import start_express, start_gateway, start_upstream

    path, status = UPSTREAMS[request.param]
    workdir = tmp_path_factory.mktemp(f"rules-{request.param}")
    spec = write_spec(workdir, suite_spec(path))
    upstream = start_upstream(workdir) if request.param == "starlette" else start_express(workdir)
    try:
        server = start_gateway(
            workdir, {"upstream": upstream.base, "openapi": str(spec), "store": "memory://"}
        )
        yield server.base, path, status
        server.stop()
    finally:
        upstream.stop()


@pytest.mark.e2e
async def test_rule_suite_through_the_gateway_matches_the_middleware(
    gateway: tuple[str, str, int], tmp_path: Path
) -> None:
    base, path, status = gateway
    app, _ = behind_bastion(write_spec(tmp_path, suite_spec(path)))
    async with client(app) as local, httpx.AsyncClient(base_url=base, timeout=10) as remote:
        for n, good, bad, reason in CASES:
            passed = await remote.post(path, json={f"r{n}": good})
            assert passed.status_code == status, (SUITE[n][0], passed.text)  # it reached the upstream
            failed = await remote.post(path, json={f"r{n}": bad})
            assert failed.status_code == 422, (SUITE[n][0], failed.text)
            assert_failure(failed.json()["errors"], n, reason)
            same = await local.post(path, json={f"r{n}": bad})
            assert same.json()["errors"] == failed.json()["errors"]


def test_a_broken_rule_stops_the_middleware_and_config_check(tmp_path: Path) -> None:
    from bastion.validation.compile import check_file

    schema = {"type": "object", "properties": {"a": INT}, "x-bastion-rules": rule("self.a >")}
    spec = write_spec(tmp_path, spec_with(body=schema))
    with pytest.raises(OpenAPIError, match=r"x-bastion-rules/0/rule: the rule 'self.a >' does not compile"):
        behind_bastion(spec)
    config = tmp_path / "bastion.yaml"
    config.write_text(f"openapi: {spec}\nstore: memory://\n")
    [(key, message)] = check_file(config)
    assert key == "openapi"
    assert "/schema/x-bastion-rules/0/rule: the rule 'self.a >' does not compile" in message


async def test_an_unknown_field_does_not_skip_the_rules(tmp_path: Path) -> None:
    body = {"type": "object", "properties": {"a": INT}, "x-bastion-rules": rule("self.a > 0")}
    spec = write_spec(tmp_path, spec_with(body=body))
    api = compile_spec(spec_with(body=body))
    entries = check_body(api, {"a": 0, "extra": 1})
    assert [(e["code"], e["pointer"]) for e in entries] == [("RULE_FAILED", ""), ("NOT_ALLOWED", "/extra")]
    relax = [{"match": {"header": "API-Version: 1"}, "relax": "allow-unknown-fields", "until": "2999-01-01"}]
    app, _ = behind_bastion(spec, validation={"relax": relax})
    async with client(app) as http:
        refused = await http.post("/things", json={"a": 0, "extra": 1}, headers={"API-Version": "1"})
        passed = await http.post("/things", json={"a": 1, "extra": 1}, headers={"API-Version": "1"})
    assert refused.status_code == 422
    assert [e["code"] for e in refused.json()["errors"]] == ["RULE_FAILED"]
    assert passed.status_code == 200


def test_a_percent_encoded_ref_reaches_its_rules_as_the_description_reads_it() -> None:
    from bastion.validation.openapi import follow_local_ref
    from bastion.validation.ruleplan import RulePlans

    document = {
        "components": {
            "schemas": {
                "a b": {
                    "type": "object",
                    "properties": {"n": {"type": "integer"}},
                    "x-bastion-rules": [{"rule": "self.n > 0", "message": "n must be positive"}],
                }
            }
        }
    }
    ref = "#/components/schemas/a%20b"
    assert follow_local_ref(document, ref) == (
        document["components"]["schemas"]["a b"],
        "/components/schemas/a b",
    )
    plan = RulePlans(document).plan(
        {"$ref": ref}, "/paths/~1x/post/requestBody/content/application~1json/schema"
    )
    assert plan is not None
