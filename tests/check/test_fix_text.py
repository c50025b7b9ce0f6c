"""``lint --fix`` keeps the file's own text: its diff is only what the fix added."""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bastion.check.document import load_file
from bastion.check.fix import write_fixed
from bastion.check.lint import lint_file
from bastion.cli import app

FIXTURES = Path(__file__).parent / "fixtures"
FIXED_PITFALLS = {"idempotency", "errors", "rate-limiting"}


def _diff(before: str, after: str) -> tuple[list[str], list[str]]:
    """The removed (or changed) and the added lines of a line diff.

    autojunk is off: its heuristic treats frequent lines (``schema:``) as junk and may
    pair a kept line with an inserted copy of it, showing a change where there is none.
    """
    old, new = before.splitlines(), after.splitlines()
    removed: list[str] = []
    added: list[str] = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, old, new, autojunk=False).get_opcodes():
        if tag in ("delete", "replace"):
            removed += old[i1:i2]
        if tag in ("insert", "replace"):
            added += new[j1:j2]
    return removed, added


def _only_added(before: str, after: str) -> bool:
    """Whether ``after`` is ``before`` with lines inserted (its lines, in order, are all there).

    Matching each old line at its first occurrence decides this exactly; difflib's
    heuristics can pair a kept line with an inserted copy of it (``}``) and report a
    change where there is none, on JSON above all.
    """
    new = iter(after.splitlines())
    return all(any(line == candidate for candidate in new) for line in before.splitlines())


def _uncomma(text: str) -> str:
    """``text`` with each line's trailing comma taken off."""
    return "\n".join(line.rstrip(",") for line in text.splitlines())


def _fix(
    tmp_path: Path, source: Path | str, name: str = "openapi.yaml", out_name: str = "fixed.yaml"
) -> Path:
    spec = tmp_path / name
    spec.write_text(source.read_text() if isinstance(source, Path) else source)
    out = tmp_path / out_name
    result = CliRunner().invoke(app, ["lint", str(spec), "--fix", str(out), "--format", "json"])
    assert result.exit_code in (0, 1), result.output
    return out


def test_fix_of_a_styled_yaml_description_only_adds_lines(tmp_path: Path) -> None:
    source = FIXTURES / "fix_styled.yaml"
    before = lint_file(source)
    assert {f.pitfall for f in before.findings} >= FIXED_PITFALLS
    out = _fix(tmp_path, source)
    text = out.read_text()
    removed, added = _diff(source.read_text(), text)
    assert removed == []
    assert len(added) > 50
    # Comments, flow style, quoting and key order are where they were.
    assert "# Orders API: hand-written, reviewed line by line." in text
    assert "info: {title: \"Orders\", version: '1.0'}   # flow style, two quoting styles" in text
    assert "      operationId: createOrder   # id after responses, on purpose" in text
    assert yaml.safe_load(text)["paths"]["/orders"]["post"]["responses"]["429"] == {
        "$ref": "#/components/responses/RateLimited"
    }
    assert [f for f in lint_file(out).findings if f.pitfall in FIXED_PITFALLS] == []


def test_fix_adds_to_flow_containers_on_their_own_line(tmp_path: Path) -> None:
    text = (
        "openapi: 3.1.0\n"
        "info: {title: t, version: '1'}\n"
        "paths:\n"
        "  /a:\n"
        "    post: {operationId: a, responses: {'201': {description: ok}}}  # one line\n"
    )
    out = _fix(tmp_path, text)
    fixed = out.read_text()
    removed, _ = _diff(text, fixed)
    assert removed == ["    post: {operationId: a, responses: {'201': {description: ok}}}  # one line"]
    assert fixed.splitlines()[4].endswith("  # one line")
    assert [f for f in lint_file(out).findings if f.pitfall in FIXED_PITFALLS] == []


def test_fix_of_a_json_description_stays_json_and_only_adds_commas(tmp_path: Path) -> None:
    description = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {
            "/orders": {
                "post": {
                    "operationId": "create",
                    "requestBody": {
                        "content": {
                            "application/json": {"schema": {"type": "object", "additionalProperties": False}}
                        }
                    },
                    "responses": {"201": {"description": "ok"}, "default": {"description": "error"}},
                }
            }
        },
    }
    source = json.dumps(description, indent=4)
    out = _fix(tmp_path, source, "openapi.json", "fixed.json")
    fixed = out.read_text()
    # A JSON member after the last one needs a comma on that line; nothing else changes.
    removed, _ = _diff(source, fixed)
    assert removed
    assert _only_added(_uncomma(source), _uncomma(fixed))
    data = json.loads(fixed)
    assert "429" in data["paths"]["/orders"]["post"]["responses"]
    assert "application/problem+json" in data["paths"]["/orders"]["post"]["responses"]["default"]["content"]
    assert [f for f in lint_file(out).findings if f.pitfall in FIXED_PITFALLS] == []


def test_a_change_reached_through_an_alias_rewrites_the_whole_description_and_says_so(tmp_path: Path) -> None:
    text = (
        "openapi: 3.1.0\n"
        "info: {title: t, version: '1'}\n"
        "x-shared: &failure {description: failed}\n"
        "paths:\n"
        "  /a:\n"
        "    get:\n"
        "      responses:\n"
        "        '200': {description: ok}\n"
        "        '404': *failure\n"
    )
    spec = tmp_path / "openapi.yaml"
    spec.write_text(text)
    doc = load_file(spec)
    outcome = write_fixed(doc, tmp_path / "fixed.yaml")  # type: ignore[arg-type]
    assert outcome.rewritten is not None and "alias" in outcome.rewritten
    assert [f for f in lint_file(tmp_path / "fixed.yaml").findings if f.pitfall in FIXED_PITFALLS] == []
    result = CliRunner().invoke(app, ["lint", str(spec), "--fix", str(tmp_path / "again.yaml")])
    assert "rewritten, comments and style not kept" in " ".join(result.output.split())


def test_a_problem_schema_missing_members_gains_them_as_additions(tmp_path: Path) -> None:
    text = (
        "openapi: 3.1.0\n"
        "info: {title: t, version: '1'}\n"
        "paths:\n"
        "  /a:\n"
        "    get:\n"
        "      responses:\n"
        "        '404':\n"
        "          description: missing\n"
        "          content:\n"
        "            application/problem+json:\n"
        "              schema:\n"
        "                $ref: '#/components/schemas/Err'\n"
        "components:\n"
        "  schemas:\n"
        "    Err:\n"
        "      type: object\n"
        "      properties:\n"
        "        title: {type: string}   # ours\n"
    )
    out = _fix(tmp_path, text)
    removed, _ = _diff(text, out.read_text())
    assert removed == []
    err = yaml.safe_load(out.read_text())["components"]["schemas"]["Err"]
    assert {"type", "title", "status", "detail"} <= set(err["properties"])
    assert [f for f in lint_file(out).findings if f.pitfall in FIXED_PITFALLS] == []


#: Fixtures that --fix refuses by design (a description it cannot read safely).
_REFUSED = ("spec-parse-error", "spec-aliases")


@pytest.mark.parametrize(
    "name",
    sorted(p.parent.name for p in (FIXTURES / "lint").glob("*/fail.yaml") if p.parent.name not in _REFUSED),
)
def test_fix_of_every_rule_fixture_only_adds_lines(name: str, tmp_path: Path) -> None:
    source = FIXTURES / "lint" / name / "fail.yaml"
    out = _fix(tmp_path, source)
    removed, _ = _diff(source.read_text(), out.read_text())
    assert removed == []


_schema = st.sampled_from(
    [
        {"type": "string", "maxLength": 8},
        {"type": "object", "additionalProperties": False, "properties": {"a": {"type": "integer"}}},
        {"$ref": "#/components/schemas/Thing"},
    ]
)
_response = st.fixed_dictionaries(
    {"description": st.sampled_from(["ok", "two\nlines\n", "x: y"])},
    optional={
        "content": st.fixed_dictionaries({"application/json": st.fixed_dictionaries({"schema": _schema})})
    },
)
_operation = st.fixed_dictionaries(
    {
        "responses": st.dictionaries(
            st.sampled_from(["200", "201", "404", "default", "429"]), _response, min_size=1
        )
    },
    optional={
        "operationId": st.text("abc", min_size=1, max_size=3),
        "requestBody": st.fixed_dictionaries(
            {
                "content": st.fixed_dictionaries(
                    {"application/json": st.fixed_dictionaries({"schema": _schema})}
                )
            }
        ),
        "parameters": st.lists(
            st.fixed_dictionaries(
                {"name": st.sampled_from(["q", "id"]), "in": st.just("query"), "schema": _schema}
            ),
            min_size=1,  # an empty list is written `[]` even in block style: a flow target
            max_size=2,
        ),
    },
)
_description = st.fixed_dictionaries(
    {
        "openapi": st.just("3.1.0"),
        "info": st.just({"title": "t", "version": "1"}),
        "paths": st.dictionaries(
            st.sampled_from(["/a", "/b/{id}", "/c"]),
            st.dictionaries(st.sampled_from(["get", "post", "patch"]), _operation, min_size=1),
            min_size=1,
        ),
    },
    optional={"components": st.just({"schemas": {"Thing": {"type": "integer", "minimum": 0, "maximum": 9}}})},
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    description=_description,
    style=st.sampled_from(["block", "block-indented", "leaf-flow", "json"]),
    final_newline=st.booleans(),
)
def test_fix_of_any_description_only_adds_lines_or_says_why(
    tmp_path: Path, description: dict[str, Any], style: str, final_newline: bool
) -> None:
    if style == "json":
        text = json.dumps(description, indent=2)
    else:
        text = yaml.safe_dump(
            description,
            sort_keys=False,
            default_flow_style=None if style == "leaf-flow" else False,
            indent=4 if style == "block-indented" else 2,
        )
    text = text if final_newline else text.rstrip("\n")
    name = "openapi.json" if style == "json" else "openapi.yaml"
    spec = tmp_path / name
    spec.write_text(text)
    out = tmp_path / ("fixed.json" if style == "json" else "fixed.yaml")
    doc = load_file(spec)
    outcome = write_fixed(doc, out)  # type: ignore[arg-type]
    assert outcome.rewritten is None
    removed, _ = _diff(text, out.read_text())
    if style.startswith("block"):
        assert removed == [] or _only_added(text, out.read_text())
    elif style == "json":
        assert _only_added(_uncomma(text), _uncomma(out.read_text()))
    assert [f for f in lint_file(out).findings if f.pitfall in FIXED_PITFALLS] == []


def test_fix_leaves_what_the_description_ignores_as_it_is(tmp_path: Path) -> None:
    text = (
        "openapi: 3.1.0\n"
        "info: {title: t, version: '1'}\n"
        "paths:\n"
        "  /carts/{id}/checkout:\n"
        "    post:\n"
        "      x-bastion-lint-ignore:\n"
        "        idempotency-key-declared: the cart id makes checkout idempotent\n"
        "        rate-limit-429-documented: limited by the cart service, documented there\n"
        "      responses:\n"
        "        '200': {description: ok}\n"
        "  /orders:\n"
        "    post:\n"
        "      responses:\n"
        "        '201': {description: ok}\n"
    )
    out = _fix(tmp_path, text)
    fixed = yaml.safe_load(out.read_text())["paths"]
    checkout, orders = fixed["/carts/{id}/checkout"]["post"], fixed["/orders"]["post"]
    assert "429" not in checkout["responses"] and "parameters" not in checkout
    assert {"409", "500"} <= set(checkout["responses"])
    assert "429" in orders["responses"] and orders["parameters"]
    again = lint_file(out)
    assert [f for f in again.findings if f.pitfall in FIXED_PITFALLS] == []
    assert {s.finding.rule for s in again.suppressed} == {
        "idempotency-key-declared",
        "rate-limit-429-documented",
    }
