"""A compiled operation: what other guards read from it, and the request check itself.

The check is sans-I/O: it takes the path parameters, the raw query string, the
headers and the body bytes, and returns the error entries (empty when the
request is valid) or raises the problems that are not field-level (415, 400).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from bastion.problems import AmbiguousRequest, UnsupportedMediaType
from bastion.validation import controls, errors
from bastion.validation.bodies import (
    FORM,
    JSON,
    MULTIPART,
    OTHER,
    MediaType,
    matches,
    parse_form,
    parse_json,
    parse_media_type,
    parse_multipart,
    require_utf8,
)
from bastion.validation.coerce import Guide
from bastion.validation.lenient import (
    Rewrite,
    relax_json,
    replace_cookie,
    replace_header,
    rewrite_form,
    rewrite_query,
    splice_json,
)
from bastion.validation.params import Parameter, cookie_pairs, group_query, is_missing, parse_query
from bastion.validation.responses import ResponseSchemas
from bastion.validation.ruleplan import RulePlan


def _ambiguous(place: str, name: str) -> AmbiguousRequest:
    return AmbiguousRequest(detail=f"the {place} {errors.cut(name)!r} has more than one reading")


def _schema_held(found: list[dict[str, Any]], collected: list[dict[str, Any]], limit: int) -> bool:
    """Whether a body passed its schema, but for unknown members, so business rules may read it.

    The declared types hold then. Unknown members do not stop the rules: a client
    that ``validation.relax`` lets send them must not skip the rules by sending one.
    A list cut at ``limit`` may hide another error, so it stops them.
    """
    if len(collected) >= limit:
        return False
    return not any(e["in"] == "body" and e["detail"] != errors.UNKNOWN_FIELD for e in (*found, *collected))


@dataclass(frozen=True, slots=True)
class Options:
    """The validation settings a compiled operation applies."""

    max_errors: int = 50
    max_depth: int = 32
    reject_unknown_query: bool = False


@dataclass(slots=True)
class BodyMedia:
    """One media type an operation accepts, and the validator for bodies of that type."""

    declared: str
    kind: str
    guide: Guide
    validator: Any = None
    #: The ``x-bastion-rules`` that apply in bodies of this type, evaluated once the schema passed.
    rules: RulePlan | None = None
    #: Whether a schema of the body declares a coercion (``x-bastion-lenient``).
    relaxes: bool = field(init=False)

    def __post_init__(self) -> None:
        self.relaxes = self.guide.reaches_lenient


@dataclass(slots=True, eq=False)
class CompiledOperation:
    """An OpenAPI operation compiled for request checks.

    Other guards read ``operation_id``, ``method``, ``template``, ``extensions``
    (the operation's ``x-bastion-*`` values, such as ``x-bastion-idempotency:
    required`` or ``x-bastion-rate-limit: 5/minute``) and
    ``declares_idempotency_key``.
    """

    operation_id: str | None
    method: str
    template: str
    #: The ``x-bastion-*`` members of the operation (and of its path item), by full name.
    extensions: dict[str, Any]
    options: Options = field(default_factory=Options)
    #: Whether the operation declares the ``Idempotency-Key`` header parameter.
    declares_idempotency_key: bool = False
    body_required: bool = False
    media: list[BodyMedia] = field(default_factory=list)
    #: Checks the parameters when the request carries no body.
    params_validator: Any = None
    path_params: list[Parameter] = field(default_factory=list)
    query_params: list[Parameter] = field(default_factory=list)
    header_params: dict[bytes, Parameter] = field(default_factory=dict)
    cookie_params: list[Parameter] = field(default_factory=list)
    #: The query parameters that declare a coercion (``x-bastion-lenient``), whose values are rewritten.
    relaxing_query: list[Parameter] = field(default_factory=list)
    #: Whether a parameter or a body of the operation declares a coercion (the request may be rewritten).
    relaxes: bool = False
    #: The compiled response schemas, when response validation is on.
    responses: ResponseSchemas | None = None
    #: The common spellings of the declared media types, parsed once (``application/json``).
    _exact_media: dict[bytes, tuple[BodyMedia, MediaType]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The operation's name for metrics and logs: its operationId, else ``METHOD template``."""
        return self.operation_id or f"{self.method} {self.template}"

    @property
    def has_body(self) -> bool:
        """Whether the operation declares a request body (so the guard reads it)."""
        return bool(self.media)

    def accepted(self) -> str:
        """The accepted media types, for a 415's detail."""
        return ", ".join(m.declared for m in self.media)

    def add_media(self, body: BodyMedia) -> None:
        """Register a media type the operation accepts."""
        self.media.append(body)
        self.relaxes = self.relaxes or body.relaxes
        if "*" not in body.declared:
            for spelling in (
                body.declared,
                f"{body.declared}; charset=utf-8",
                f"{body.declared};charset=utf-8",
            ):
                self._exact_media.setdefault(spelling.encode(), (body, parse_media_type(spelling)))

    def add_parameter(self, parameter: Parameter) -> None:
        """Register a compiled parameter under its location."""
        self.relaxes = self.relaxes or parameter.relaxes
        if parameter.location == "path":
            self.path_params.append(parameter)
        elif parameter.location == "query":
            self.query_params.append(parameter)
            if parameter.relaxes:
                self.relaxing_query.append(parameter)
        elif parameter.location == "header":
            self.header_params[parameter.name.lower().encode("latin-1")] = parameter
        else:
            self.cookie_params.append(parameter)

    def select_media(
        self, content_type: bytes | None, body_empty: bool
    ) -> tuple[BodyMedia, MediaType] | None:
        """The declared media type for the request's ``Content-Type``; 415 when none fits.

        ``None`` when the request has no body to check.
        """
        if content_type is None:
            if body_empty:
                return None
            raise UnsupportedMediaType(
                detail=f"send a Content-Type; this operation accepts {self.accepted()}"
            )
        known = self._exact_media.get(content_type)
        if known is not None:
            return known
        media = parse_media_type(content_type.decode("latin-1"))
        for body in self.media:
            if matches(body.declared, media.essence):
                return body, media
        if body_empty:
            return None
        raise UnsupportedMediaType(detail=f"this operation accepts {self.accepted()}")

    def check(
        self,
        path_params: Mapping[str, str],
        query_string: bytes,
        headers: Sequence[tuple[bytes, bytes]],
        body: bytes | None = None,
        content_type: bytes | None = None,
        rewrite: Rewrite | None = None,
    ) -> list[dict[str, Any]]:
        """Every error entry of the request (empty when it is valid).

        Values are checked after the coercions their schemas declare
        (``x-bastion-lenient``); ``rewrite``, when given, receives the request as they
        rewrite it.
        """
        options = self.options
        instance: dict[str, Any] = {}
        found: list[dict[str, Any]] = []
        if self.path_params:
            instance["path"] = self._path(path_params, found)
        if self.query_params or options.reject_unknown_query:
            # No query at all: every parameter is missing and nothing is unknown.
            instance["query"] = self._query(query_string, found, rewrite) if query_string else {}
        if self.header_params:
            instance["header"] = self._headers(headers, found, rewrite)
        if self.cookie_params:
            instance["cookie"] = self._cookies(headers, found, rewrite)
        validator = self.params_validator
        names: Mapping[str, str] = {}
        rules: RulePlan | None = None
        value: Any = None
        if self.media:
            chosen = self.select_media(content_type, not body)
            if chosen is None:
                if self.body_required:
                    found.append(
                        {
                            "code": "REQUIRED",
                            "in": "body",
                            "pointer": "",
                            "field": "",
                            "detail": "a request body is required",
                        }
                    )
            else:
                target, media = chosen
                kind = target.kind if target.kind != OTHER else media.kind
                value = self._parse_body(kind, target, media, body or b"")
                if kind == JSON and controls.json_may_have(body or b""):
                    found.extend(controls.body_entries(value, target.guide, options.max_errors))
                if target.relaxes:
                    value = self._relax_body(kind, target.guide, value, body or b"", rewrite)
                if target.validator is not None and kind != OTHER:
                    instance["body"] = value
                    validator = target.validator
                    rules = target.rules
        collected: list[dict[str, Any]] = []
        if validator is not None and not validator.is_valid(instance):
            collected = errors.collect(validator.iter_errors(instance), names, options.max_errors)
        if rules is not None and _schema_held(found, collected, options.max_errors):
            found.extend(rules.evaluate(value, options.max_errors))
        if collected:
            if not found:
                return collected  # already sorted and capped
            found.extend(collected)
        if len(found) > 1:
            found.sort(key=errors.sort_key)
        return found[: options.max_errors]

    def _parse_body(self, kind: str, target: BodyMedia, media: MediaType, body: bytes) -> Any:
        options = self.options
        if kind == JSON:
            require_utf8(media)
            return parse_json(body, options.max_depth)
        if kind == FORM:
            require_utf8(media)
            return parse_form(body, target.guide, options.max_depth)
        if kind == MULTIPART:
            return parse_multipart(body, media, target.guide, options.max_depth)
        return None

    def _relax_body(self, kind: str, guide: Guide, value: Any, body: bytes, rewrite: Rewrite | None) -> Any:
        """The body's value after its declared coercions; the rewritten bytes go to ``rewrite``.

        Form values were coerced as they were parsed; a multipart body is not coerced.
        """
        if kind == JSON:
            value, changes = relax_json(value, guide)
            if changes and rewrite is not None:
                rewrite.body = splice_json(body, changes)
        elif kind == FORM and rewrite is not None:
            rewrite.body = rewrite_form(body, guide)
        return value

    def _path(self, path_params: Mapping[str, str], found: list[dict[str, Any]]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for param in self.path_params:
            text = path_params.get(param.name, "")
            if not text.isascii():
                # A server that decodes the path with surrogateescape leaves lone surrogates,
                # which no schema check can encode: read each as "?".
                text = text.encode("utf-8", "replace").decode("utf-8")
            if not param.allow_control and controls.has_control(text):
                found.append(controls.parameter_entry("path", param.name))
            values[param.name] = param.from_path(text)
        return values

    def _query(
        self, query_string: bytes, found: list[dict[str, Any]], rewrite: Rewrite | None
    ) -> dict[str, Any]:
        grouped = group_query(parse_query(query_string))
        suspect = controls.query_may_have(query_string)
        heads = {key.partition("[")[0] for key in grouped if "[" in key}
        values: dict[str, Any] = {}
        for param in self.query_params:
            if param.repeated_in(grouped, heads):
                raise _ambiguous("query parameter", param.name)
            value = param.from_query(grouped, self.options.max_depth)
            if not is_missing(value):
                values[param.name] = value
                if suspect and not param.allow_control and controls.has_control(value):
                    found.append(controls.parameter_entry("query", param.name))
        if self.options.reject_unknown_query:
            for key in grouped:
                if not any(p.claims(key) for p in self.query_params):
                    found.append(
                        {
                            "code": "NOT_ALLOWED",
                            "in": "query",
                            "name": errors.cut(key),
                            "field": errors.cut(key),
                            "detail": "is not a parameter of this operation",
                        }
                    )
        if rewrite is not None and self.relaxing_query:
            rewrite.query_string = rewrite_query(query_string, self.relaxing_query)
        return values

    def _headers(
        self, headers: Sequence[tuple[bytes, bytes]], found: list[dict[str, Any]], rewrite: Rewrite | None
    ) -> dict[str, Any]:
        seen: dict[bytes, list[bytes]] = {}
        wanted = self.header_params
        for key, value in headers:
            if key in wanted:
                seen.setdefault(key, []).append(value)
        values: dict[str, Any] = {}
        for key, raw in seen.items():
            param = wanted[key]
            if len(raw) > 1 and param.shape != "array":
                raise _ambiguous("header", param.name)
            text = b", ".join(raw).decode("latin-1").strip()
            if not param.allow_control and controls.has_control(text):
                found.append(controls.parameter_entry("header", param.name))
            values[param.name] = param.from_text(text)
            if rewrite is not None and param.relaxes:
                new = param.relaxed_text(text)
                if new != text:
                    rewrite.headers = replace_header(
                        rewrite.headers or list(headers), key, new.encode("latin-1", "replace")
                    )
        return values

    def _cookies(
        self, headers: Sequence[tuple[bytes, bytes]], found: list[dict[str, Any]], rewrite: Rewrite | None
    ) -> dict[str, Any]:
        lines = [v.decode("latin-1") for k, v in headers if k == b"cookie"]
        cookies: dict[str, list[str]] = {}
        for line in lines:
            for name, value in cookie_pairs(line):
                cookies.setdefault(name, []).append(value)
        values: dict[str, Any] = {}
        for param in self.cookie_params:
            found_values = cookies.get(param.name)
            if found_values is not None:
                # Two values, or one among several Cookie headers (Werkzeug joins them with a
                # comma into one value), or a percent-escape only some frameworks decode.
                text = found_values[0]
                if len(found_values) > 1 or len(lines) > 1 or ("%" in text and unquote(text) != text):
                    raise _ambiguous("cookie", param.name)
                if not param.allow_control and controls.has_control(text):
                    found.append(controls.parameter_entry("cookie", param.name))
                values[param.name] = param.from_text(text)
                if rewrite is not None and param.relaxes:
                    new = param.relaxed_text(text)
                    if new != text:
                        rewrite.headers = replace_cookie(rewrite.headers or list(headers), param.name, new)
        return values
