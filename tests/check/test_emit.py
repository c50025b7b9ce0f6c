"""The YAML writer of --fix: what yaml.dump writes, byte for byte, without its node tree."""

from __future__ import annotations

import io
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.check.document import load_file
from bastion.check.emit import write_yaml
from tests.check.bigspec import STRIPE, big_description

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.dates(),
    st.binary(max_size=10),
)
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(), st.booleans()), inner, max_size=5),
    ),
    max_leaves=40,
)


class _NoAliasDumper(yaml.CSafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


def dumped(data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out, Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True, width=4096)
    return out.getvalue()


def written(data: Any) -> str:
    out = io.StringIO()
    write_yaml(data, out)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(trees)
def test_writes_what_yaml_dump_writes(data: Any) -> None:
    assert written(data) == dumped(data)


def test_shared_objects_are_written_out_in_full() -> None:
    shared = {"type": "string"}
    text = written({"a": shared, "b": [shared, shared]})
    assert "&" not in text and "*" not in text
    assert yaml.safe_load(text) == {"a": shared, "b": [shared, shared]}


def test_no_nesting_is_too_deep_to_write() -> None:
    data: Any = "leaf"
    for _ in range(5000):
        data = [data]
    assert written(data).count("-") == 5000


def test_writing_a_big_description_takes_a_fraction_of_what_yaml_dump_takes(tmp_path: Path) -> None:
    if not STRIPE.is_file():
        pytest.skip(f"{STRIPE} is not present")
    spec = tmp_path / "big.yaml"
    spec.write_text(big_description(5_000_000))
    doc = load_file(spec)
    tracemalloc.start()
    try:
        with (tmp_path / "out.yaml").open("w", encoding="utf-8") as out:
            write_yaml(doc.data, out)  # type: ignore[union-attr]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    size = spec.stat().st_size
    assert peak < size, f"writing took {peak / 1e6:.1f} MB for a {size / 1e6:.1f} MB description"
