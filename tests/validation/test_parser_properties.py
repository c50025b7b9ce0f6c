"""Property tests for the parsers and the router."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote, urlencode

from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.protocols import RouteMatch
from bastion.routing.router import TemplateRouter
from bastion.validation.params import nest_pairs, parse_query

TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
KEY = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="[]"), min_size=1, max_size=8
)


@given(st.lists(st.tuples(TEXT, TEXT), max_size=8))
def test_parse_query_inverts_urlencode(pairs: list[tuple[str, str]]) -> None:
    encoded = urlencode(pairs)
    assert parse_query(encoded.encode()) == pairs


LEAF = st.text(st.characters(codec="ascii", categories=("L", "N")), max_size=6)
NESTED: st.SearchStrategy[Any] = st.recursive(
    LEAF, lambda inner: st.dictionaries(KEY, inner, min_size=1, max_size=3), max_leaves=10
)


def flatten(value: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(value, dict):
        return [pair for key, child in value.items() for pair in flatten(child, f"{prefix}[{key}]")]
    return [(prefix, value)]


@given(st.dictionaries(KEY, NESTED, max_size=4))
def test_bracket_keys_rebuild_the_nested_structure(value: dict[str, Any]) -> None:
    pairs = [pair for key, child in value.items() for pair in flatten(child, key)]
    assert nest_pairs(pairs, 64) == value


SEGMENT = st.text(st.characters(codec="ascii", categories=("Ll", "Nd")), min_size=1, max_size=5)
TEMPLATE_SEGMENT = st.one_of(
    SEGMENT, SEGMENT.map(lambda s: "{" + s + "}"), SEGMENT.map(lambda s: "{" + s + "}.json")
)


@settings(max_examples=150)
@given(
    st.lists(st.lists(TEMPLATE_SEGMENT, min_size=1, max_size=4), min_size=1, max_size=12),
    st.data(),
)
def test_router_finds_a_template_that_matches_and_prefers_literals(
    templates: list[list[str]], data: st.DataObject
) -> None:
    router = TemplateRouter(authoritative=True)
    registered = []
    for segments in templates:
        template = "/" + "/".join(segments)
        names = re.findall(r"\{([^}]+)\}", template)
        if len(set(names)) != len(names):
            continue  # a template cannot name a parameter twice
        router.add("GET", template, template)
        registered.append(template)
    if not registered:
        return
    chosen = data.draw(st.sampled_from(registered))
    values = data.draw(st.lists(SEGMENT, min_size=len(chosen), max_size=len(chosen)))
    path = re.sub(r"\{[^}]+\}", lambda m: values.pop(), chosen)
    found = router.resolve("GET", path)
    assert isinstance(found, RouteMatch)
    # The match is a registered template that matches the path, with its parameters filled in.
    pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "([^/]+?)", re.escape(found.template)) + "$"
    assert re.match(pattern, path), (found.template, path)
    rebuilt = re.sub(r"\{([^}]+)\}", lambda m: found.path_params[m.group(1)], found.template)
    assert rebuilt == path
    if path in registered:
        assert found.template == path  # a literal template beats every templated one
    assert router.resolve("POST", path) == ["GET"]


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=30))
def test_router_never_fails_on_odd_paths(path: str) -> None:
    router = TemplateRouter(authoritative=True, base_paths=["/v1"])
    router.add("GET", "/a/{b}/c.json")
    router.add("GET", "/a/static")
    result = router.resolve("GET", "/" + quote(path, safe="/{}.") if path else "/")
    assert result is None or isinstance(result, RouteMatch | list)
