"""Error collection on its own: bounded work, and names cut to a bounded length."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema_rs

from bastion.validation import errors


def test_collect_stops_reading_errors_at_its_budget() -> None:
    validator = jsonschema_rs.validator_for({"properties": {"body": {"items": {"type": "string"}}}})
    found = list(validator.iter_errors({"body": [1] * 3000}))
    read = 0

    def counted() -> Iterator[Any]:
        nonlocal read
        for error in found:
            read += 1
            yield error

    entries = errors.collect(counted(), {}, 5)
    assert [e["pointer"] for e in entries] == ["/0", "/1", "/2", "/3", "/4"]
    assert read <= 5 + errors.SPARE


def test_parameter_entries_are_cut_too() -> None:
    long_key = "q" * 5000
    closed = {"properties": {"a": {}}, "additionalProperties": False}
    schema = {"properties": {"query": {"properties": {"filter": closed}}}}
    validator = jsonschema_rs.validator_for(schema)
    [entry] = errors.collect(validator.iter_errors({"query": {"filter": {long_key: 1}}}), {}, 50)
    assert entry["in"] == "query"
    assert entry["name"] == "filter"
    assert entry["field"] == "filter." + "q" * (errors.MAX_ECHO - len("filter.") - 1) + errors.CUT
    assert len(entry["field"]) == errors.MAX_ECHO


def test_shadowing_still_drops_noise_but_keeps_siblings() -> None:
    # A wrong type hides the enum check of the same value; an unknown field beside
    # it is still reported.
    schema = {
        "properties": {
            "body": {
                "properties": {"kind": {"type": "string", "enum": ["a", "b"]}},
                "additionalProperties": False,
            }
        }
    }
    validator = jsonschema_rs.validator_for(schema)
    entries = errors.collect(validator.iter_errors({"body": {"kind": 1, "extra": 2}}), {}, 50)
    assert [(e["code"], e["pointer"]) for e in entries] == [
        ("NOT_ALLOWED", "/extra"),
        ("TYPE_MISMATCH", "/kind"),
    ]


def test_entries_sort_indexes_numerically_and_long_digit_names_without_int() -> None:
    def at(pointer: str) -> dict[str, str]:
        return {"in": "body", "pointer": pointer, "field": "", "code": "INVALID", "detail": "x"}

    huge = "9" * 5000
    pointers = ["/a", f"/{huge}", "/\u00b2", "/10", "/010", "/9", "/0"]
    ordered = [e["pointer"] for e in sorted(map(at, pointers), key=errors.sort_key)]
    assert ordered == ["/0", "/9", "/10", "/010", f"/{huge}", "/a", "/\u00b2"]
