"""Rendering a :class:`Problem` as ``application/problem+json``, with bounds on every echoed text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_from_bytes

import orjson

from bastion.problems.base import Problem
from bastion.problems.links import ProblemLinks, links_of

PROBLEM_CONTENT_TYPE = b"application/problem+json"


@dataclass(frozen=True, slots=True)
class RenderedProblem:
    """A problem ready to send: status, headers as ASGI byte pairs, and the body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


#: A rendered problem body is never larger than this: trailing ``errors[]`` entries are
#: dropped first (and counted in ``errors_truncated``), then extension members.
MAX_BODY_BYTES = 16 * 1024
#: ``instance`` is cut to this many characters, after escaping.
MAX_INSTANCE_CHARS = 1024
#: Names, fields and pointers in ``errors[]`` are cut to this many characters.
MAX_NAME_CHARS = 128
#: ``title`` and ``detail`` are cut to this (and the other strings of ``errors[]`` entries
#: when the body would be larger than :data:`MAX_BODY_BYTES`).
MAX_TEXT_CHARS = 1024

# What may stand unescaped in ``instance``: RFC 3986's unreserved and reserved
# characters, and ``%`` so that the raw path's own escapes stay as they are.
_INSTANCE_SAFE = "-._~!#$&'()*+,/:;=?@[]%"
_INSTANCE_PLAIN = re.compile(rf"[A-Za-z0-9\-._~!#$&'()*+,/:;=?@\[\]%]{{0,{MAX_INSTANCE_CHARS}}}")
_NAME_KEYS = frozenset({"field", "pointer", "name"})


def _cut_instance(quoted: str) -> str:
    if len(quoted) <= MAX_INSTANCE_CHARS:
        return quoted
    cut = quoted[:MAX_INSTANCE_CHARS]
    # Never end inside a %XX escape.
    escape = cut.find("%", MAX_INSTANCE_CHARS - 2)
    return cut if escape == -1 else cut[:escape]


def escape_instance(instance: str) -> str:
    """``instance`` made safe to echo: percent-encoded outside RFC 3986's characters, bounded.

    Control characters, spaces, quotes, angle brackets and non-ASCII characters (as
    UTF-8) are percent-encoded; existing escapes are kept, so escaping twice changes
    nothing. The result has at most :data:`MAX_INSTANCE_CHARS` characters.
    """
    if _INSTANCE_PLAIN.fullmatch(instance):
        return instance
    return _cut_instance(quote(instance, safe=_INSTANCE_SAFE, errors="surrogatepass"))


def request_instance(scope: Mapping[str, Any]) -> str:
    """The ``instance`` of a problem about an ASGI request: its raw path, escaped and bounded.

    The raw path (as the client sent it) is used where the server gives it, so that a
    decoded ``%0D%0A`` never comes back as a line break.
    """
    raw = scope.get("raw_path")
    if isinstance(raw, bytes) and raw:
        # ASGI keeps the query out of raw_path; a server that does not must not make it echoed.
        return _cut_instance(quote_from_bytes(raw.partition(b"?")[0], safe=_INSTANCE_SAFE))
    return escape_instance(str(scope.get("path", "")))


def _cut(value: Any, limit: int) -> Any:
    if isinstance(value, str) and len(value) > limit:
        return value[:limit]
    return value


def _bounded_names(entry: Mapping[str, Any]) -> Mapping[str, Any]:
    """``entry``, or a copy with its names and pointers cut to :data:`MAX_NAME_CHARS`."""
    for key in _NAME_KEYS:
        value = entry.get(key)
        if isinstance(value, str) and len(value) > MAX_NAME_CHARS:
            return {k: _cut(v, MAX_NAME_CHARS) if k in _NAME_KEYS else v for k, v in entry.items()}
    return entry


def _bounded_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: _cut(value, MAX_NAME_CHARS if key in _NAME_KEYS else MAX_TEXT_CHARS)
        for key, value in entry.items()
    }


def _valid_text(value: Any) -> Any:
    """``value`` with every string made encodable (lone surrogates replaced)."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, Mapping):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_valid_text(v) for v in value]
    return value


def _dumps(body: dict[str, Any]) -> bytes:
    try:
        return orjson.dumps(body)
    except orjson.JSONEncodeError:
        # Only lone surrogates (from a client's bytes decoded with surrogateescape) get
        # here on the common path; anything else unserialisable is the caller's error.
        return orjson.dumps(_valid_text(body))


def _with_errors(body: dict[str, Any], entries: list[bytes]) -> bytes:
    """``body`` with as many of the encoded ``entries`` as fit in :data:`MAX_BODY_BYTES`."""
    data = _dumps(body)
    if not entries:
        return data
    # Compact JSON: the members cost exactly these bytes, so the number of entries that
    # fit is known before the body is put together.
    room = MAX_BODY_BYTES - len(data) - len(',"errors":[]') - len(',"errors_truncated":') - 6
    kept = 0
    for entry in entries:
        room -= len(entry) + 1
        if room < 0:
            break
        kept += 1
    data = data[:-1] + b',"errors":[' + b",".join(entries[:kept]) + b"]"
    if kept < len(entries):
        data += b',"errors_truncated":' + str(len(entries) - kept).encode()
    return data + b"}"


def _encode(body: dict[str, Any]) -> bytes:
    """The problem body as JSON of at most :data:`MAX_BODY_BYTES`, whatever its members hold."""
    errors = body.get("errors")
    if errors:
        body["errors"] = [_bounded_names(entry) for entry in errors]
    data = _dumps(body)
    if len(data) <= MAX_BODY_BYTES:
        return data
    # Too large: fit the errors[] entries one by one (their text cut too), then, if that
    # is not enough, drop the extension members and keep little of the title and detail
    # (escaped control characters take six bytes a character).
    body.pop("errors", None)
    entries = [_dumps(_bounded_entry(entry)) for entry in errors] if errors else []
    data = _with_errors(body, entries)
    if len(data) <= MAX_BODY_BYTES:
        return data
    standard = {k: _cut(v, _LAST_RESORT_CHARS) for k, v in body.items() if k in _STANDARD_MEMBERS}
    standard["extensions_truncated"] = len(body) - len(standard)
    return _with_errors(standard, entries)


_STANDARD_MEMBERS = frozenset({"type", "title", "status", "detail", "instance", "code", "trace_id"})
_LAST_RESORT_CHARS = 256


def render(
    problem: Problem,
    *,
    type_base: str | ProblemLinks,
    trace_id: str,
    instance: str | None,
    extra_headers: Iterable[tuple[bytes, bytes]] = (),
) -> RenderedProblem:
    """Render ``problem`` as an ``application/problem+json`` response.

    This is the one place problems become bytes; guards and adapters all call it. Here
    every problem gets the same bounds on echoed text, whoever built it: ``instance``
    escaped (:func:`escape_instance`), names and pointers in ``errors[]`` cut to
    :data:`MAX_NAME_CHARS`, other text to :data:`MAX_TEXT_CHARS`, and the body to
    :data:`MAX_BODY_BYTES`.

    ``type_base`` is ``errors.type_base``, or better the :class:`ProblemLinks` built once
    from the ``errors`` settings: every problem carries ``Link: <docs>; rel="describedby"``
    for its code (the default link for a plain string), rendered once per code.
    """
    links = links_of(type_base)
    body = problem.to_dict(
        type_base=links.type_base,
        trace_id=trace_id,
        instance=escape_instance(instance) if instance is not None else None,
    )
    if len(problem.title) > MAX_TEXT_CHARS:
        body["title"] = problem.title[:MAX_TEXT_CHARS]
    if problem.detail is not None and len(problem.detail) > MAX_TEXT_CHARS:
        body["detail"] = problem.detail[:MAX_TEXT_CHARS]
    data = _encode(body)
    headers = [
        (b"content-type", PROBLEM_CONTENT_TYPE),
        (b"content-length", str(len(data)).encode()),
        (b"cache-control", b"no-store"),
    ]
    link = links.link_header(problem.code)
    if link is not None:
        headers.append(link)
    headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in problem.headers.items())
    headers.extend(extra_headers)
    return RenderedProblem(problem.status, headers, data)
