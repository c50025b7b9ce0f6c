"""The validation guard through the public ``Bastion``: status codes, problem bodies, routing."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from bastion.validation.operation import CompiledOperation
from tests.validation.helpers import CHECKOUT, behind_bastion, client, write_spec

SECRET = "nope"


async def test_acceptance_three_entries_and_no_echo() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post("/users", json={"email": SECRET, "age": 12, "name": "A", "role": "admin"})
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["code"] == "VALIDATION_FAILED"
    assert problem["detail"] == "3 problems in the request body"
    fields = {e["field"]: e for e in problem["errors"]}
    assert set(fields) == {"email", "age", "role"}
    assert fields["email"] == {
        "code": "INVALID_FORMAT",
        "in": "body",
        "pointer": "/email",
        "field": "email",
        "detail": "must be an email address",
    }
    assert fields["age"]["code"] == "OUT_OF_RANGE"
    assert fields["age"]["detail"] == "must be at least 18"
    assert fields["role"]["code"] == "NOT_ALLOWED"
    assert SECRET not in response.text
    assert "admin" not in response.text


async def test_valid_request_reaches_the_app_with_the_body_replayed() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        body = {"email": "ada@example.com", "age": 36, "name": "Ada"}
        response = await http.post("/users", json=body)
    assert response.status_code == 200
    seen = response.json()
    assert orjson.loads(seen["body"]) == body
    assert seen["route"] == "/users"
    assert seen["operation_id"] == "createUser"


async def test_path_parameter_is_coerced_and_checked() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        ok = await http.get("/orders/42")
        bad = await http.get("/orders/abc")
        zero = await http.get("/orders/0")
    assert ok.status_code == 200
    assert ok.json()["route"] == "/orders/{id}"
    assert ok.json()["path_params"] == {"id": "42"}
    assert bad.status_code == 422
    assert bad.json()["errors"] == [
        {"code": "TYPE_MISMATCH", "in": "path", "name": "id", "field": "id", "detail": "must be an integer"}
    ]
    assert zero.json()["errors"][0]["code"] == "OUT_OF_RANGE"


async def test_unknown_path_404_and_wrong_method_405_with_allow() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        missing = await http.get("/nothing-here")
        wrong = await http.delete("/orders/5")
    assert missing.status_code == 404
    assert missing.json()["code"] == "NOT_FOUND"
    assert wrong.status_code == 405
    assert wrong.json()["code"] == "METHOD_NOT_ALLOWED"
    assert wrong.headers["allow"] == "GET"


async def test_unknown_routes_pass_lets_them_through_untouched() -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"unknown_routes": "pass"})
    async with client(app) as http:
        response = await http.post("/not/described", content=b"{not json")
    assert response.status_code == 200
    assert response.json()["body"] == "{not json"


async def test_missing_idempotency_key_is_not_a_validation_error() -> None:
    # The description declares Idempotency-Key as a required header: the idempotency
    # guard owns it, so validation lets a request without it through.
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        body = {"items": [{"sku": "ABC-1", "quantity": 1}], "amount": 100}
        response = await http.post("/orders", json=body)
        too_long = await http.post("/orders", json=body, headers={"Idempotency-Key": "k" * 300})
    assert response.status_code != 422, response.text
    assert too_long.status_code != 422, too_long.text


def test_compiled_operation_exposes_what_other_guards_need(tmp_path: Path) -> None:
    app, _ = behind_bastion(CHECKOUT)
    router_match = None
    from bastion.routing.router import build_router

    router = build_router(app.context)
    assert router is not None and router.authoritative
    router_match = router.resolve("POST", "/orders")
    assert not isinstance(router_match, list) and router_match is not None
    op = router_match.operation
    assert isinstance(op, CompiledOperation)
    assert op.operation_id == "createOrder"
    assert op.method == "POST"
    assert op.template == "/orders"
    assert op.extensions == {"x-bastion-idempotency": "required", "x-bastion-rate-limit": "5/minute"}
    assert op.declares_idempotency_key is True
    login = router.resolve("POST", "/login")
    assert not isinstance(login, list) and login is not None
    assert login.operation.extensions == {"x-bastion-unknown-fields": "allow"}
    assert login.operation.declares_idempotency_key is False


async def test_per_operation_unknown_fields_allow() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post("/login", json={"email": "a@b.co", "password": "pw", "remember": True})
    assert response.status_code == 200


async def test_reject_unknown_fields_false_accepts_extra_members(tmp_path: Path) -> None:
    spec = CHECKOUT.read_text().replace(
        "additionalProperties: false\n      required: [email", "required: [email"
    )
    app, _ = behind_bastion(write_spec(tmp_path, spec), validation={"reject_unknown_fields": False})
    async with client(app) as http:
        response = await http.post("/users", json={"email": "a@b.co", "age": 30, "name": "A", "nick": "x"})
    assert response.status_code == 200


async def test_malformed_json_is_400_with_the_position() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post(
            "/users", content=b'{"email": "a@b.co",\n "age": }', headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    problem = response.json()
    assert problem["code"] == "MALFORMED_BODY"
    assert "line 2, column 9 (byte 28)" in problem["detail"]


async def test_unsupported_media_type_lists_the_accepted_ones() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post("/users", content=b"email=a", headers={"content-type": "text/plain"})
        no_type = await http.post("/users", content=b"{}")
    assert response.status_code == 415
    assert response.json()["code"] == "UNSUPPORTED_MEDIA_TYPE"
    assert "application/json" in response.json()["detail"]
    assert no_type.status_code == 415


async def test_missing_required_body() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post("/users")
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"code": "REQUIRED", "in": "body", "pointer": "", "field": "", "detail": "a request body is required"}
    ]


async def test_json_is_utf8_only() -> None:
    app, _ = behind_bastion(CHECKOUT)
    body = '{"email": "a@b.co", "age": 30, "name": "Zoë"}'
    async with client(app) as http:
        latin = await http.post(
            "/users",
            content=body.encode("latin-1"),
            headers={"content-type": "application/json; charset=ISO-8859-1"},
        )
        utf8 = await http.post(
            "/users", content=body.encode(), headers={"content-type": "application/json;charset=UTF-8"}
        )
        unknown = await http.post(
            "/users", content=body.encode(), headers={"content-type": "application/json; charset=nope"}
        )
    assert latin.status_code == 415, latin.text
    assert utf8.status_code == 200, utf8.text
    assert unknown.status_code == 415


async def test_depth_limit_rejects_before_schema_validation() -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"max_json_depth": 5})
    deep: object = "x"
    for _ in range(6):
        deep = {"a": deep}
    async with client(app) as http:
        response = await http.post("/users", json=deep)
        shallow = await http.post("/users", json={"email": "a@b.co", "age": 30, "name": "[[[[[[[[{{{{{{"})
    assert response.status_code == 400
    assert "deeper than 5 levels" in response.json()["detail"]
    assert shallow.status_code == 200, shallow.text


async def test_orjson_depth_limit_is_reported_as_depth() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        response = await http.post(
            "/users", content=b"[" * 2000 + b"]" * 2000, headers={"content-type": "application/json"}
        )
    assert response.status_code == 400
    assert "deeper than 32 levels" in response.json()["detail"]


async def test_content_length_over_the_limit_is_413_before_reading() -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"max_body_bytes": 100})
    async with client(app) as http:
        response = await http.post("/users", content=b"x" * 101, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert response.json()["code"] == "PAYLOAD_TOO_LARGE"


async def test_413_while_streaming_never_buffers_past_the_limit() -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"max_body_bytes": 1000})
    chunks_sent = 0
    total_chunks = 100

    async def receive() -> dict[str, object]:
        nonlocal chunks_sent
        chunks_sent += 1
        return {"type": "http.request", "body": b"x" * 100, "more_body": chunks_sent < total_chunks}

    sent: list[dict[str, object]] = []

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/users",
        "raw_path": b"/users",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    await app(scope, receive, send)
    assert sent[0]["status"] == 413
    # The guard stopped reading at the first chunk past the limit (11 x 100 bytes > 1000).
    assert chunks_sent == 11


async def test_metrics_count_failures_by_operation_and_code() -> None:
    app, _ = behind_bastion(CHECKOUT)
    async with client(app) as http:
        await http.post("/users", json={"email": "nope", "age": 12, "name": "A"})
        await http.post("/users", content=b"{", headers={"content-type": "application/json"})
        metrics = (await http.get("/metrics")).text
    assert 'bastion_validation_failures_total{code="INVALID_FORMAT",operation="createUser"} 1.0' in metrics
    assert 'bastion_validation_failures_total{code="OUT_OF_RANGE",operation="createUser"} 1.0' in metrics
    assert 'bastion_validation_failures_total{code="MALFORMED_BODY",operation="createUser"} 1.0' in metrics


async def test_metrics_disabled_still_validates() -> None:
    app, _ = behind_bastion(CHECKOUT, metrics={"enabled": False})
    async with client(app) as http:
        response = await http.post("/users", json={"email": "nope", "age": 12, "name": "A"})
    assert response.status_code == 422


async def test_validation_disabled_keeps_routing_but_not_checks() -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"enabled": False})
    async with client(app) as http:
        invalid = await http.post("/users", json={"email": "nope"})
        missing = await http.get("/nothing")
    assert invalid.status_code == 200
    assert missing.status_code == 404


def test_broken_description_stops_construction(tmp_path: Path) -> None:
    from bastion.validation.openapi import OpenAPIError

    spec = CHECKOUT.read_text().replace("#/components/schemas/NewUser", "#/components/schemas/Missing")
    with pytest.raises(OpenAPIError) as info:
        behind_bastion(write_spec(tmp_path, spec))
    assert "/paths/~1users/post/requestBody/content/application~1json/schema/$ref" in str(info.value)
    assert "points to nothing" in str(info.value)


async def test_errors_are_capped_and_deterministic(tmp_path: Path) -> None:
    app, _ = behind_bastion(CHECKOUT, validation={"max_errors": 3})
    items = [{"sku": "x", "quantity": 0} for _ in range(10)]
    async with client(app) as http:
        first = await http.post("/orders", json={"items": items, "amount": 0})
        second = await http.post("/orders", json={"items": items, "amount": 0})
    assert first.status_code == 422
    assert len(first.json()["errors"]) == 3
    assert first.json()["errors"] == second.json()["errors"]
    assert [e["pointer"] for e in first.json()["errors"]] == ["/amount", "/items/0/quantity", "/items/0/sku"]
