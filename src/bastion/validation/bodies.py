"""Request bodies: media types, JSON with a depth limit, form-urlencoded and multipart data.

Sans-I/O: bytes in, Python values out, problems raised for bodies that cannot
be parsed at all (schema violations are the compiled schema's business).
"""

from __future__ import annotations

import codecs
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from bastion.problems import MalformedBody
from bastion.validation.coerce import Guide, coerce_tree
from bastion.validation.params import nest_pairs, parse_query

JSON = "json"
FORM = "form"
MULTIPART = "multipart"
OTHER = "other"


@dataclass(frozen=True, slots=True)
class MediaType:
    """A parsed ``Content-Type``: ``type/subtype`` in lower case and its parameters."""

    essence: str
    params: Mapping[str, str]

    @property
    def kind(self) -> str:
        """How a body of this type is parsed: ``json``, ``form``, ``multipart`` or ``other``."""
        return kind_of(self.essence)


def kind_of(essence: str) -> str:
    """How a body of media type ``essence`` is parsed."""
    if essence == "application/json" or essence.endswith("+json"):
        return JSON
    if essence == "application/x-www-form-urlencoded":
        return FORM
    if essence == "multipart/form-data":
        return MULTIPART
    return OTHER


def parse_media_type(raw: str) -> MediaType:
    """Parse a ``Content-Type`` header value."""
    essence, _, rest = raw.partition(";")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                params[name.strip().lower()] = value
    return MediaType(essence.strip().lower(), params)


def matches(declared: str, essence: str) -> bool:
    """Whether a body of type ``essence`` fits a declared media range (``application/*``, ``*/*``)."""
    if declared == essence or declared == "*/*":
        return True
    if declared.endswith("/*"):
        return essence.startswith(declared[:-1])
    return False


def decode_text(body: bytes, charset: str | None) -> str:
    """The body as text in its declared charset (UTF-8 when none)."""
    name = (charset or "utf-8").lower()
    try:
        return body.decode(name)
    except LookupError:
        raise MalformedBody(detail=f"the charset {charset} is unknown") from None
    except UnicodeDecodeError as exc:
        raise MalformedBody(detail=f"the body is not valid {name} text at byte {exc.start}") from None


def is_utf8(charset: str | None) -> bool:
    """Whether ``charset`` names UTF-8 (or is absent, which means UTF-8 for JSON)."""
    if charset is None:
        return True
    try:
        return codecs.lookup(charset).name in ("utf-8", "ascii")
    except LookupError:
        return False


def parse_json(body: bytes | str, max_depth: int) -> Any:
    """The JSON value of ``body``; ``MalformedBody`` with the position, or when nested too deep."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":
            raise MalformedBody(detail=f"the JSON nests deeper than {max_depth} levels") from None
        raise MalformedBody(
            detail=f"invalid JSON at line {exc.lineno}, column {exc.colno} (byte {exc.pos}): {exc.msg}"
        ) from None
    # Brackets are counted first: a body with fewer than ``max_depth`` of them cannot
    # nest deeper, and that is nearly every body, so the walk below is rare.
    if isinstance(value, dict | list):
        raw = body.encode() if isinstance(body, str) else body
        if raw.count(b"[") + raw.count(b"{") > max_depth and _depth_exceeds(value, max_depth):
            raise MalformedBody(detail=f"the JSON nests deeper than {max_depth} levels")
    return value


def _depth_exceeds(value: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1))
    return False


def parse_form(body: bytes, charset: str | None, guide: Guide, lenient: bool, max_depth: int) -> Any:
    """An ``application/x-www-form-urlencoded`` body as an object coerced along ``guide``."""
    if not is_utf8(charset):
        text = decode_text(body, charset)
    else:
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            text = decode_text(body, "utf-8")
    nested = nest_pairs(parse_query(text), max_depth)
    return coerce_tree(nested, guide, lenient)


def parse_multipart(body: bytes, media: MediaType, guide: Guide, lenient: bool, max_depth: int) -> Any:
    """A ``multipart/form-data`` body as an object: text fields coerced along ``guide``.

    File parts become strings of their bytes read as Latin-1, so ``maxLength``
    bounds their size; nothing else about a file is checked.
    """
    boundary = media.params.get("boundary")
    if not boundary:
        raise MalformedBody(detail="the multipart body has no boundary parameter")
    delimiter = b"--" + boundary.encode("latin-1")
    chunks = body.split(delimiter)
    if len(chunks) < 2 or not chunks[-1].startswith(b"--"):
        raise MalformedBody(detail="the multipart body does not end with its closing boundary")
    pairs: list[tuple[str, str]] = []
    for index, chunk in enumerate(chunks[1:-1], start=1):
        head, sep, content = chunk.partition(b"\r\n\r\n")
        if not sep:
            raise MalformedBody(detail=f"part {index} of the multipart body has no header block")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        disposition = ""
        part_type = "text/plain"
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            lowered = name.strip().lower()
            if lowered == "content-disposition":
                disposition = value
            elif lowered == "content-type":
                part_type = value.strip()
        params = parse_media_type("x/x;" + disposition.partition(";")[2]).params
        field = params.get("name")
        if field is None:
            raise MalformedBody(detail=f"part {index} of the multipart body has no field name")
        if "filename" in params:
            pairs.append((field, content.decode("latin-1")))
        else:
            pairs.append((field, decode_text(content, parse_media_type(part_type).params.get("charset"))))
    return coerce_tree(nest_pairs(pairs, max_depth), guide, lenient)
