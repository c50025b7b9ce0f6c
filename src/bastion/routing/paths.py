"""Canonical request paths: one spelling of a path for every guard, the application and the upstream.

A path can be written many ways that a server reads as one: ``//login``,
``/./login``, ``/x/../login``, ``/%6Cogin``. A rule that compares spellings is
dodged by the next spelling, so the boundary rewrites the request's path once,
before anything reads it, into the form :func:`canonical_path` gives:

- percent-escapes of unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded,
  every other escape keeps its byte with upper-case hex digits;
- empty segments are dropped (``//`` becomes ``/``), a trailing slash is kept;
- dot segments are resolved (RFC 3986, section 5.2.4).

Paths that cannot be read one way are refused with ``400 BAD_REQUEST``: an
encoded ``/`` (``%2F``), an encoded or raw control character, a backslash (some
servers take it for ``/``), a path parameter (``;`` in a segment: servers such as
Tomcat drop it before routing, so ``/login;x`` would reach ``/login`` unchecked;
``%3B`` is a literal semicolon), ``..`` above the root, a broken escape, and any
request target that is not a path (origin-form), except ``OPTIONS *`` and an
absolute-form target naming the host the request was sent to.

Everything here is pure: bytes in, bytes out, or a problem.
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from bastion.asgi import Scope
from bastion.problems import BadRequest

_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
#: Bytes refused as they are and when percent-encoded: control characters, and the backslash
#: that some servers take for a slash.
_REFUSED = frozenset(range(0x20)) | {0x7F, ord("\\")}
#: A path already in canonical form: non-empty segments of RFC 3986 ``pchar`` bytes (but
#: ``;`` and ``%``), none of them ``.`` or ``..``, and an optional trailing slash. Most
#: requests match it and are left as they are.
_CANONICAL = re.compile(rb"(?:/(?!\.\.?(?:/|\Z))[A-Za-z0-9\-._~!$&'()*+,=:@]+)*/?")
_REFUSED_RAW = re.compile(rb"[\x00-\x20\x7f\\]")
_HEX_DIGITS = b"0123456789abcdefABCDEF"
#: Every two hex digits after a ``%`` -> what they become: the unreserved character, the
#: escape in upper case, or ``b""`` for a byte refused (``/``, control characters, backslash).
_SETTLED: dict[bytes, bytes] = {
    bytes((high, low)): (
        b""
        if value == 0x2F or value in _REFUSED
        else bytes((value,))
        if value in _UNRESERVED
        else b"%%%02X" % value
    )
    for high in _HEX_DIGITS
    for low in _HEX_DIGITS
    for value in (int(bytes((high, low)), 16),)
}
_UNSAFE = re.compile(rb"[^A-Za-z0-9\-._~!$&'()*+,=:@/%]")
#: The scope key under which :func:`canonicalize` keeps the ``raw_path`` it settled, so that
#: a second call on the same request (the gateway's, then the boundary's) costs one lookup.
#: Kept by identity: a ``raw_path`` anyone writes afterwards is settled again.
_SETTLED_KEY = "bastion.canonical_raw_path"
_ABSOLUTE = re.compile(rb"https?://([^/?#]*)(.*)", re.IGNORECASE | re.DOTALL)


def _refuse(reason: str) -> BadRequest:
    return BadRequest(detail=f"the request path {reason}")


def _decode(raw: bytes) -> bytes:
    """``raw`` with unreserved escapes decoded, other escapes in upper case, unsafe bytes escaped."""
    if b";" in raw:
        raise _refuse("has a path parameter (';'); send a literal semicolon as %3B")
    if _REFUSED_RAW.search(raw):
        raise _refuse("has a control character, space or backslash")
    head, *escaped = raw.split(b"%")
    parts = [head]
    for part in escaped:
        settled = _SETTLED.get(part[:2])
        if settled is None:
            raise _refuse("has a broken percent-escape")
        if not settled:
            raise _refuse("has an encoded slash (%2F), control character or backslash")
        parts += (settled, part[2:])
    decoded = b"".join(parts)
    if _UNSAFE.search(decoded) is None:
        return decoded
    # Escaped so that the upstream reads the same characters.
    return _UNSAFE.sub(lambda found: b"%%%02X" % found[0][0], decoded)


def canonical_path(raw: bytes) -> bytes:
    """The canonical form of the raw (still percent-encoded) path ``raw``.

    Raises :class:`~bastion.problems.BadRequest` when ``raw`` cannot be read one way
    (see the module documentation).
    """
    if raw[:1] != b"/":
        raise _refuse("must start with /")
    if _CANONICAL.fullmatch(raw):
        return raw
    segments = _decode(raw).split(b"/")[1:]
    kept: list[bytes] = []
    trailing_slash = False
    for segment in segments:
        # A segment that resolves to nothing leaves the path ending in a slash if it is last.
        trailing_slash = True
        if segment == b"..":
            if not kept:
                raise _refuse("goes above the root (..)")
            kept.pop()
        elif segment and segment != b".":
            kept.append(segment)
            trailing_slash = False
    if not kept:
        return b"/"
    return b"/" + b"/".join(kept) + (b"/" if trailing_slash else b"")


def _origin_form(target: bytes, host: bytes | None) -> bytes:
    """The path of an absolute-form ``target``, accepted only when it names the requested host."""
    found = _ABSOLUTE.fullmatch(target)
    if found is None:
        raise _refuse("must start with / (origin-form), or be * for OPTIONS")
    authority, path = found.groups()
    # The authority must be the one the client addressed (its Host header): a gateway is no
    # forward proxy, and the upstream's address only ever comes from the configuration.
    if host is None or authority.lower() != host.lower() or b"@" in authority:
        raise BadRequest(detail="an absolute request target must name this server")
    return path or b"/"


def canonicalize(scope: Scope) -> None:
    """Rewrite ``scope``'s ``path`` and ``raw_path`` to the canonical path of its request target.

    ``raw_path`` is read when the server gives it (it is still percent-encoded;
    ``path`` is not). ``OPTIONS *`` keeps its ``*``. A second call on the same scope
    returns at once unless ``raw_path`` was replaced in between. Raises
    :class:`~bastion.problems.BadRequest` for a target that has no canonical path.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        raw = quote(scope["path"], safe="/:@!$&'()*+,;=-._~").encode("ascii")
    elif raw is scope.get(_SETTLED_KEY):
        # Settled already (the gateway does it before its own endpoints): no second pass.
        return
    elif raw[:1] == b"/" and _CANONICAL.fullmatch(raw):
        scope[_SETTLED_KEY] = raw
        return
    if raw == b"*" and scope["method"] == "OPTIONS":
        return
    if raw[:1] != b"/":
        host = next((value for key, value in scope["headers"] if key == b"host"), None)
        raw = _origin_form(bytes(raw), host)
    path = canonical_path(raw)
    # Compared with the scope's own ``raw_path``: an absolute-form target whose path is
    # already canonical must still be rewritten to that path.
    if path != scope.get("raw_path"):
        scope["raw_path"] = path
        scope["path"] = unquote(path.decode("ascii"))
    scope[_SETTLED_KEY] = scope["raw_path"]


def protective_form(path: str, *, case_sensitive: bool, strict_slashes: bool) -> str:
    """``path`` (or a route template) as protective matching compares it.

    Rate limit ``match`` entries and ``idempotency.require`` ignore case and a
    trailing slash unless ``routing.case_sensitive`` / ``routing.strict_slashes`` are
    set: a protective rule that covers a little more than it names is safe, one that
    covers less is a way around it.
    """
    if not case_sensitive:
        path = path.lower()
    if not strict_slashes and len(path) > 1 and path.endswith("/"):
        path = path[:-1]
    return path
