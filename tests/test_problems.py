from __future__ import annotations

import types
from pathlib import Path

import orjson
import pytest

import bastion
from bastion.errordocs import render_markdown
from bastion.problems import (
    Conflict,
    IdempotencyKeyReused,
    NotFound,
    Problem,
    ValidationFailed,
    error_codes,
    problem_for_status,
    render,
    type_uri,
)


def test_type_is_base_plus_kebab_code() -> None:
    assert type_uri("https://docs.example.com/errors/", "VALIDATION_FAILED") == (
        "https://docs.example.com/errors/validation-failed"
    )


def test_render_has_rfc9457_members_and_bastion_extensions() -> None:
    problem = ValidationFailed(
        "1 problem in the request body",
        errors=[{"code": "REQUIRED", "in": "body", "pointer": "/email", "field": "email", "detail": "x"}],
    )
    rendered = render(problem, type_base="https://e.x/errors/", trace_id="t" * 32, instance="/users")
    body = orjson.loads(rendered.body)
    assert rendered.status == 422
    assert dict(rendered.headers)[b"content-type"] == b"application/problem+json"
    assert int(dict(rendered.headers)[b"content-length"]) == len(rendered.body)
    assert list(body) == ["type", "title", "status", "detail", "instance", "code", "trace_id", "errors"]
    assert body["type"] == "https://e.x/errors/validation-failed"
    assert body["code"] == "VALIDATION_FAILED"


def test_applications_raise_problems_with_their_own_codes() -> None:
    problem = Conflict(code="ORDER_ALREADY_PAID", detail="paid at 10:02")
    body = problem.to_dict(type_base="/e/", trace_id="abc", instance=None)
    assert body["status"] == 409
    assert body["code"] == "ORDER_ALREADY_PAID"
    assert body["type"] == "/e/order-already-paid"
    assert "instance" not in body


def test_status_override_and_headers() -> None:
    problem = IdempotencyKeyReused(status=422, headers={"X-Thing": "1"})
    rendered = render(problem, type_base="", trace_id="t", instance=None)
    assert rendered.status == 422
    assert (b"x-thing", b"1") in rendered.headers


@pytest.mark.parametrize("code", ["lower", "WITH SPACE", "1STARTS_WITH_DIGIT", "A" * 65])
def test_codes_must_be_upper_snake_case(code: str) -> None:
    with pytest.raises(ValueError, match="UPPER_SNAKE_CASE"):
        Problem(code=code)


def test_status_must_be_an_error_status() -> None:
    with pytest.raises(ValueError, match="not an error status"):
        Problem(status=200)


def test_problem_for_bare_status() -> None:
    assert problem_for_status(404).code == "NOT_FOUND"
    teapot = problem_for_status(418, "short and stout")
    assert (teapot.status, teapot.code, teapot.title) == (418, "CLIENT_ERROR", "I'm a Teapot")
    assert problem_for_status(507).code == "INTERNAL_ERROR"


def test_subclassing_registers_the_code() -> None:
    class PaymentDeclined(Problem):
        status = 402
        code_default = "PAYMENT_DECLINED"
        title_default = "Payment declined"
        meaning = "The card was declined."
        action = "Use another card."

    assert any(e.code == "PAYMENT_DECLINED" for e in error_codes())
    assert isinstance(PaymentDeclined(), Problem)
    assert NotFound().status == 404


def test_every_design_code_is_registered() -> None:
    codes = {e.code for e in error_codes()}
    assert {
        "MALFORMED_BODY",
        "VALIDATION_FAILED",
        "UNSUPPORTED_MEDIA_TYPE",
        "PAYLOAD_TOO_LARGE",
        "NOT_FOUND",
        "METHOD_NOT_ALLOWED",
        "RATE_LIMITED",
        "IDEMPOTENCY_KEY_MISSING",
        "IDEMPOTENCY_KEY_INVALID",
        "IDEMPOTENCY_KEY_REUSED",
        "IDEMPOTENCY_REQUEST_IN_PROGRESS",
        "DEPENDENCY_UNAVAILABLE",
        "INTERNAL_ERROR",
        "UPSTREAM_UNAVAILABLE",
        "UPSTREAM_TIMEOUT",
    } <= codes


def test_errors_page_is_up_to_date() -> None:
    page = Path(__file__).parent.parent / "docs" / "errors.md"
    assert page.read_text() == render_markdown(), (
        "docs/errors.md is stale: run `.venv/bin/python -m bastion.errordocs > docs/errors.md`"
    )


def test_public_api_is_exactly_all() -> None:
    public = {name for name in dir(bastion) if not name.startswith("_")}
    # Submodules appear as attributes once imported; they are not re-exported names.
    modules = {name for name in public if isinstance(getattr(bastion, name), types.ModuleType)}
    assert set(bastion.__all__) - {"__version__"} == public - modules
    for name in bastion.__all__:
        assert getattr(bastion, name).__doc__ or name == "__version__", name
