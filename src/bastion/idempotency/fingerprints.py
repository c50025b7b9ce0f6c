"""What makes two requests under one key the same request: their fingerprint.

A fingerprint is SHA-256 over the method, the path, the query string, the
``Content-Type`` and the body. A JSON body counts by its canonical form
(:mod:`bastion.idempotency.canonical`), any other by its bytes. An operation may
restrict the body part to some fields with ``x-bastion-idempotency-fingerprint``
(a list of JSON pointers), read once when the description is compiled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from bastion.idempotency.canonical import NotCanonical, read, selection
from bastion.jsonpointer import Pointers, parse_pointer_list

if TYPE_CHECKING:
    from bastion.protocols import CompiledDescription

#: The operation extension that restricts the fingerprint to fields of the JSON body.
FIELDS_EXTENSION = "x-bastion-idempotency-fingerprint"

#: The parsed pointers of one operation's ``x-bastion-idempotency-fingerprint``.
Fields = Pointers

_sha256 = hashlib.sha256


def is_json(content_type: bytes) -> bool:
    """Whether a ``Content-Type`` names JSON in UTF-8: ``application/json`` or
    ``application/*+json``, with no ``charset`` or ``charset=utf-8``."""
    media, _, params = bytes(content_type).partition(b";")
    media = media.strip().lower()
    if media != b"application/json" and not (media.startswith(b"application/") and media.endswith(b"+json")):
        return False
    for param in params.split(b";") if params else ():
        name, _, value = param.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() != b"utf-8":
            return False
    return True


def raw_fingerprint(method: str, path: str, query: bytes, content_type: bytes, body: bytes) -> str:
    """SHA-256 over method, path, query, Content-Type and the body's bytes: the fingerprint of a
    body that is not JSON, and of every body before fingerprints read JSON."""
    # The lengths first, then the parts (as UTF-8), in one formatting step.
    text = b"%d,%d,%d,%d,%d;%b%b%b%b%b" % (
        len(method),
        len(path),
        len(query),
        len(content_type),
        len(body),
        method.encode(),
        path.encode(),
        query,
        content_type,
        body,
    )
    return _sha256(text).hexdigest()


def fingerprint(
    method: str, path: str, query: bytes, content_type: bytes, body: bytes, fields: Fields | None = None
) -> str:
    """The fingerprint of a request: :func:`raw_fingerprint` with a JSON body replaced by its
    canonical form; with ``fields``, over method, path, query and those fields alone.

    A JSON body already in canonical form keeps the fingerprint it always had. A body that
    has no canonical form (not JSON, repeated member names, too deep, ...) counts by its
    bytes: canonical forms are themselves canonical, so no such body ever shares a
    fingerprint with a canonical one.
    """
    if body and is_json(content_type):
        try:
            value, form = read(body)
        except NotCanonical:
            pass
        else:
            if fields is not None:
                return _fields_fingerprint(method, path, query, selection(value, fields))
            body = form
    return raw_fingerprint(method, path, query, content_type, body)


def _fields_fingerprint(method: str, path: str, query: bytes, chosen: bytes) -> str:
    # Four lengths and an "f": never the layout of raw_fingerprint (five lengths).
    text = b"%d,%d,%d,%d,f;%b%b%b%b" % (
        len(method),
        len(path),
        len(query),
        len(chosen),
        method.encode(),
        path.encode(),
        query,
        chosen,
    )
    return _sha256(text).hexdigest()


def parse_fields(value: Any) -> Fields:
    """The pointers of an ``x-bastion-idempotency-fingerprint`` value (a non-empty list of
    RFC 6901 JSON pointers); :class:`ValueError` saying what is wrong otherwise."""
    return parse_pointer_list(value)


def operation_fields(
    operations: Iterable[Any],
) -> tuple[dict[tuple[str, str], Fields], list[tuple[str, str]]]:
    """The fields of every operation that declares ``x-bastion-idempotency-fingerprint``, by
    ``(METHOD, template)``, and the ``(where, reason)`` problems of the values that are wrong."""
    found: dict[tuple[str, str], Fields] = {}
    problems: list[tuple[str, str]] = []
    for operation in operations:
        extensions = getattr(operation, "extensions", None)
        if not isinstance(extensions, dict) or FIELDS_EXTENSION not in extensions:
            continue
        method, template = operation.method, operation.template
        try:
            found[(method, template)] = parse_fields(extensions[FIELDS_EXTENSION])
        except ValueError as exc:
            problems.append((f"paths.{template}.{method.lower()}.{FIELDS_EXTENSION}", str(exc)))
    return found, problems


def described_fields(api: CompiledDescription | None, source: str) -> dict[tuple[str, str], Fields]:
    """:func:`operation_fields` of a compiled description; a wrong value stops start-up with
    :class:`~bastion.config.ConfigError` naming the operation and the extension."""
    if api is None:
        return {}
    found, problems = operation_fields(api.operations)
    if problems:
        from bastion.config import ConfigError

        raise ConfigError(problems, source)
    return found


def fields_of(fields: dict[tuple[str, str], Fields], operation: Any) -> Fields | None:
    """The fields an operation restricts its fingerprint to, ``None`` for the whole body."""
    if operation is None or not fields:
        return None
    return fields.get((operation.method, operation.template))
