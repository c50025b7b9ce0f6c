"""Every rendered problem obeys the echo bounds, whoever built it: instance, names, body size."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.problems import (
    MAX_BODY_BYTES,
    MAX_INSTANCE_CHARS,
    MAX_NAME_CHARS,
    Problem,
    ValidationFailed,
    escape_instance,
    render,
    request_instance,
)


def rendered(problem: Problem, instance: str | None = "/orders") -> dict[str, Any]:
    result = render(problem, type_base="https://errors.example/", trace_id="0" * 32, instance=instance)
    assert len(result.body) <= MAX_BODY_BYTES
    assert dict(result.headers)[b"content-length"] == str(len(result.body)).encode()
    body: dict[str, Any] = orjson.loads(result.body)
    return body


def test_trailing_errors_are_dropped_and_counted_to_keep_the_body_bounded() -> None:
    errors = [
        {"code": "NOT_ALLOWED", "in": "body", "pointer": f"/k{i}", "detail": "unknown"} for i in range(5000)
    ]
    body = rendered(ValidationFailed("5000 problems", errors=errors))
    kept = len(body["errors"])
    assert 0 < kept < 5000
    assert body["errors_truncated"] == 5000 - kept
    assert body["errors"] == errors[:kept]


def test_small_problems_render_whole() -> None:
    errors = [{"code": "REQUIRED", "in": "body", "pointer": "/a", "detail": "is required"}]
    body = rendered(ValidationFailed("1 problem", errors=errors, extensions={"policies": ["p"]}), "/orders/1")
    assert body["errors"] == errors and "errors_truncated" not in body
    assert body["instance"] == "/orders/1" and body["policies"] == ["p"]


def test_huge_extensions_are_dropped_last() -> None:
    body = rendered(
        Problem("boom", extensions={"blob": "x" * 100_000}, errors=[{"code": "A", "detail": "d"}])
    )
    assert "blob" not in body
    assert body["extensions_truncated"] == 1 and body["errors"] == [{"code": "A", "detail": "d"}]
    assert body["code"] == "INTERNAL_ERROR"


def test_escaping_the_instance_twice_changes_nothing() -> None:
    once = escape_instance("/a b/\r\n/é/%41/\"<>'")
    assert once == "/a%20b/%0D%0A/%C3%A9/%41/%22%3C%3E'"
    assert escape_instance(once) == once


def test_the_instance_comes_from_the_raw_path_without_its_query() -> None:
    scope = {"path": "/a\nb", "raw_path": b"/a%0Ab?token=secret"}
    assert request_instance(scope) == "/a%0Ab"
    assert request_instance({"path": "/a\nb"}) == "/a%0Ab"


texts = st.text(max_size=40_000)
entries = st.lists(
    st.dictionaries(st.sampled_from(["code", "in", "pointer", "field", "name", "detail", "x"]), texts),
    max_size=60,
)


@settings(max_examples=60, deadline=None)
@given(
    detail=st.none() | texts,
    title=st.none() | texts,
    instance=st.none() | texts,
    errors=entries,
    extensions=st.dictionaries(st.text(max_size=20), texts, max_size=3),
)
def test_any_problem_renders_to_bounded_valid_json(
    detail: str | None,
    title: str | None,
    instance: str | None,
    errors: list[dict[str, str]],
    extensions: dict[str, str],
) -> None:
    problem = Problem(detail, title=title, status=422, errors=errors, extensions=extensions)
    body = rendered(problem, instance)
    if instance is not None:
        assert len(body["instance"]) <= MAX_INSTANCE_CHARS
        assert all(0x20 < ord(c) < 0x7F for c in body["instance"])
    for entry in body.get("errors", []):
        for key in ("field", "pointer", "name"):
            assert len(entry.get(key, "")) <= MAX_NAME_CHARS
    assert body["status"] == 422


def test_lone_surrogates_do_not_break_rendering() -> None:
    body = rendered(Problem("bad \ud800 text", errors=[{"code": "A", "field": "\udcff"}]), "/\udc80")
    assert body["detail"] == "bad ? text"
    assert body["instance"] == "/%ED%B2%80"
