"""x-bastion-idempotency-fingerprint: JSON pointers (RFC 6901) restrict a fingerprint to fields."""

from __future__ import annotations

from typing import Any

import pytest

from bastion.idempotency.canonical import ABSENT, resolve
from bastion.idempotency.fingerprints import fingerprint, operation_fields, parse_fields, raw_fingerprint
from bastion.jsonpointer import parse_pointer

JSON = b"application/json"


def fp(body: bytes, content_type: bytes = JSON, fields: Any = None) -> str:
    return fingerprint("POST", "/orders", b"", content_type, body, fields)


def raw(body: bytes, content_type: bytes = JSON) -> str:
    return raw_fingerprint("POST", "/orders", b"", content_type, body)


def test_pointers_follow_rfc_6901() -> None:
    assert parse_pointer("") == ()
    assert parse_pointer("/a~1b/~0c/0") == ("a/b", "~c", "0")
    assert parse_pointer("/") == ("",)
    for bad in ("a", "/a~2", "/~", "#/a"):
        with pytest.raises(ValueError, match="is not a JSON pointer"):
            parse_pointer(bad)
    doc = {"a/b": [10, {"": None}], "~c": 1}
    assert resolve(doc, ("a/b", "0")) == 10
    assert resolve(doc, ("a/b", "1", "")) is None
    assert resolve(doc, ("a/b", "01")) is ABSENT
    assert resolve(doc, ("a/b", "2")) is ABSENT
    assert resolve(doc, ("a/b", "-")) is ABSENT
    assert resolve(doc, ("a/b", "99999999999999999999")) is ABSENT
    assert resolve(doc, ("~c", "x")) is ABSENT
    assert resolve(doc, ("missing",)) is ABSENT


def test_the_extension_value_is_a_non_empty_list_of_pointers() -> None:
    assert parse_fields(["/amount", "/items"]) == (("amount",), ("items",))
    for bad in ("/amount", [], ["amount"], [1], None, {"/amount": True}, ["/a~"]):
        with pytest.raises(ValueError, match="JSON pointer"):
            parse_fields(bad)


class Operation:
    def __init__(self, method: str, template: str, extensions: dict[str, Any]) -> None:
        self.method, self.template, self.extensions = method, template, extensions


def test_operation_fields_names_the_operation_and_the_extension() -> None:
    found, problems = operation_fields(
        [
            Operation("POST", "/orders", {"x-bastion-idempotency-fingerprint": ["/amount"]}),
            Operation("POST", "/payments", {"x-bastion-idempotency-fingerprint": "/amount"}),
            Operation("GET", "/orders", {}),
        ]
    )
    assert found == {("POST", "/orders"): (("amount",),)}
    assert problems == [
        (
            "paths./payments.post.x-bastion-idempotency-fingerprint",
            "must be a non-empty list of JSON pointers, for example [/amount, /items]",
        )
    ]


def test_restricted_fingerprints_read_only_the_named_fields() -> None:
    fields = parse_fields(["/amount", "/items"])
    base = fp(b'{"amount": 1200, "items": [1, 2], "note": "hi"}', fields=fields)
    assert base == fp(b'{"note": "other", "items": [1, 2.0], "amount": 12e2}', fields=fields)
    assert base == fp(b'{"amount": 1200, "items": [1, 2]}', fields=fields)
    assert base != fp(b'{"amount": 1201, "items": [1, 2]}', fields=fields)
    assert base != fp(b'{"amount": 1200, "items": [2, 1]}', fields=fields)
    assert base != fp(b'{"amount": 1200, "items": [1, 2]}')  # unrestricted: another form
    # A missing field is not null, and the order of the pointers counts.
    missing = fp(b'{"amount": 1200}', fields=fields)
    assert missing != fp(b'{"amount": 1200, "items": null}', fields=fields)
    assert fp(b'{"amount": null}', fields=fields) != fp(b'{"items": null}', fields=fields)
    # Method, path and query still count.
    body = b'{"amount": 1200, "items": []}'
    one = fingerprint("POST", "/orders", b"", JSON, body, fields)
    assert one != fingerprint("PUT", "/orders", b"", JSON, body, fields)
    assert one != fingerprint("POST", "/orders/1", b"", JSON, body, fields)
    assert one != fingerprint("POST", "/orders", b"x=1", JSON, body, fields)


def test_a_restricted_operation_with_a_body_that_is_not_json_counts_its_bytes() -> None:
    fields = parse_fields(["/amount"])
    for body in (b'{"amount": 1, "amount": 2}', b"amount=1", b"[" * 1000):
        assert fp(body, fields=fields) == raw(body)
    assert fp(b"amount=1", b"text/plain", fields) == raw(b"amount=1", b"text/plain")
