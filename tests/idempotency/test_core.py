"""The sans-I/O core: key parsing, fingerprints, decisions, response capture, route matching."""

from __future__ import annotations

import hashlib

import http_sf
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.idempotency.core import (
    CLAIMED,
    Action,
    ClaimResult,
    KeyFormatError,
    ResponseCapture,
    State,
    StatusPolicy,
    StoredResponse,
    decide,
    may_claim,
    parse_key,
    record_key,
)
from bastion.idempotency.fingerprints import fingerprint
from bastion.idempotency.requirements import RequiredRoutes

printable = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), min_size=1, max_size=255)
visible = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=255)


@given(printable)
def test_rfc8941_strings_round_trip(key: str) -> None:
    serialized = http_sf.ser(key)
    assert parse_key(serialized.encode()) == key


@given(visible.filter(lambda k: not k.startswith('"')))
def test_bare_tokens_are_taken_as_they_are(key: str) -> None:
    assert parse_key(key.encode()) == key


@given(st.binary(max_size=300))
def test_parser_accepts_only_what_it_documents(raw: bytes) -> None:
    try:
        key = parse_key(raw)
    except KeyFormatError:
        return
    assert 1 <= len(key) <= 255
    assert all(0x20 <= ord(c) <= 0x7E for c in key)
    stripped = raw.strip(b" \t")
    if stripped.startswith(b'"'):
        # What we accepted as a string, RFC 8941 accepts as the same string.
        assert http_sf.parse(stripped, tltype="item")[0] == key
    else:
        assert stripped.decode() == key


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"   ", "empty"),
        (b'""', "empty"),
        (b"a" * 256, "longer"),
        (b'"' + b"a" * 256 + b'"', "longer"),
        (b"a b", "visible"),
        (b"\xc3\xa9", "visible"),
        (b'"abc', "closing"),
        (b'"a"x', "after"),
        (b'"a\\n"', "escape"),
        (b'"\x7f"', "printable"),
    ],
)
def test_bad_keys_say_why(raw: bytes, reason: str) -> None:
    with pytest.raises(KeyFormatError, match=reason):
        parse_key(raw)


def test_surrounding_whitespace_is_ignored() -> None:
    assert parse_key(b'  "k 1"\t') == "k 1"
    assert parse_key(b" k1 ") == "k1"


def test_record_key_depends_on_every_part_and_hides_the_key() -> None:
    base = record_key("client-a", "POST", "/orders", "secret-key")
    assert "secret-key" not in base and len(base) == 64
    assert record_key("client-b", "POST", "/orders", "secret-key") != base
    assert record_key("client-a", "PATCH", "/orders", "secret-key") != base
    assert record_key("client-a", "POST", "/payments", "secret-key") != base
    assert record_key("client-a", "POST", "/orders", "secret-kez") != base
    # Length prefixes keep boundaries: moving a character across parts changes the key.
    assert record_key("ab", "POST", "c", "k") != record_key("a", "POST", "bc", "k")


def test_fingerprint_covers_method_path_query_type_and_body() -> None:
    base = fingerprint("POST", "/orders", b"a=1", b"application/json", b"{}")
    variants = [
        fingerprint("PATCH", "/orders", b"a=1", b"application/json", b"{}"),
        fingerprint("POST", "/orders/1", b"a=1", b"application/json", b"{}"),
        fingerprint("POST", "/orders", b"a=2", b"application/json", b"{}"),
        fingerprint("POST", "/orders", b"a=1", b"text/plain", b"{}"),
        fingerprint("POST", "/orders", b"a=1", b"application/json", b"[]"),
    ]
    assert base == fingerprint("POST", "/orders", b"a=1", b"application/json", b"{}")
    assert len(set(variants) | {base}) == 6


def test_decisions() -> None:
    response = StoredResponse(201, (), b"x")
    assert decide(CLAIMED, "fp") is Action.PROCEED
    assert decide(ClaimResult(State.COMPLETED, "fp", response), "fp") is Action.REPLAY
    assert decide(ClaimResult(State.COMPLETED, "fp", response), "other") is Action.MISMATCH
    assert decide(ClaimResult(State.IN_PROGRESS, "fp"), "fp") is Action.IN_PROGRESS
    assert decide(ClaimResult(State.IN_PROGRESS, "fp"), "other") is Action.MISMATCH


def test_may_claim() -> None:
    common = {"stored_fingerprint": "fp", "request_fingerprint": "fp"}
    assert may_claim(now_ms=10, expires_at=10, state_completed=True, lease_until=0, **common) is None
    assert may_claim(now_ms=10, expires_at=99, state_completed=False, lease_until=10, **common) is True
    assert may_claim(now_ms=10, expires_at=99, state_completed=False, lease_until=11, **common) is False
    assert may_claim(now_ms=10, expires_at=99, state_completed=True, lease_until=0, **common) is False
    assert (
        may_claim(
            now_ms=10,
            expires_at=99,
            state_completed=False,
            lease_until=0,
            stored_fingerprint="a",
            request_fingerprint="b",
        )
        is False
    )


def test_status_policy() -> None:
    default = StatusPolicy(["2xx", "4xx"])
    assert [default.storable(s) for s in (200, 201, 302, 404, 429, 500, 503)] == [
        True,
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    narrow = StatusPolicy(["201", "3xx"])
    assert narrow.storable(201) and narrow.storable(303)
    assert not narrow.storable(200) and not narrow.storable(404)


def test_capture_copies_headers_and_drops_unstorable_ones() -> None:
    capture = ResponseCapture(1024)
    headers = [
        (b"Content-Type", b"application/json"),
        (b"set-cookie", b"s=1"),
        (b"date", b"today"),
        (b"connection", b"close"),
        (b"location", b"/x"),
    ]
    capture.start(201, headers)
    headers.append((b"traceparent", b"added later"))
    capture.body(b"ab")
    capture.body(b"cd")
    stored = capture.result()
    assert stored == StoredResponse(
        201, ((b"content-type", b"application/json"), (b"location", b"/x")), b"abcd", True
    )
    assert stored.replay_headers()[-1] == (b"idempotent-replayed", b"true")


def test_capture_drops_a_body_past_the_cap() -> None:
    capture = ResponseCapture(4)
    capture.start(200, [(b"content-type", b"text/plain"), (b"content-length", b"6")])
    capture.body(b"abc")
    capture.body(b"def")
    stored = capture.result()
    assert stored.body == b"" and not stored.body_stored
    replay = dict(stored.replay_headers())
    assert replay[b"content-length"] == b"0"
    assert b"content-type" not in replay
    assert replay[b"idempotent-body-omitted"] == b"true"


def test_headers_blob_round_trip() -> None:
    stored = StoredResponse(200, ((b"x-a", b"\xe9t\xe9"), (b"x-b", b"")), b"")
    assert StoredResponse.headers_from_blob(stored.headers_blob()) == stored.headers


def test_required_routes() -> None:
    routes = RequiredRoutes(["POST /orders", "post /orders/{id}/pay"])
    assert routes.match("POST", "/orders")
    assert routes.match("POST", "/orders/{id}/pay")
    assert not routes.match("POST", "/orders/{id}")
    assert not routes.match("PATCH", "/orders")
    # No route: the route guard matched no entry (it compares paths with them, see test_paths).
    assert not routes.match("POST", None)
    with pytest.raises(ValueError, match="METHOD /path"):
        RequiredRoutes(["orders"])


def test_record_keys_and_fingerprints_are_sha256_of_their_documented_layout() -> None:
    # Records written by any version of bastion must be found again by this one.
    assert (
        record_key("ip:1.2.3.4", "POST", "/orders", "k")
        == hashlib.sha256(b"10,4,7,1;ip:1.2.3.4POST/ordersk").hexdigest()
    )
    assert (
        fingerprint("POST", "/orders", b"a=1", b"application/json", b"{}")
        == hashlib.sha256(b"4,7,3,16,2;POST/ordersa=1application/json{}").hexdigest()
    )


def test_capture_takes_header_names_of_any_case_and_type() -> None:
    for _ in range(2):  # the second time, the names are known
        capture = ResponseCapture(1024)
        capture.start(
            200,
            [
                (b"X-Custom", b"1"),
                (b"Set-Cookie", b"s=1"),
                (b"x-custom", b"2"),
                (bytearray(b"X-Other"), bytearray(b"3")),
                (b"DATE", b"today"),
            ],
        )
        assert capture.headers == ((b"x-custom", b"1"), (b"x-custom", b"2"), (b"x-other", b"3"))
        assert all(type(name) is bytes and type(value) is bytes for name, value in capture.headers)


@given(st.lists(st.binary(max_size=8), min_size=1, max_size=4), st.integers(min_value=0, max_value=20))
def test_capture_finish_is_body_then_result(chunks: list[bytes], cap: int) -> None:
    one, other = ResponseCapture(cap), ResponseCapture(cap)
    for capture in (one, other):
        capture.start(201, [(b"content-type", b"text/plain")])
        for chunk in chunks[:-1]:
            capture.body(chunk)
    other.body(chunks[-1])
    assert one.finish(chunks[-1]) == other.result()
