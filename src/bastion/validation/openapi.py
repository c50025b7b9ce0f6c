"""Loading an OpenAPI 3.0 / 3.1 description: YAML or JSON, local ``$ref`` resolution, clear errors.

A broken description raises :class:`OpenAPIError` naming the file, the JSON pointer
of the offending node and the reason, so a bad description stops start-up with a
message a person can act on instead of a traceback.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import orjson
import yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


class OpenAPIError(Exception):
    """A description that cannot be used: ``source``, the JSON ``pointer`` and the ``reason``."""

    def __init__(self, source: str, pointer: str, reason: str) -> None:
        self.source = source
        self.pointer = pointer
        self.reason = reason
        where = f" at {pointer}" if pointer else ""
        super().__init__(f"{source}{where}: {reason}")


class _Loader(yaml.CSafeLoader if yaml.__with_libyaml__ else yaml.SafeLoader):  # type: ignore[misc]
    """The safe YAML loader without timestamps: dates stay strings, as JSON would have them."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def escape_token(token: str) -> str:
    """One JSON pointer reference token, escaped (RFC 6901)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    """One JSON pointer reference token, unescaped (RFC 6901)."""
    return token.replace("~1", "/").replace("~0", "~")


def pointer_of(*tokens: str | int) -> str:
    """The JSON pointer made of ``tokens``."""
    return "".join("/" + escape_token(str(t)) for t in tokens)


@dataclass(slots=True)
class Description:
    """A loaded OpenAPI description: the document, its version and where it came from."""

    document: dict[str, Any]
    source: str
    #: ``(3, 0)`` or ``(3, 1)``.
    version: tuple[int, int]

    @property
    def is_30(self) -> bool:
        """Whether schemas follow OpenAPI 3.0 semantics (``nullable``, boolean exclusive bounds)."""
        return self.version < (3, 1)

    def error(self, pointer: str, reason: str) -> OpenAPIError:
        """An :class:`OpenAPIError` for this description."""
        return OpenAPIError(self.source, pointer, reason)

    def lookup(self, ref: str, at: str) -> Any:
        """The node a local ``$ref`` (``#/components/schemas/Order``) points to.

        ``at`` is the pointer of the ``$ref`` itself, for the error message.
        """
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise self.error(at, f"$ref {ref!r} is not a local reference (only '#/...' is supported)")
        node: Any = self.document
        for raw in unquote(ref[1:]).split("/")[1:]:
            token = unescape_token(raw)
            if isinstance(node, Mapping) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise self.error(at, f"$ref {ref!r} points to nothing")
        return node

    def resolve(self, node: Any, at: str, depth: int = 0) -> tuple[Any, str]:
        """``node`` with any chain of ``$ref`` followed: the target and its pointer."""
        while isinstance(node, Mapping) and "$ref" in node:
            if depth > 64:
                raise self.error(at, "$ref chain loops or is longer than 64 steps")
            ref = node["$ref"]
            node = self.lookup(ref, at + "/$ref")
            at = unquote(ref[1:])
            depth += 1
        return node, at

    def operations(self) -> Iterator[tuple[str, str, dict[str, Any], dict[str, Any]]]:
        """Every operation as ``(template, METHOD, path item, operation)``, in document order."""
        paths = self.document.get("paths") or {}
        for template, item in paths.items():
            at = pointer_of("paths", template)
            if not isinstance(template, str) or not template.startswith("/"):
                raise self.error(at, "a path template must start with /")
            item, _ = self.resolve(item, at)
            if not isinstance(item, Mapping):
                raise self.error(at, "a path item must be a mapping")
            for method in HTTP_METHODS:
                operation = item.get(method)
                if operation is None:
                    continue
                if not isinstance(operation, Mapping):
                    raise self.error(pointer_of("paths", template, method), "an operation must be a mapping")
                yield template, method.upper(), dict(item), dict(operation)

    def base_paths(self) -> list[str]:
        """The path prefixes of the ``servers`` (``/v1``), longest first; ``[""]`` when none has one."""
        servers = self.document.get("servers") or [{"url": "/"}]
        bases: set[str] = set()
        for index, server in enumerate(servers):
            if not isinstance(server, Mapping) or not isinstance(server.get("url"), str):
                raise self.error(pointer_of("servers", index), "a server needs a url")
            url = _substitute_variables(server["url"], server.get("variables") or {})
            if "://" in url:
                url = url.split("://", 1)[1]
                url = url[url.find("/") :] if "/" in url else ""
            bases.add(url.rstrip("/"))
        return sorted(bases, key=len, reverse=True)


def _substitute_variables(url: str, variables: Mapping[str, Any]) -> str:
    for name, variable in variables.items():
        default = variable.get("default", "") if isinstance(variable, Mapping) else ""
        url = url.replace("{" + str(name) + "}", str(default))
    return url


def parse_document(text: str | bytes, source: str) -> Description:
    """Parse a description from its text (JSON or YAML) and check its outline."""
    raw = text.encode() if isinstance(text, str) else text
    data: Any
    if raw.lstrip()[:1] == b"{":
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise OpenAPIError(
                source, "", f"not valid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    else:
        try:
            data = yaml.load(raw, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            reason = getattr(exc, "problem", None) or "syntax error"
            raise OpenAPIError(source, "", f"not valid YAML{where}: {reason}") from None
    if not isinstance(data, dict):
        raise OpenAPIError(source, "", "the description must be a mapping")
    version_text = data.get("openapi")
    if not isinstance(version_text, str):
        if "swagger" in data:
            raise OpenAPIError(source, "/swagger", "Swagger 2.0 is not supported; convert it to OpenAPI 3")
        raise OpenAPIError(source, "/openapi", "the 'openapi' version field is missing")
    parts = version_text.split(".")
    if len(parts) < 2 or parts[0] != "3" or parts[1] not in ("0", "1"):
        raise OpenAPIError(source, "/openapi", f"OpenAPI {version_text} is not supported; use 3.0.x or 3.1.x")
    if not isinstance(data.get("paths", {}), Mapping):
        raise OpenAPIError(source, "/paths", "paths must be a mapping")
    return Description(data, source, (3, int(parts[1])))


def load_description(path: str | os.PathLike[str]) -> Description:
    """Read and parse the description at ``path``."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise OpenAPIError(str(file), "", f"cannot read the file: {exc.strerror}") from None
    return parse_document(raw, str(file))
