"""Request bodies: media types, content codings, JSON, form-urlencoded and multipart data.

Sans-I/O: bytes in, Python values out, problems raised for bodies that cannot
be parsed at all (schema violations are the compiled schema's business).

Every body is read one way only, the way the application will read it: JSON and
form data are UTF-8 (another charset is 415), JSON objects have unique member
names (RFC 7493), and a compressed body is decoded here, under the size limit,
so the application receives the very bytes that were checked.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bastion import exactjson
from bastion.problems import AmbiguousRequest, MalformedBody, PayloadTooLarge, UnsupportedMediaType
from bastion.validation.coerce import Guide, coerce_tree
from bastion.validation.errors import cut
from bastion.validation.openapi import escape_token
from bastion.validation.params import nest_pairs, parse_query, repeated_field

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
    """Parse a ``Content-Type`` header value.

    A parameter given twice (``charset=utf-8; charset=utf-16``) is read as empty:
    applications would take either one, so neither is trusted.
    """
    essence, _, rest = raw.partition(";")
    params: dict[str, str] = {}
    if rest:
        for part in rest.split(";"):
            name, sep, value = part.strip().partition("=")
            if sep:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                name = name.strip().lower()
                params[name] = "" if name in params else value
    return MediaType(essence.strip().lower(), params)


def matches(declared: str, essence: str) -> bool:
    """Whether a body of type ``essence`` fits a declared media range (``application/*``, ``*/*``)."""
    if declared == essence or declared == "*/*":
        return True
    if declared.endswith("/*"):
        return essence.startswith(declared[:-1])
    return False


def require_utf8(media: MediaType) -> None:
    """415 unless ``media`` names UTF-8 or no charset: JSON and form bodies are UTF-8 only.

    A body read as one charset here and as raw UTF-8 by the application would be
    two different documents. The detail never repeats the client's charset value.
    """
    charset = media.params.get("charset")
    if charset is not None and charset.lower() != "utf-8":
        raise UnsupportedMediaType(detail="this body must be UTF-8: send charset=utf-8 or no charset")


def decode_utf8(body: bytes) -> str:
    """``body`` as UTF-8 text; ``MalformedBody`` at the first byte that is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedBody(detail=f"the body is not valid UTF-8 at byte {exc.start}") from None


#: The content codings decoded before validation, by token, with their zlib ``wbits``.
_CODINGS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def content_coding(values: Sequence[bytes]) -> str | None:
    """The one coding to undo for a request's ``Content-Encoding`` values; ``None`` for none.

    ``identity`` is no coding. Anything else than one of ``gzip``, ``x-gzip`` and
    ``deflate`` is 415: a body that is not decoded here cannot be checked.
    """
    tokens = [t.strip().lower() for v in values for t in v.decode("latin-1").split(",")]
    tokens = [t for t in tokens if t and t != "identity"]
    if not tokens:
        return None
    if len(tokens) > 1 or tokens[0] not in _CODINGS:
        raise UnsupportedMediaType(
            detail="the only Content-Encoding accepted is one of gzip, deflate or identity"
        )
    return tokens[0]


def decode_content(body: bytes, coding: str, limit: int) -> bytes:
    """``body`` decompressed, never holding more than ``limit`` + 1 bytes of output.

    Past ``limit`` decoded bytes it is 413; data that is not what its coding says
    (corrupt, cut short, or followed by anything) is 400. ``deflate`` is the zlib
    format of RFC 9110; a raw deflate stream, as some clients send, is taken too.
    """
    if not body:
        return body
    wbits = _CODINGS[coding]
    if wbits == 15 and (len(body) < 2 or body[0] & 0x0F != 8 or int.from_bytes(body[:2], "big") % 31):
        wbits = -15  # no zlib header: a raw deflate stream
    inflater = zlib.decompressobj(wbits)
    chunks: list[bytes] = []
    size = 0
    pending = body
    try:
        while not inflater.eof:
            before = len(pending)
            chunk = inflater.decompress(pending, limit + 1 - size)
            pending = inflater.unconsumed_tail
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(detail=f"the decoded body is larger than {limit} bytes")
            if not chunk and len(pending) == before:
                break  # no progress: the input ran out before the end of the stream
            chunks.append(chunk)
    except zlib.error:
        raise MalformedBody(detail=f"the body is not valid {coding} data") from None
    if not inflater.eof or inflater.unused_data:
        raise MalformedBody(detail=f"the body is not one complete {coding} stream")
    return b"".join(chunks)


def parse_json(body: bytes, max_depth: int) -> Any:
    """The JSON value of UTF-8 ``body``; ``MalformedBody`` with the position, when nested too
    deep, or when an object repeats a member name."""
    try:
        value = exactjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if exc.msg == "depth limit exceeded":
            raise MalformedBody(detail=f"the JSON nests deeper than {max_depth} levels") from None
        raise MalformedBody(
            detail=f"invalid JSON at line {exc.lineno}, column {exc.colno} (byte {exc.pos}): {exc.msg}"
        ) from None
    # Brackets are counted first: a body with fewer than ``max_depth`` of them cannot
    # nest deeper, and that is nearly every body, so the walk below is rare.
    if isinstance(value, dict | list):
        if body.count(b"[") + body.count(b"{") > max_depth and _depth_exceeds(value, max_depth):
            raise MalformedBody(detail=f"the JSON nests deeper than {max_depth} levels")
        if _may_repeat_names(body, value):
            _reject_repeated_names(body)
    return value


def _may_repeat_names(body: bytes, value: Any) -> bool:
    """Whether an object in ``body`` may repeat a member name (``False`` is certain).

    orjson keeps the last of repeated members silently; an application parser may
    keep the first. Colons tell them apart in linear time without a walk: every
    member has one colon outside strings, in the body and in orjson's compact
    serialisation of the value alike, and every colon inside a string of the
    value is in the body too (literally or as ``\\u003a``, counted here as one,
    which may overcount). So a body with no repeated names has no more colons
    than the serialisation, and a repeated name leaves at least one more.
    A value orjson will not serialise (nested past its 254 levels, which
    ``max_json_depth`` allows) is left to the exact check.
    """
    colons = body.count(b":")
    if not colons:
        return False
    if b"\\" in body:
        colons += body.count(b"\\u003a") + body.count(b"\\u003A")
    try:
        return colons != orjson.dumps(value).count(b":")
    except orjson.JSONEncodeError:
        return True


class _Repeated(dict[str, Any]):
    """A JSON object whose member names repeat."""


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    return members if len(members) == len(pairs) else _Repeated(members)


def _reject_repeated_names(body: bytes) -> None:
    """``MalformedBody`` naming the first object in ``body`` that repeats a member name, if any.

    The slow, exact check (the standard library's parser sees every member) for the
    rare body the colon count could not clear.
    """
    try:
        value = json.loads(body, object_pairs_hook=_pairs)
    except (ValueError, RecursionError):  # orjson read it, so this is not expected
        raise MalformedBody(detail="the JSON could not be checked for repeated member names") from None
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        node, pointer = stack.pop()
        if isinstance(node, _Repeated):
            where = f"the object at {pointer[:128]}" if pointer else "the top-level object"
            raise MalformedBody(detail=f"{where} repeats a member name (RFC 7493)")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        children = [(v, f"{pointer}/{escape_token(str(k))}") for k, v in items if isinstance(v, dict | list)]
        stack.extend(reversed(children))


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


def parse_form(body: bytes, guide: Guide, max_depth: int) -> Any:
    """A UTF-8 ``application/x-www-form-urlencoded`` body as an object coerced along ``guide``.

    Percent-escapes must decode to UTF-8 too: one that does not is 400, not a
    replacement character the application would never see.
    """
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        text = decode_utf8(body)
    try:
        pairs = parse_query(text, errors="strict")
    except UnicodeDecodeError:
        raise MalformedBody(detail="a percent-escape in the body is not UTF-8") from None
    return _form_value(pairs, guide, max_depth)


def _form_value(pairs: list[tuple[str, str]], guide: Guide, max_depth: int, relax: bool = True) -> Any:
    """Form pairs as the object they stand for, or 400 when a single field comes twice.

    ``relax``: with the coercions the schemas declare (``x-bastion-lenient``).
    """
    repeated = repeated_field(pairs, guide)
    if repeated is not None:
        raise AmbiguousRequest(detail=f"the form field {cut(repeated)!r} has more than one reading")
    return coerce_tree(nest_pairs(pairs, max_depth), guide, relax=relax)


def parse_multipart(body: bytes, media: MediaType, guide: Guide, max_depth: int) -> Any:
    """A ``multipart/form-data`` body as an object: text fields coerced along ``guide``.

    Text parts are UTF-8 (a part that names another charset is 415). File parts
    become strings of their bytes read as Latin-1, so ``maxLength`` bounds their
    size; nothing else about a file is checked. The parts are passed on as sent, so no
    coercion declared with ``x-bastion-lenient`` applies to them.
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
        if "name*" in params or "filename*" in params:
            # RFC 7578 section 4.2: not for form data, and frameworks disagree on it.
            raise MalformedBody(
                detail=f"part {index} of the multipart body names itself with name* or filename*"
            )
        field = params.get("name")
        if not field:
            # Missing, or given twice (read as empty): either way no one field name.
            raise MalformedBody(detail=f"part {index} of the multipart body has no one field name")
        if "filename" in params:
            pairs.append((field, content.decode("latin-1")))
        else:
            require_utf8(parse_media_type(part_type))
            pairs.append((field, decode_utf8(content)))
    return _form_value(pairs, guide, max_depth, relax=False)
