"""Loading an OpenAPI 3.0 / 3.1 description: YAML or JSON, local ``$ref`` resolution, clear errors.

A broken description raises :class:`OpenAPIError` naming the file, the JSON pointer
of the offending node and the reason, so a bad description stops start-up with a
message a person can act on instead of a traceback.

A description is untrusted input too: nothing in it makes bastion fetch a URL or
read a file outside the description's folder unless ``allow_external_refs`` lists
it. Every ``$ref``, ``$schema`` and ``$dynamicRef`` is checked when the description
is parsed, and :class:`References` is the only retriever jsonschema-rs is given.
"""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import orjson
import yaml

from bastion import exactjson
from bastion.aliases import check_aliases
from bastion.protocols import HTTP_METHODS

#: Keywords whose value names another document that a resolver would load.
REFERENCE_KEYWORDS = ("$ref", "$schema", "$dynamicRef", "$recursiveRef")
#: Meta-schemas jsonschema-rs carries itself (a ``$schema`` naming one loads nothing).
BUILT_IN_META_SCHEMAS = frozenset(
    {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2019-09/schema",
        "http://json-schema.org/draft-07/schema",
        "http://json-schema.org/draft-06/schema",
        "http://json-schema.org/draft-04/schema",
    }
)
#: Members holding data, not schemas or references: an ``example`` may hold any ``$ref``.
_DATA_MEMBERS = frozenset({"example", "examples", "default", "enum", "const"})
#: The largest external document read, and how long a fetch may take.
MAX_EXTERNAL_BYTES = 4 << 20
FETCH_TIMEOUT_SECONDS = 10.0


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


class RefusedReference(Exception):
    """A reference that :class:`References` does not allow; the message names only the reference."""

    def __init__(self, reference: str) -> None:
        self.reference = reference
        super().__init__(
            f"reference {reference!r} is not allowed: a description may only refer to files "
            "in its own folder, and to other files or URLs that allow_external_refs lists"
        )


@dataclass(frozen=True, slots=True)
class References:
    """Which documents outside itself a description may load, and the retriever that loads them.

    Files in the description's ``folder`` (after symlinks and ``..`` are resolved)
    are allowed; so are the ``allowed`` URL prefixes (``https://schemas.example.com/``)
    and paths (a file or a folder, relative to the description's folder). Anything
    else is refused before it is read, with the same message whether it exists or not.
    """

    folder: Path | None = None
    allowed: tuple[str, ...] = ()

    def _roots(self) -> list[str]:
        roots = [] if self.folder is None else [os.path.realpath(self.folder)]
        for entry in self.allowed:
            if urlsplit(entry).scheme.lower() in ("http", "https"):
                continue
            path = Path(unquote(urlsplit(entry).path)) if entry.startswith("file:") else Path(entry)
            if not path.is_absolute() and self.folder is not None:
                path = self.folder / path
            if path.is_absolute():
                roots.append(os.path.realpath(path))
        return roots

    def _path(self, target: str) -> str | None:
        parts = urlsplit(target)
        scheme = parts.scheme.lower()
        if scheme == "file":
            return os.path.realpath(unquote(parts.path))
        if scheme or self.folder is None:
            return None  # urn:, json-schema:, ftp: and the like name nothing bastion may load
        return os.path.realpath(self.folder / unquote(parts.path))

    def permits(self, reference: str) -> bool:
        """Whether ``reference`` (absolute, or relative to the description) may be loaded."""
        target = reference.split("#", 1)[0]
        if not target:
            return True  # a pointer into the same document
        if urlsplit(target).scheme.lower() in ("http", "https"):
            return any(_under_url(target, prefix) for prefix in self.allowed)
        path = self._path(target)
        return path is not None and any(
            path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in self._roots()
        )

    def __call__(self, uri: str) -> Any:
        """The document at ``uri`` (JSON or YAML), for jsonschema-rs; ``RefusedReference`` if not allowed."""
        if not self.permits(uri):
            raise RefusedReference(uri)
        target = uri.split("#", 1)[0]
        path = self._path(target)
        if path is None:
            opener = urllib.request.build_opener(_CheckedRedirects(self))
            # The scheme is http or https: permits() allows nothing else that has no path.
            with opener.open(target, timeout=FETCH_TIMEOUT_SECONDS) as response:
                raw = response.read(MAX_EXTERNAL_BYTES + 1)
        else:
            with open(path, "rb") as file:
                raw = file.read(MAX_EXTERNAL_BYTES + 1)
        if len(raw) > MAX_EXTERNAL_BYTES:
            raise ValueError(f"{uri} is larger than {MAX_EXTERNAL_BYTES} bytes")
        return _parse(raw, uri)

    def check(self, document: Any, source: str) -> None:
        """Raise :class:`OpenAPIError` at a reference in ``document`` that is not allowed.

        Data members (``example``, ``default``, ``enum``...) are skipped: a ``$ref`` in
        them is a value, not a reference. Whatever this walk cannot tell apart, the
        retriever still refuses when jsonschema-rs asks for it.
        """
        stack: list[tuple[Any, str]] = [(document, "")]
        while stack:
            node, at = stack.pop()
            if isinstance(node, Mapping):
                for keyword in REFERENCE_KEYWORDS:
                    value = node.get(keyword)
                    if (
                        isinstance(value, str)
                        and not _loads_nothing(keyword, value)
                        and not self.permits(value)
                    ):
                        raise OpenAPIError(
                            source, f"{at}/{escape_token(keyword)}", str(RefusedReference(value))
                        )
                stack.extend(
                    (child, f"{at}/{escape_token(str(key))}")
                    for key, child in node.items()
                    if key not in _DATA_MEMBERS and isinstance(child, Mapping | list)
                )
            elif isinstance(node, list):
                stack.extend(
                    (child, f"{at}/{index}")
                    for index, child in enumerate(node)
                    if isinstance(child, Mapping | list)
                )


class _CheckedRedirects(urllib.request.HTTPRedirectHandler):
    """Redirects followed only to URLs that are allowed too."""

    def __init__(self, references: References) -> None:
        self.references = references

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        if not self.references.permits(newurl):
            raise RefusedReference(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _under_url(url: str, prefix: str) -> bool:
    # "https://a.example" must not admit "https://a.example.evil/": a prefix ends at a "/".
    return url == prefix or url.startswith(prefix if prefix.endswith("/") else prefix + "/")


def _loads_nothing(keyword: str, value: str) -> bool:
    if keyword == "$schema":
        return value.rstrip("#") in BUILT_IN_META_SCHEMAS
    return value.startswith("#")


def follow_local_ref(document: Any, ref: Any) -> tuple[Any, str] | None:
    """The node a local ``$ref`` (``#/components/schemas/Order``) names and its JSON pointer
    (percent-decoded), or ``None`` when ``ref`` is not local or names nothing."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return None
    pointer = unquote(ref[1:])
    node: Any = document
    for raw in pointer.split("/")[1:]:
        token = unescape_token(raw)
        if isinstance(node, Mapping) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node, pointer


@dataclass(slots=True)
class Description:
    """A loaded OpenAPI description: the document, its version and where it came from."""

    document: dict[str, Any]
    source: str
    #: ``(3, 0)`` or ``(3, 1)``.
    version: tuple[int, int]
    #: What the description may load besides itself (nothing, for one parsed from text).
    references: References = field(default_factory=References)

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
        found = follow_local_ref(self.document, ref)
        if found is None:
            raise self.error(at, f"$ref {ref!r} points to nothing")
        return found[0]

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


def _parse(raw: bytes, source: str) -> Any:
    """The value of a JSON or YAML document; :class:`OpenAPIError` with the position if neither."""
    data: Any
    if raw.lstrip()[:1] == b"{":
        try:
            data = exactjson.loads(raw)
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
        # Before anything walks it: an alias bomb or an alias cycle is refused, not expanded.
        problem, _ = check_aliases(data)
        if problem is not None:
            raise OpenAPIError(source, "", problem)
    return data


def parse_document(text: str | bytes, source: str, references: References | None = None) -> Description:
    """Parse a description from its text (JSON or YAML) and check its outline and its references.

    ``references`` says what it may load besides itself: by default nothing.
    """
    data = _parse(text.encode() if isinstance(text, str) else text, source)
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
    references = references or References()
    references.check(data, source)
    return Description(data, source, (3, int(parts[1])), references)


def load_description(path: str | os.PathLike[str], allow_external_refs: Sequence[str] = ()) -> Description:
    """Read and parse the description at ``path``.

    It may refer to files in its own folder, and to the URL prefixes and paths
    (relative to its folder) of ``allow_external_refs``; to nothing else.
    """
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise OpenAPIError(str(file), "", f"cannot read the file: {exc.strerror}") from None
    folder = file.resolve().parent
    return parse_document(raw, str(file), References(folder, tuple(allow_external_refs)))
