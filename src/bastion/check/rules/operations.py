"""The per-operation rules: idempotency, problem responses, 429s, typed inputs, structure."""

from __future__ import annotations

from typing import Any

from bastion.check.document import Document, Path_, iter_operations

__all__ = ["OperationRules", "deref"]
from bastion.check.findings import FindingSink
from bastion.check.rules.schemas import SchemaWalker, deref
from bastion.jsonpointer import parse_pointer_list

UNSAFE_METHODS = ("post", "patch")
IDEMPOTENCY_HEADER = "idempotency-key"
#: The extension that restricts an operation's idempotency fingerprint to some body fields.
FIELDS_EXTENSION = "x-bastion-idempotency-fingerprint"
PROBLEM_MEDIA = "application/problem+json"
PROBLEM_MEMBERS = ("type", "title", "status", "detail")
RATE_LIMIT_HEADERS = (
    "ratelimit",
    "ratelimit-policy",
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)


def is_error_status(code: str) -> bool:
    """Whether a responses key stands for an error: 4xx, 5xx, 4XX, 5XX or default."""
    return code == "default" or (len(code) == 3 and code[0] in "45")


def problem_media(content: dict[str, Any]) -> str | None:
    """The problem media type among ``content``'s keys, if there is one."""
    for media in content:
        if isinstance(media, str) and media.split(";")[0].strip().lower() == PROBLEM_MEDIA:
            return media
    return None


class OperationRules:
    """Applies every operation-level rule in one walk over ``paths``."""

    def __init__(self, doc: Document, sink: FindingSink) -> None:
        self.doc = doc
        self.sink = sink
        self.schemas = SchemaWalker(doc, sink)
        self.operation_ids: dict[str, Path_] = {}
        self._problem_schema_ok: dict[int, list[str]] = {}

    def run(self) -> int:
        """Check the whole description; returns the number of operations seen."""
        root = self.doc.data
        if not isinstance(root, dict):
            self.sink.add("spec-structure", (), "the description must be a mapping (an OpenAPI object)")
            return 0
        self.sink.read_ignores(root, ())
        version = root.get("openapi")
        if version is None:
            if "swagger" in root:
                self.sink.add(
                    "spec-structure", ("swagger",), "Swagger 2.0 is not supported; convert to OpenAPI 3"
                )
            else:
                self.sink.add("spec-structure", (), "the `openapi` version member is missing")
        elif not str(version).startswith("3."):
            self.sink.add("spec-structure", ("openapi",), f"openapi version {version!r} is not 3.x")
        if not isinstance(root.get("info"), dict):
            self.sink.add("spec-structure", (), "the `info` object is missing")
        paths = root.get("paths")
        if paths is None and "webhooks" not in root and "components" not in root:
            self.sink.add("spec-structure", (), "the `paths` object is missing")
        elif paths is not None and not isinstance(paths, dict):
            self.sink.add("spec-structure", ("paths",), "`paths` must be a mapping")
        count = 0
        for template, item in (paths or {}).items() if isinstance(paths, dict) else ():
            item_path: Path_ = ("paths", template)
            if not isinstance(item, dict):
                self.sink.add("spec-structure", item_path, "a path item must be a mapping")
                continue
            if not str(template).startswith("/"):
                self.sink.add("spec-structure", item_path, "a path must start with /")
            resolved, resolved_path = deref(self.doc, item, item_path)
            if not isinstance(resolved, dict):
                continue
            self.sink.read_ignores(resolved, resolved_path)
            for _, method, operation, _ in iter_operations({template: resolved}):
                count += 1
                self.operation(str(template), method, operation, resolved, (*resolved_path, method))
        self.check_refs()
        return count

    def operation(self, template: str, method: str, op: Any, item: dict[str, Any], path: Path_) -> None:
        """Apply the operation rules to one operation."""
        if not isinstance(op, dict):
            self.sink.add("spec-structure", path, f"the {method.upper()} operation must be a mapping")
            return
        self.sink.read_ignores(op, path)
        op_id = op.get("operationId")
        if isinstance(op_id, str):
            first = self.operation_ids.setdefault(op_id, path)
            if first != path:
                self.sink.add(
                    "operation-id-unique",
                    (*path, "operationId"),
                    f"operationId {op_id!r} is also used at {'/'.join(map(str, first))}",
                )
        label = f"{method.upper()} {template}"
        headers = self.parameters(item, op, path, label)
        self.request_body(op, path, label)
        responses = op.get("responses")
        if not isinstance(responses, dict) or not responses:
            self.sink.add("spec-structure", path, f"{label} has no responses")
            responses = {}
        codes = {str(code).upper() if str(code) != "default" else "default" for code in responses}
        if method in UNSAFE_METHODS:
            declared = IDEMPOTENCY_HEADER in headers or "x-bastion-idempotency" in op
            if not declared:
                self.sink.add(
                    "idempotency-key-declared",
                    path,
                    f"{label} is unsafe but declares neither an Idempotency-Key header nor "
                    "x-bastion-idempotency: a retried request may run twice",
                )
            if not codes & {"409", "422"}:
                self.sink.add(
                    "idempotency-conflict-documented",
                    (*path, "responses"),
                    f"{label} documents neither 409 nor 422 for an idempotency key reused "
                    "with another request",
                )
        if FIELDS_EXTENSION in op:
            try:
                parse_pointer_list(op[FIELDS_EXTENSION])
            except ValueError as exc:
                where = (*path, FIELDS_EXTENSION)
                self.sink.add("idempotency-fingerprint-fields", where, f"{label}: {FIELDS_EXTENSION} {exc}")
        if not codes & {"500", "5XX", "default"}:
            self.sink.add(
                "error-500-documented",
                (*path, "responses"),
                f"{label} documents no 500, 5XX or default response",
            )
        if "429" not in codes:
            self.sink.add(
                "rate-limit-429-documented", (*path, "responses"), f"{label} documents no 429 response"
            )
        for code, response in responses.items():
            code_s = str(code)
            if is_error_status(code_s.upper() if code_s != "default" else code_s):
                self.error_response(code_s, response, (*path, "responses", code), label)

    def parameters(self, item: dict[str, Any], op: dict[str, Any], path: Path_, label: str) -> set[str]:
        """Check the parameters of an operation; returns the lower-case header names."""
        headers: set[str] = set()
        sources = (
            (item.get("parameters"), (*path[:-1], "parameters")),
            (op.get("parameters"), (*path, "parameters")),
        )
        for params, base in sources:
            if params is None:
                continue
            if not isinstance(params, list):
                self.sink.add("spec-structure", base, "`parameters` must be a list")
                continue
            for index, raw in enumerate(params):
                param, p_path = deref(self.doc, raw, (*base, index))
                if not isinstance(param, dict):
                    continue
                name, where = param.get("name"), param.get("in")
                if not isinstance(name, str) or where not in ("path", "query", "header", "cookie"):
                    self.sink.add(
                        "spec-structure",
                        p_path,
                        "a parameter needs a `name` and `in` (path, query, header, cookie)",
                    )
                    continue
                if where == "header":
                    headers.add(name.lower())
                schema = param.get("schema")
                if schema is None and isinstance(param.get("content"), dict):
                    for media, media_obj in param["content"].items():
                        if isinstance(media_obj, dict) and "schema" in media_obj:
                            schema = media_obj["schema"]
                            p_path = (*p_path, "content", media)
                            break
                    else:
                        schema = None
                if schema is None or not self.schemas.typed(schema):
                    self.sink.add(
                        "parameter-typed",
                        p_path,
                        f"{where} parameter {name!r} of {label} has no typed schema",
                    )
                    continue
                self.schemas.walk(schema, (*p_path, "schema"))
        return headers

    def request_body(self, op: dict[str, Any], path: Path_, label: str) -> bool:
        """Check the request body of an operation; returns whether there is one."""
        raw = op.get("requestBody")
        if raw is None:
            return False
        body, b_path = deref(self.doc, raw, (*path, "requestBody"))
        if not isinstance(body, dict):
            return True
        content = body.get("content")
        if not isinstance(content, dict) or not content:
            self.sink.add("spec-structure", b_path, f"the request body of {label} has no `content`")
            return True
        for media, media_obj in content.items():
            m_path = (*b_path, "content", media)
            schema = media_obj.get("schema") if isinstance(media_obj, dict) else None
            if schema is None or not self.schemas.typed(schema):
                self.sink.add(
                    "request-body-typed", m_path, f"the {media} request body of {label} has no typed schema"
                )
                continue
            if "json" in str(media) or "form" in str(media):
                self.schemas.walk(schema, (*m_path, "schema"))
        return True

    def error_response(self, code: str, raw: Any, path: Path_, label: str) -> None:
        """Check that an error response is a problem, and a 429 carries its headers."""
        response, r_path = deref(self.doc, raw, path)
        if not isinstance(response, dict):
            return
        content = response.get("content")
        media = problem_media(content) if isinstance(content, dict) else None
        if media is None:
            self.sink.add(
                "error-problem-json",
                r_path,
                f"the {code} response{' of ' + label if r_path == path else ''} "
                "is not application/problem+json",
            )
        else:
            assert isinstance(content, dict)
            schema_path = (*r_path, "content", media, "schema")
            media_obj = content[media]
            schema = media_obj.get("schema") if isinstance(media_obj, dict) else None
            missing = self.schemas.missing_properties(schema, PROBLEM_MEMBERS)
            if missing:
                self.sink.add(
                    "error-problem-schema",
                    schema_path,
                    f"the problem schema of the {code} response lacks {', '.join(missing)}",
                )
        if code == "429":
            headers = response.get("headers")
            names = {str(h).lower() for h in headers} if isinstance(headers, dict) else set()
            missing_h = []
            if "retry-after" not in names:
                missing_h.append("Retry-After")
            if not names & set(RATE_LIMIT_HEADERS):
                missing_h.append("RateLimit / RateLimit-Policy")
            if missing_h:
                self.sink.add(
                    "rate-limit-429-headers",
                    r_path,
                    f"the 429 response does not declare {' and '.join(missing_h)}",
                )

    def check_refs(self) -> None:
        """Report every local ``$ref`` that points nowhere, and external ones once per target."""
        external: set[str] = set()
        for ref, holder in self.doc.refs:
            if ref.startswith("#"):
                if self.doc.resolve(ref) is None:
                    self.sink.add("ref-unresolved", (*holder, "$ref"), f"$ref {ref!r} points at nothing")
            else:
                target = ref.split("#", 1)[0]
                if target not in external:
                    external.add(target)
                    self.sink.add("ref-external", (*holder, "$ref"), f"external $ref {ref!r} is not followed")
