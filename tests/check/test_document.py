"""Loading descriptions: the event-based loader reads what PyYAML reads, with lines, in bounded memory."""

from __future__ import annotations

import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.check.document import MAX_DEPTH, Document, ParseError, load_file, load_text
from bastion.check.lint import lint_document
from tests.check.bigspec import STRIPE, big_description

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)
    ),
    max_leaves=40,
)


def assert_reads_as_pyyaml(text: str) -> None:
    try:
        expected = yaml.load(text, Loader=yaml.CSafeLoader)  # the parser the loader uses
    except yaml.YAMLError:
        assert isinstance(load_text(text), ParseError)
        return
    assert loaded(text).data == expected


def loaded(text: str) -> Document:
    doc = load_text(text)
    assert isinstance(doc, Document), doc
    return doc


@settings(max_examples=200, deadline=None)
@given(trees, st.sampled_from([None, False, True]))
def test_reads_what_pyyaml_reads(data: Any, flow: bool | None) -> None:
    assert_reads_as_pyyaml(yaml.safe_dump(data, default_flow_style=flow, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(trees)
def test_reads_json_as_pyyaml_does(data: Any) -> None:
    import json

    assert_reads_as_pyyaml(json.dumps(data))


def test_anchors_merges_and_repeated_keys_read_as_pyyaml_reads_them() -> None:
    text = """\
base: &base {a: 1, b: 2}
list: &list [x, y]
merged:
  <<: *base
  b: 3
merged_many:
  c: 4
  <<: [*base, {d: 5}]
inline:
  <<: {e: 6}
again: *list
twice: first
twice: second
date: 2001-12-14
tagged: !!str 12
? [k1, k2]
: complex
"""
    doc = loaded(text)
    complex_key = text.index("? [k1")
    assert doc.data == {**yaml.safe_load(text[:complex_key]), "['k1', 'k2']": "complex"}
    assert doc.data["again"] is doc.data["list"]
    assert doc.line_at(("twice",)) == 13  # the line of the value that won
    assert doc.line_at(("merged", "b")) == 5
    assert doc.line_at(("merged", "a")) == 4  # a merged key: the line of its mapping
    assert doc.line_at(("again", 1)) == 2  # an alias shares its anchor's lines


def test_lines_and_refs_point_at_the_text() -> None:
    text = "a:\n  b:\n    - x\n    - $ref: '#/a'\n  c: 1\n"
    doc = loaded(text)
    assert doc.line_at(("a", "b", 1)) == 4
    assert doc.line_at(("a", "c")) == 5
    assert doc.line_at(("a", "missing", "deeper")) == 2  # where the mapping under a starts
    assert doc.refs == [("#/a", ("a", "b", 1))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: *nothing\n", "undefined alias"),
        ("a: 1\n---\nb: 2\n", "single document"),
        ("a: !!int abc\n", "cannot read"),
        ("a: !custom 1\n", "could not determine a constructor"),
        ("a: <<\n", "merge key"),
        ("- <<\n", "merge key"),
        ("a: " + "9" * 5000 + "\n", "cannot read"),
        ("a: [1, 2\n", "expected ','"),
        ("[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5), "nests more than"),
    ],
)
def test_unreadable_text_is_a_parse_error_not_a_crash(text: str, message: str) -> None:
    doc = load_text(text)
    assert isinstance(doc, ParseError)
    assert message in doc.message


def test_the_deepest_accepted_nesting_lints_without_a_crash() -> None:
    levels = MAX_DEPTH // 2 - 10  # each level is two containers: the schema and its properties
    schema = "{type: object, properties: {a: " * levels + "{type: string}" + "}}" * levels
    text = (
        "openapi: 3.1.0\ninfo: {title: deep, version: '1'}\npaths:\n  /x:\n    post:\n"
        "      requestBody: {content: {application/json: {schema: " + schema + "}}}\n"
        "      responses: {'200': {description: ok}}\n"
    )
    result = lint_document(load_text(text))
    assert "spec-parse-error" not in {f.rule for f in result.findings}


def test_linting_a_big_description_takes_under_ten_times_its_size(tmp_path: Path) -> None:
    if not STRIPE.is_file():
        pytest.skip(f"{STRIPE} is not present")
    spec = tmp_path / "big.yaml"
    spec.write_text(big_description(5_000_000))
    size = spec.stat().st_size
    tracemalloc.start()
    try:
        doc = load_file(spec)
        result = lint_document(doc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.operations > 800
    assert peak < 10 * size, f"peak {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB description"


def test_repeated_keys_cost_no_scan_each() -> None:
    keys = 50_000
    text = "".join(f"k{i}: 1\n" for i in range(keys)) + "".join(f"k{i}: 2\n" for i in range(keys))
    started = time.perf_counter()
    doc = loaded(text)
    seconds = time.perf_counter() - started
    assert doc.data["k7"] == 2
    assert doc.line_at(("k7",)) == keys + 8
    assert seconds < 10  # linear: about a second; a scan per repeat takes minutes


def test_many_findings_in_one_big_mapping_cost_no_scan_each() -> None:
    paths = 60_000
    text = "openapi: 3.1.0\ninfo: {title: t, version: '1'}\npaths:\n" + "".join(
        f"  p{i}: {{}}\n" for i in range(paths)
    )
    started = time.perf_counter()
    result = lint_document(load_text(text))
    seconds = time.perf_counter() - started
    lines = {f.line for f in result.findings if f.rule == "spec-structure"}
    assert len(lines) == paths
    assert seconds < 60  # linear: a few seconds; a scan per finding takes minutes
