"""Compiling a description into operations ready to check requests, once, at start-up.

Each operation gets one jsonschema-rs validator per request media type that
checks everything at once: the instance is ``{"path": {...}, "query": {...},
"header": {...}, "cookie": {...}, "body": ...}``, so a valid request costs a
single call into the validator. Referenced schemas are translated once and
shared by every validator through one registry.

Patterns run on the ``regex`` crate, whose matching time is linear in the input.
A pattern that needs what that engine lacks (look-around, back-references) falls
back, for its operation only, to ``fancy-regex`` with a backtracking limit, so no
input can make a check run long; the fallback is logged at start-up.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema_rs

from bastion.config import Config
from bastion.validation.bodies import OTHER, kind_of
from bastion.validation.coerce import ALLOW_CONTROL, LENIENT, Guide
from bastion.validation.lenient import check_declarations
from bastion.validation.openapi import Description, load_description, pointer_of
from bastion.validation.operation import BodyMedia, CompiledOperation, Options
from bastion.validation.params import Parameter
from bastion.validation.responses import ResponseSchemas
from bastion.validation.ruleplan import RulePlans
from bastion.validation.rules import RuleError
from bastion.validation.schemas import DEFS_URI, SchemaTranslator, View

#: The fancy-regex backtracking limit for patterns the linear engine cannot run.
BACKTRACK_LIMIT = 10_000
_DEFAULT_STYLE = {"path": "simple", "query": "form", "header": "simple", "cookie": "form"}
#: Header parameters the OpenAPI specification says to ignore.
_IGNORED_HEADERS = frozenset({"accept", "content-type", "authorization"})


@dataclass(slots=True)
class CompiledAPI:
    """Every compiled operation of a description, with what routing needs."""

    description: Description
    operations: list[CompiledOperation]
    base_paths: list[str]
    #: Seconds spent translating and compiling (after parsing the file).
    compile_seconds: float
    #: Operations whose patterns needed the backtracking engine.
    backtracking: list[str]

    @property
    def document(self) -> dict[str, Any]:
        """The parsed description (for ``x-bastion-*`` extensions read by other guards)."""
        return self.description.document


@dataclass(slots=True)
class _Pending:
    operation: CompiledOperation
    at: str
    schemas: dict[str | None, dict[str, Any]]


def compile_description(description: Description, config: Config, logger: Any = None) -> CompiledAPI:
    """Translate and compile every operation of ``description`` under ``config``."""
    started = time.perf_counter()
    validation = config.validation
    options = Options(
        max_errors=validation.max_errors,
        max_depth=validation.max_json_depth,
        reject_unknown_query=validation.unknown_query == "reject",
    )
    idempotency_header = config.idempotency.header.lower()
    with_responses = validation.responses.enabled
    check_declarations(description)
    translator = SchemaTranslator(description, reject_unknown_fields=validation.reject_unknown_fields)
    plans = rule_plans(description)
    pending = [
        _prepare(
            description, translator, template, method, item, operation, options, idempotency_header, plans
        )
        for template, method, item, operation in description.operations()
    ]
    response_schemas = [
        _response_schemas(description, translator, entry.at, operation) if with_responses else []
        for entry, (_, _, _, operation) in zip(pending, description.operations(), strict=True)
    ]
    # The description's own retriever: the library's default one would fetch any URL
    # and read any file a schema names.
    registry = jsonschema_rs.Registry(
        [(DEFS_URI, translator.root_document())], retriever=description.references
    )
    backtracking: list[str] = []
    all_responses: dict[str, Any] = {}
    for entry, responses in zip(pending, response_schemas, strict=True):
        compiled = entry.operation
        if responses:
            compiled.responses = ResponseSchemas()
            for status, response_media, response_schema in responses:
                key = f"{compiled.method} {compiled.template} {status} {response_media}"
                all_responses[key] = response_schema
                compiled.responses.add(status, response_media, key)
        for media, schema in entry.schemas.items():
            validator, fell_back = _compile(description, schema, registry, entry.at)
            if fell_back and compiled.label not in backtracking:
                backtracking.append(compiled.label)
            if media is None:
                compiled.params_validator = validator
            else:
                for body in compiled.media:
                    if body.declared == media:
                        body.validator = validator
    if all_responses:
        shared, _ = _compile(description, {"properties": all_responses}, registry, "/paths")
        for entry in pending:
            if entry.operation.responses is not None:
                entry.operation.responses.validator = shared
    if backtracking and logger is not None:
        logger.warning("patterns need the backtracking regex engine", operations=backtracking)
    return CompiledAPI(
        description,
        [p.operation for p in pending],
        description.base_paths(),
        time.perf_counter() - started,
        backtracking,
    )


def rule_plans(description: Description) -> RulePlans:
    """Every ``x-bastion-rules`` of the description compiled, or ``OpenAPIError`` naming the first
    that cannot be."""
    try:
        return RulePlans(description.document)
    except RuleError as exc:
        raise description.error(exc.pointer, exc.reason) from None


def _compile(description: Description, schema: dict[str, Any], registry: Any, at: str) -> tuple[Any, bool]:
    common: dict[str, Any] = {
        "registry": registry,
        "retriever": description.references,
        "validate_formats": True,
    }
    try:
        return jsonschema_rs.validator_for(
            schema, pattern_options=jsonschema_rs.RegexOptions(), **common
        ), False
    except jsonschema_rs.ValidationError as exc:
        first = exc
    except (jsonschema_rs.ReferencingError, ValueError) as exc:
        raise description.error(at, f"a schema cannot be compiled: {exc}") from None
    try:
        options = jsonschema_rs.FancyRegexOptions(backtrack_limit=BACKTRACK_LIMIT)
        return jsonschema_rs.validator_for(schema, pattern_options=options, **common), True
    except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError, ValueError):
        reason = first.message.splitlines()[0] if first.message else "invalid schema"
        raise description.error(at, f"a schema is invalid: {reason}") from None


def _extensions(item: Mapping[str, Any], operation: Mapping[str, Any]) -> dict[str, Any]:
    found = {str(k): v for k, v in item.items() if str(k).startswith("x-bastion-")}
    found.update({str(k): v for k, v in operation.items() if str(k).startswith("x-bastion-")})
    return found


def _prepare(
    description: Description,
    translator: SchemaTranslator,
    template: str,
    method: str,
    item: Mapping[str, Any],
    operation: Mapping[str, Any],
    options: Options,
    idempotency_header: str,
    plans: RulePlans,
) -> _Pending:
    at = pointer_of("paths", template, method.lower())
    extensions = _extensions(item, operation)
    view: View = "open" if extensions.get("x-bastion-unknown-fields") == "allow" else "closed"
    compiled = CompiledOperation(
        operation_id=operation.get("operationId") if isinstance(operation.get("operationId"), str) else None,
        method=method,
        template=template,
        extensions=extensions,
        options=options,
    )
    declared: dict[tuple[str, str], tuple[Any, str]] = {}
    for source, where in (
        (item.get("parameters"), pointer_of("paths", template)),
        (operation.get("parameters"), at),
    ):
        for index, raw in enumerate(source or ()):
            param, param_at = description.resolve(raw, f"{where}/parameters/{index}")
            if not isinstance(param, Mapping) or not isinstance(param.get("name"), str):
                raise description.error(param_at, "a parameter needs a name")
            location = param.get("in")
            if location not in _DEFAULT_STYLE:
                raise description.error(param_at, "parameter 'in' must be path, query, header or cookie")
            declared[(location, param["name"])] = (param, param_at)
    for name in _template_names(template):
        declared.setdefault(("path", name), ({"name": name, "in": "path", "schema": {"type": "string"}}, at))
    locations: dict[str, dict[str, Any]] = {}
    for (location, name), (param, param_at) in declared.items():
        if location == "header" and name.lower() == idempotency_header:
            compiled.declares_idempotency_key = True
            continue  # the idempotency guard owns this header
        if location == "header" and name.lower() in _IGNORED_HEADERS:
            continue
        schema, schema_at, json_content = _parameter_schema(description, param, param_at)
        parameter = Parameter(
            name=name,
            location=location,
            required=location == "path" or param.get("required") is True,
            style=str(param.get("style") or _DEFAULT_STYLE[location]),
            explode=bool(param.get("explode", param.get("style", _DEFAULT_STYLE[location]) == "form")),
            guide=Guide(description, [(schema, schema_at)]),
            json_content=json_content,
            allow_control=param.get(ALLOW_CONTROL) is True,
            lenient=frozenset(param.get(LENIENT) or ()),
        )
        if location == "path" and parameter.relaxes:
            raise description.error(
                param_at,
                "x-bastion-lenient does not apply to path parameters: the path names the resource, "
                "and a second spelling of it would be a second URL for caches, rate limits and logs",
            )
        compiled.add_parameter(parameter)
        group = locations.setdefault(location, {"type": "object", "properties": {}})
        group["properties"][name] = translator.translate(schema, schema_at, view)
        if parameter.required:
            group.setdefault("required", []).append(name)
    schemas: dict[str | None, dict[str, Any]] = {}
    if locations:
        schemas[None] = _combined(locations, None)
    body = operation.get("requestBody")
    if body is not None:
        body, body_at = description.resolve(body, at + "/requestBody")
        content = body.get("content") if isinstance(body, Mapping) else None
        if not isinstance(content, Mapping) or not content:
            raise description.error(body_at, "a requestBody needs content")
        compiled.body_required = body.get("required") is True
        for media, entry in content.items():
            media = str(media).lower()
            media_at = f"{body_at}/content/{media.replace('/', '~1')}"
            entry = entry if isinstance(entry, Mapping) else {}
            schema = entry.get("schema")
            kind = kind_of(media)
            guide = Guide(description, [(schema, media_at + "/schema")] if schema is not None else [])
            if kind != "json":
                guide.warm(options.max_depth // 4)  # form and multipart values are coerced along it
            rules = None
            if schema is not None and (kind != OTHER or "*" in media):
                try:
                    rules = plans.plan(schema, media_at + "/schema")
                except RuleError as exc:
                    raise description.error(exc.pointer, exc.reason) from None
            compiled.add_media(BodyMedia(declared=media, kind=kind, guide=guide, rules=rules))
            if schema is not None and (kind != OTHER or "*" in media):
                body_schema = translator.translate(schema, media_at + "/schema", view)
                schemas[media] = _combined(locations, body_schema)
    return _Pending(compiled, at, schemas)


def _response_schemas(
    description: Description, translator: SchemaTranslator, at: str, operation: Mapping[str, Any]
) -> list[tuple[str, str, Any]]:
    """``(status, media, translated schema)`` for every JSON response schema of an operation."""
    found: list[tuple[str, str, Any]] = []
    for status, raw in (operation.get("responses") or {}).items():
        response, response_at = description.resolve(raw, f"{at}/responses/{status}")
        if not isinstance(response, Mapping):
            continue
        for media, entry in (response.get("content") or {}).items():
            essence = str(media).lower()
            if kind_of(essence) != "json" and "*" not in essence:
                continue
            if isinstance(entry, Mapping) and "schema" in entry:
                where = f"{response_at}/content/{essence.replace('/', '~1')}/schema"
                schema = translator.translate(entry["schema"], where, "response")
                found.append((str(status), essence, schema))
    return found


def _combined(locations: Mapping[str, Any], body: Any) -> dict[str, Any]:
    properties = dict(locations)
    if body is not None:
        properties["body"] = body
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "properties": properties}


def _parameter_schema(description: Description, param: Mapping[str, Any], at: str) -> tuple[Any, str, bool]:
    if "schema" in param:
        return param["schema"], at + "/schema", False
    content = param.get("content")
    if isinstance(content, Mapping) and content:
        media, entry = next(iter(content.items()))
        schema = entry.get("schema", True) if isinstance(entry, Mapping) else True
        return (
            schema,
            f"{at}/content/{str(media).replace('/', '~1')}/schema",
            kind_of(str(media).lower()) == "json",
        )
    return True, at, False


def _template_names(template: str) -> list[str]:
    names: list[str] = []
    rest = template
    while "{" in rest:
        start = rest.index("{")
        end = rest.find("}", start)
        if end < 0:
            break
        names.append(rest[start + 1 : end])
        rest = rest[end + 1 :]
    return names


def check_description(config: Config) -> None:
    """Load and compile ``config``'s OpenAPI description as the guards will, or raise ``OpenAPIError``.

    So that a description the gateway or the middleware would refuse is refused before
    anything starts (``config check``, the gateway before it listens).
    """
    if config.openapi is None:
        return
    compile_description(load_description(config.openapi, config.validation.allow_external_refs), config)


def check_file(path: str | os.PathLike[str]) -> list[tuple[str, str]]:
    """Every problem of a configuration file (and the environment) and its description; empty when good."""
    from bastion.config import ConfigError, load_config
    from bastion.validation.openapi import OpenAPIError

    try:
        config = load_config(path)
    except ConfigError as exc:
        return exc.problems
    try:
        check_description(config)
    except OpenAPIError as exc:
        return [("openapi", str(exc))]
    return []
