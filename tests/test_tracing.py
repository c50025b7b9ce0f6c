from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.tracing import (
    format_traceparent,
    new_span_id,
    new_trace_id,
    parse_traceparent,
    valid_request_id,
)

hex_ids = st.text(alphabet="0123456789abcdef", min_size=32, max_size=32).filter(lambda s: s != "0" * 32)
span_ids = st.text(alphabet="0123456789abcdef", min_size=16, max_size=16).filter(lambda s: s != "0" * 16)


@given(hex_ids, span_ids, st.sampled_from(["00", "01"]))
def test_traceparent_round_trip(trace_id: str, span_id: str, flags: str) -> None:
    assert parse_traceparent(format_traceparent(trace_id, span_id, flags)) == (trace_id, flags)


def test_spec_example_is_continued() -> None:
    value = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert parse_traceparent(value) == ("4bf92f3577b34da6a3ce929d0e0e4736", "01")


@pytest.mark.parametrize(
    "value",
    [
        b"00-00000000000000000000000000000000-00f067aa0ba902b7-01",  # all-zero trace id
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  # all-zero parent id
        b"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  # upper case
        b"ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  # forbidden version
        b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",  # v00 has 4 fields
        b"00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  # short trace id
        b"00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
        b"",
        b"garbage",
    ],
)
def test_invalid_traceparents_are_ignored(value: bytes) -> None:
    assert parse_traceparent(value) is None


def test_future_versions_may_carry_more_fields() -> None:
    value = b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds"
    assert parse_traceparent(value) == ("4bf92f3577b34da6a3ce929d0e0e4736", "01")


@given(st.binary(max_size=80))
def test_parser_never_raises(value: bytes) -> None:
    result = parse_traceparent(value)
    assert result is None or len(result[0]) == 32


def test_new_ids_are_random_hex() -> None:
    ids = {new_trace_id() for _ in range(100)}
    assert len(ids) == 100
    assert all(len(i) == 32 and int(i, 16) for i in ids)
    assert len(new_span_id()) == 16


@pytest.mark.parametrize("value", [b"abc-123", b"req_42", b"a" * 128, b"4bf92f35.77b3:4da6@x/y+z="])
def test_request_ids_accepted(value: bytes) -> None:
    assert valid_request_id(value)


@pytest.mark.parametrize("value", [b"", b"a" * 129, b"has space", b"<script>", b"line\nbreak", b"\xff"])
def test_request_ids_rejected(value: bytes) -> None:
    assert not valid_request_id(value)
