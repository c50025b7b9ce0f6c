"""``bastion lint --fix``: write the description augmented with what bastion enforces.

Every operation gets problem responses (``application/problem+json``) for its
errors, a 429 with ``Retry-After``, ``RateLimit`` and ``RateLimit-Policy``, a 500,
and where it has a body 413 and 415; POST and PATCH get the ``Idempotency-Key``
header and 409/422. Existing error responses keep their media types and gain a
problem one. The shared pieces go to ``components`` once and are referenced,
so the result stays small and generated clients get one ``Problem`` type.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from bastion.check.document import Document, Path_, iter_operations, load_file, no_gc
from bastion.check.emit import write_yaml
from bastion.check.findings import FindingSink
from bastion.check.fix_components import FIELD_ERROR_SCHEMA, HEADERS, RESPONSES, problem_schema
from bastion.check.rules.operations import (
    IDEMPOTENCY_HEADER,
    PROBLEM_MEDIA,
    PROBLEM_MEMBERS,
    UNSAFE_METHODS,
    deref,
    is_error_status,
    problem_media,
)
from bastion.check.rules.schemas import SchemaWalker


class Addition(NamedTuple):
    """What ``--fix`` added to one container of the file: its path, the container, the new keys."""

    path: Path_
    container: dict[Any, Any] | list[Any]
    keys: list[Any]


class Fixer:
    """Adds the problem, rate limit and idempotency documentation to a parsed description."""

    def __init__(self, doc: Document) -> None:
        self.doc = doc
        self.changes = 0
        #: id(container the file spells out) -> its path and the keys (or list indexes) added to it.
        self.additions: dict[int, Addition] = {}
        #: Members that replaced one the file had: the text cannot keep them as pure additions.
        self.replaced = 0
        self.components: dict[str, Any] = self._child(doc.data, (), "components", {})
        self._fixed_responses: set[int] = set()
        self.walker = SchemaWalker(doc, FindingSink(doc, frozenset()))
        #: The description's x-bastion-lint-ignore entries: what a rule is ignored for is left as it is.
        self.ignores = FindingSink(doc, frozenset())
        self.problem_ref = self._install_schemas()
        self.header_refs = {
            name: self._install("headers", name.replace("-", ""), spec) for name, spec in HEADERS.items()
        }
        self.key_refs = {
            required: self._existing_key()
            or self._install(
                "parameters",
                "IdempotencyKeyRequired" if required else "IdempotencyKey",
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": required,
                    "description": "A unique key per logical operation (a UUID); a retry with the same key "
                    "returns the first response instead of running the operation again.",
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                },
            )
            for required in (False, True)
        }
        self.response_refs = {
            code: self._response(code, name, text) for code, (name, text) in RESPONSES.items()
        }

    def _put(self, container: dict[Any, Any], path: Path_, key: Any, value: Any) -> None:
        """Set ``container[key]``, noting it as an addition to the file's text."""
        if key in container:
            self.replaced += 1
        container[key] = value
        self._note(container, path, key)

    def _append(self, container: list[Any], path: Path_, value: Any) -> None:
        """Append ``value`` to ``container``, noting it as an addition to the file's text."""
        container.append(value)
        self._note(container, path, len(container) - 1)

    def _note(self, container: dict[Any, Any] | list[Any], path: Path_, key: Any) -> None:
        # Only containers the file spells out have lines; members of new ones are written with them.
        if id(container) in self.doc.lines:
            self.additions.setdefault(id(container), Addition(path, container, []))[2].append(key)

    def _child(self, container: dict[Any, Any], path: Path_, key: str, empty: Any) -> Any:
        """``container[key]`` when it is of the type of ``empty``, else ``empty`` put there."""
        value = container.get(key)
        if isinstance(value, type(empty)):
            return value
        self._put(container, path, key, empty)
        return empty

    def _install(self, section: str, name: str, value: dict[str, Any]) -> str:
        """Put ``value`` under components/section, beside anything of the same name; returns its $ref."""
        bucket = self._child(self.components, ("components",), section, {})
        chosen = name
        if name in bucket and bucket[name] != value:
            chosen = "Bastion" + name
        if bucket.get(chosen) != value:
            self._put(bucket, ("components", section), chosen, value)
            self.changes += 1
        return f"#/components/{section}/{chosen}"

    def _existing_key(self) -> str | None:
        """A component that already declares the Idempotency-Key header: the description's choice wins."""
        params = self.components.get("parameters")
        for name, param in params.items() if isinstance(params, dict) else ():
            if (
                isinstance(param, dict)
                and str(param.get("name", "")).lower() == IDEMPOTENCY_HEADER
                and param.get("in") == "header"
            ):
                return f"#/components/parameters/{name}"
        return None

    def _install_schemas(self) -> str:
        field_ref = self._install("schemas", "FieldError", FIELD_ERROR_SCHEMA)
        existing = self.components["schemas"].get("Problem")
        if existing is not None and not self.walker.missing_properties(existing, PROBLEM_MEMBERS):
            return "#/components/schemas/Problem"
        return self._install("schemas", "Problem", problem_schema(field_ref))

    def _problem_content(self) -> dict[str, Any]:
        return {PROBLEM_MEDIA: {"schema": {"$ref": self.problem_ref}}}

    def _response(self, code: str, name: str, text: str) -> str:
        response: dict[str, Any] = {"description": text, "content": self._problem_content()}
        if code == "429":
            response["headers"] = {h: {"$ref": ref} for h, ref in self.header_refs.items()}
        return self._install("responses", name, response)

    def run(self) -> int:
        """Augment every operation; returns the number of changes made."""
        self.ignores.read_ignores(self.doc.data, ())
        paths = self.doc.data.get("paths")
        if not isinstance(paths, dict):
            return self.changes
        for template, raw_item in paths.items():
            item, item_path = deref(self.doc, raw_item, ("paths", template))
            if not isinstance(item, dict):
                continue
            self.ignores.read_ignores(item, item_path)
            for _, method, op, _ in iter_operations({template: item}):
                if isinstance(op, dict):
                    self.ignores.read_ignores(op, (*item_path, method))
                    self.operation(method, op, item, (*item_path, method))
        return self.changes

    def _wanted(self, rule: str, path: Path_) -> bool:
        """Whether the fix for ``rule`` applies at ``path`` (no x-bastion-lint-ignore covers it there)."""
        return self.ignores.ignored_by(rule, path) is None

    def operation(self, method: str, op: dict[str, Any], item: dict[str, Any], path: Path_) -> None:
        """Augment one operation."""
        responses = self._child(op, path, "responses", {})
        for code, response in list(responses.items()):
            code_s = str(code)
            if is_error_status(code_s.upper() if code_s != "default" else code_s):
                self.error_response(code_s, response, (*path, "responses", code))
        has_body = op.get("requestBody") is not None
        has_params = bool(op.get("parameters") or item.get("parameters"))
        at = (*path, "responses")
        wanted = ["429"] if self._wanted("rate-limit-429-documented", at) else []
        if has_body or has_params:
            wanted += ["400", "422"]
        if has_body:
            wanted += ["413", "415"]
        if method in UNSAFE_METHODS:
            wanted += ["400", "422"]
            if self._wanted("idempotency-conflict-documented", at):
                wanted.append("409")
            if self._wanted("idempotency-key-declared", path):
                self.idempotency_key(op, item, path)
        codes = {str(c).upper() for c in responses}
        if not codes & {"500", "5XX", "DEFAULT"} and self._wanted("error-500-documented", at):
            wanted.append("500")
        for code in wanted:
            if code not in codes:
                self._put(responses, (*path, "responses"), code, {"$ref": self.response_refs[code]})
                codes.add(code)
                self.changes += 1

    def error_response(self, code: str, raw: Any, path: Path_) -> None:
        """Give an existing error response a problem body (and a 429 its headers)."""
        response, r_path = deref(self.doc, raw, path)
        if not isinstance(response, dict) or id(response) in self._fixed_responses:
            return
        self._fixed_responses.add(id(response))
        content = response.get("content")
        media = problem_media(content) if isinstance(content, dict) else None
        if media is None and self._wanted("error-problem-json", r_path):
            content = self._child(response, r_path, "content", {})
            self._put(content, (*r_path, "content"), PROBLEM_MEDIA, {"schema": {"$ref": self.problem_ref}})
            self.changes += 1
        elif media is not None and self._wanted(
            "error-problem-schema", (*r_path, "content", media, "schema")
        ):
            assert isinstance(content, dict)
            self.complete_problem(
                self._child(content, (*r_path, "content"), media, {}), (*r_path, "content", media)
            )
        if code == "429" and self._wanted("rate-limit-429-headers", r_path):
            headers = self._child(response, r_path, "headers", {})
            names = {str(h).lower() for h in headers}
            for name, ref in self.header_refs.items():
                if name.lower() not in names:
                    self._put(headers, (*r_path, "headers"), name, {"$ref": ref})
                    self.changes += 1

    def complete_problem(self, media_obj: dict[str, Any], path: Path_) -> None:
        """Give a problem media type a schema, or its schema the problem members it lacks.

        The members go into the schema's own ``properties`` (through its ``$ref``s), so
        the change is an addition, never a rewrite of what the file says.
        """
        schema = media_obj.get("schema")
        if schema is None:
            self._put(media_obj, path, "schema", {"$ref": self.problem_ref})
            self.changes += 1
            return
        missing = self.walker.missing_properties(schema, PROBLEM_MEMBERS)
        target, t_path = deref(self.doc, schema, (*path, "schema"))
        if not missing or not isinstance(target, dict):
            return
        properties = self._child(target, t_path, "properties", {})
        members = problem_schema("")["properties"]
        for name in missing:
            self._put(properties, (*t_path, "properties"), name, members[name])
            self.changes += 1

    def idempotency_key(self, op: dict[str, Any], item: dict[str, Any], path: Path_) -> None:
        """Add the Idempotency-Key header parameter to an unsafe operation that lacks it."""
        for params in (item.get("parameters"), op.get("parameters")):
            for raw in params if isinstance(params, list) else ():
                param, _ = deref(self.doc, raw, ())
                if (
                    isinstance(param, dict)
                    and str(param.get("name", "")).lower() == IDEMPOTENCY_HEADER
                    and param.get("in") == "header"
                ):
                    return
        required = str(op.get("x-bastion-idempotency", "")).lower() == "required"
        params = self._child(op, path, "parameters", [])
        self._append(params, (*path, "parameters"), {"$ref": self.key_refs[required]})
        self.changes += 1


def dump(data: Any, path: Path) -> None:
    """Write ``data`` as JSON when ``path`` ends in .json, else as YAML."""
    if path.suffix.lower() == ".json":
        path.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
        return
    with path.open("w", encoding="utf-8") as out:
        write_yaml(data, out)


def fix_document(doc: Document) -> int:
    """Augment ``doc.data`` in place; returns the number of changes."""
    return _fix(doc)[0]


def _fix(doc: Document) -> tuple[int, Fixer | None]:
    if not isinstance(doc.data, dict):
        return 0, None
    fixer = Fixer(doc)
    return fixer.run(), fixer


#: The deepest description --fix writes: orjson stops at 255 levels (the YAML writer has no
#: limit, but one rule for both formats); the fix itself adds at most a few levels.
FIX_MAX_DEPTH = 240


class FixRefused(Exception):
    """The description cannot be written out in full, so ``--fix`` writes nothing."""


@dataclass(frozen=True, slots=True)
class FixOutcome:
    """What ``--fix`` wrote: how many changes, and why the file's own text was not kept (if so)."""

    changes: int
    rewritten: str | None = None


def _source_text(doc: Document) -> str | None:
    try:
        text = Path(doc.source).read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    return None if text.startswith("\ufeff") else text


def write_fixed(doc: Document, out: str | Path) -> FixOutcome:
    """Augment ``doc`` and write it to ``out``, as additions to the file's text when it can.

    The file's comments, key order, quoting and style stay; only the new members are
    written (see :mod:`bastion.check.splice`). When that cannot be done exactly (a
    member is replaced, a changed object is reached through an alias, the output is
    to be JSON from YAML or YAML from JSON) the whole document is written and
    ``rewritten`` says why. A description whose aliases expand without bound
    (``spec-aliases``) is refused, and so is one nesting deeper than ``FIX_MAX_DEPTH``.
    ``doc`` is spent: its line index is freed before the output is read back.
    """
    if doc.alias_problem is not None:
        raise FixRefused(doc.alias_problem)
    if doc.depth > FIX_MAX_DEPTH:
        raise FixRefused(f"it nests {doc.depth} levels deep; --fix writes at most {FIX_MAX_DEPTH}")
    out = Path(out)
    with no_gc():
        changes, fixer = _fix(doc)
        why = _keep_text(fixer, doc, out)
        if why is not None:
            dump(doc.data, out)
    return FixOutcome(changes, why)


def _keep_text(fixer: Fixer | None, doc: Document, out: Path) -> str | None:
    """Write the fix as additions to the file's text; returns why it could not, or ``None`` when it did."""
    from bastion.check.splice import insertions, write_spliced

    text = _source_text(doc)
    if text is None:
        return "the description's text could not be read again as UTF-8"
    as_json = out.suffix.lower() == ".json"
    if as_json != (text.lstrip()[:1] in ("{", "[")):
        return f"the output is {'JSON' if as_json else 'YAML'} and the input is not"
    if fixer is not None and fixer.replaced:
        return "a member of the wrong type (such as `responses: null`) had to be replaced"
    additions = [(a.path, a.container, a.keys) for a in fixer.additions.values()] if fixer else []
    inserts = insertions(text, additions)
    if inserts is None:
        return "a changed object is reached through a YAML alias or merge key"
    with out.open("w", encoding="utf-8", newline="") as stream:
        write_spliced(text, inserts, stream)
    del text, inserts, additions
    # The lines and refs of the input are done with: free them before the output is read back.
    doc.lines.clear()
    doc.refs.clear()
    written = load_file(out)
    if not isinstance(written, Document) or written.data != doc.data:
        return "the additions did not read back as the fixed description"
    return None
