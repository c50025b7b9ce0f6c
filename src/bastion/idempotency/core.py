"""The sans-I/O core of idempotency: keys, records, decisions and response capture.

(Fingerprints, the other half of what a request is compared by, are in
:mod:`bastion.idempotency.fingerprints`.)

Nothing here does I/O or reads a clock; the guard and the stores do. Every rule
that decides what a request gets (claim, replay, mismatch, in progress) lives
here, so that the four stores cannot disagree about it.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Iterable
from typing import NamedTuple

import orjson

from bastion.asgi import HOP_BY_HOP

#: SHA-256, looked up once: record keys take one per request.
_sha256 = hashlib.sha256

#: The longest key accepted, in characters (after unquoting an RFC 8941 string).
MAX_KEY_LENGTH = 255

#: Response headers never stored nor replayed: hop-by-hop headers, ``Date`` (the replay has
#: its own) and headers that belong to one caller (a cookie or an authentication challenge
#: or answer handed to another caller would be a session or credential leak).
NOT_STORED_HEADERS = HOP_BY_HOP | {
    b"trailers",
    b"set-cookie",
    b"authentication-info",
    b"www-authenticate",
    b"date",
}

#: Names cached per filter at most: names past the bound (an application minting header
#: names) are worked out each time.
_MAX_STORED_NAMES = 1024


class HeaderFilter:
    """Which response headers are stored and replayed: :data:`NOT_STORED_HEADERS` and
    ``never`` (``idempotency.never_replay_headers``) are not.

    Header names seen so far map to the name to store (lower-cased), or ``b""`` for one
    never stored: a response's headers are sorted out with a dictionary lookup each, and
    every stored response shares the same name objects.
    """

    __slots__ = ("names", "never")

    def __init__(self, never: Iterable[str] = ()) -> None:
        self.never = NOT_STORED_HEADERS | {name.lower().encode("latin-1") for name in never}
        self.names: dict[bytes, bytes] = {}

    def stored_name(self, raw: bytes) -> bytes:
        """The name to store for the header ``raw``, or ``b""`` when it is never stored."""
        name = bytes(raw).lower()
        if name in self.never:
            name = b""
        if type(raw) is bytes and len(self.names) < _MAX_STORED_NAMES:
            self.names[raw] = name
        return name

    def kept(self, headers: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
        """The headers to store, names lower-cased, values copied (later layers edit in place)."""
        names = self.names
        try:
            # A known name: kept when its stored name is not b"". An unknown one: worked out.
            return [
                (name, bytes(value))
                for raw, value in headers
                if (name := names.get(raw)) or (name is None and (name := self.stored_name(raw)))
            ]
        except TypeError:  # a name that cannot be a dictionary key (a bytearray)
            return [(name, bytes(value)) for raw, value in headers if (name := self.stored_name(raw))]


#: The filter of captures and replays not given one (the defaults of ``idempotency``).
DEFAULT_FILTER = HeaderFilter()


#: Headers that describe a body; dropped from the replay of a response whose body was not kept.
_BODY_HEADERS = frozenset({b"content-length", b"content-type", b"content-encoding", b"etag", b"content-md5"})

REPLAYED_HEADER = (b"idempotent-replayed", b"true")
BODY_OMITTED_HEADER = (b"idempotent-body-omitted", b"true")


#: Matches a header value that is a bare token key (1 to 255 characters of %x21-7E, not
#: starting with a quote) with optional whitespace around it, the key in group 1: the
#: common case, in one C call. Anything else takes the rest of :func:`parse_key`.
match_bare_key = re.compile(rb"[ \t]*([\x21\x23-\x7e][\x21-\x7e]{0,254})[ \t]*").fullmatch


class KeyFormatError(ValueError):
    """The ``Idempotency-Key`` header is not a usable key; the message says why."""


def parse_key(raw: bytes) -> str:
    """The key in an ``Idempotency-Key`` header value.

    Accepts an RFC 8941 sf-string (``"abc"``, with ``\\"`` and ``\\\\`` escapes, as
    the IETF draft specifies) or a bare token of visible ASCII (``abc``). The key
    is 1 to 255 characters. Raises :class:`KeyFormatError` otherwise.
    """
    bare = match_bare_key(raw)
    if bare is not None:
        return bare[1].decode("ascii")
    # A quoted string, or a key to reject with the reason why.
    value = raw.strip(b" \t")
    if not value:
        raise KeyFormatError("the key is empty")
    if value[0] == 0x22:  # '"': an RFC 8941 string
        return _parse_sf_string(value)
    if len(value) > MAX_KEY_LENGTH:
        raise KeyFormatError(f"the key is longer than {MAX_KEY_LENGTH} characters")
    # isascii + isprintable + no space is exactly %x21-7E, without a loop in Python.
    key = value.decode("latin-1")
    if not (key.isascii() and key.isprintable()) or " " in key:
        raise KeyFormatError("the key has characters other than visible ASCII")
    return key


def _parse_sf_string(value: bytes) -> str:
    out = bytearray()
    i, end = 1, len(value)
    while i < end:
        byte = value[i]
        if byte == 0x5C:  # backslash: only \" and \\ are escapes in RFC 8941
            if i + 1 >= end or value[i + 1] not in (0x22, 0x5C):
                raise KeyFormatError("the quoted key has an invalid escape")
            out.append(value[i + 1])
            i += 2
            continue
        if byte == 0x22:
            if i + 1 != end:
                raise KeyFormatError("the quoted key has characters after its closing quote")
            if not out:
                raise KeyFormatError("the key is empty")
            if len(out) > MAX_KEY_LENGTH:
                raise KeyFormatError(f"the key is longer than {MAX_KEY_LENGTH} characters")
            return out.decode("ascii")
        if not 0x20 <= byte <= 0x7E:
            raise KeyFormatError("the key has characters other than printable ASCII")
        out.append(byte)
        i += 1
    raise KeyFormatError("the quoted key has no closing quote")


def record_key(client_id: str, method: str, operation: str, key: str, caller: str = "") -> str:
    """The store key of a request's record: the client's key scoped to the client, the caller
    (a keyed hash of its credentials, see :mod:`bastion.idempotency.scope`) and the operation, hashed.

    Client B sending client A's key names a different record, and the raw key never
    reaches the store.
    """
    # The lengths go first, so that no two different tuples hash alike
    # (("ab", "c") and ("a", "bc") would otherwise collide). A request without credentials
    # has no caller part: five lengths never read as four.
    text = f"{len(client_id)},{len(method)},{len(operation)},{len(key)}"
    if caller:
        text += f",{len(caller)}"
    text += f";{client_id}{method}{operation}{key}{caller}"
    return _sha256(text.encode()).hexdigest()


class StoredResponse(NamedTuple):
    """A completed request's response as kept in a store.

    ``body_stored`` is ``False`` when the body was larger than ``max_stored_bytes``:
    the request is completed all the same, and ``body`` is empty. An immutable named
    tuple: one is built per stored response, and a tuple is the cheapest such object.
    """

    status: int
    headers: tuple[tuple[bytes, bytes], ...]
    body: bytes
    body_stored: bool = True

    def headers_blob(self) -> bytes:
        """The headers as bytes, for stores that keep them in one column or field."""
        return orjson.dumps([[k.decode("latin-1"), v.decode("latin-1")] for k, v in self.headers])

    @staticmethod
    def headers_from_blob(blob: bytes) -> tuple[tuple[bytes, bytes], ...]:
        """The inverse of :meth:`headers_blob`."""
        return tuple((k.encode("latin-1"), v.encode("latin-1")) for k, v in orjson.loads(blob))

    def replay_headers(self, kept: HeaderFilter = DEFAULT_FILTER) -> list[tuple[bytes, bytes]]:
        """The headers a replay sends: the stored ones, marked ``Idempotent-Replayed: true``.

        Headers ``kept`` never stores are left out here too: a record stored before a name
        was added to ``never_replay_headers`` (or by an older version) does not replay it.
        """
        never = kept.never
        if self.body_stored:
            headers = [(k, v) for k, v in self.headers if k not in never]
        else:
            headers = [(k, v) for k, v in self.headers if k not in _BODY_HEADERS and k not in never]
            headers.append((b"content-length", b"0"))
            headers.append(BODY_OMITTED_HEADER)
        headers.append(REPLAYED_HEADER)
        return headers


class State(enum.Enum):
    """What a claim found: the key is now ours, someone else's request runs, or it has completed."""

    CLAIMED = "claimed"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class ClaimResult(NamedTuple):
    """A store's answer to a claim (an immutable named tuple, like :class:`StoredResponse`).

    ``fingerprint`` is the stored request's (for ``IN_PROGRESS`` and ``COMPLETED``).
    ``took_over`` says a claim replaced an in-flight record whose lease had expired;
    ``lost_trace_id`` is then the trace id of the attempt that held it (``""`` if unknown).
    """

    state: State
    fingerprint: str = ""
    response: StoredResponse | None = None
    lease_remaining_ms: int = 0
    took_over: bool = False
    lost_trace_id: str = ""


CLAIMED = ClaimResult(State.CLAIMED)


def took_over(lost_trace_id: str | bytes | None) -> ClaimResult:
    """The result of a claim that took over an expired lease held by the attempt ``lost_trace_id``."""
    if isinstance(lost_trace_id, bytes):
        lost_trace_id = lost_trace_id.decode("ascii", "replace")
    return ClaimResult(State.CLAIMED, took_over=True, lost_trace_id=lost_trace_id or "")


class Action(enum.Enum):
    """What the guard does with a request, given the claim result."""

    PROCEED = "claimed"
    REPLAY = "replayed"
    MISMATCH = "mismatch"
    IN_PROGRESS = "in_progress"


def decide(result: ClaimResult, request_fingerprint: str) -> Action:
    """The action for a request whose claim gave ``result``.

    A different fingerprint under the same key is a mismatch whether the first
    request has finished or not: a key names one operation.
    """
    if result.state is State.CLAIMED:
        return Action.PROCEED
    if result.fingerprint != request_fingerprint:
        return Action.MISMATCH
    if result.state is State.COMPLETED:
        return Action.REPLAY
    return Action.IN_PROGRESS


def may_claim(
    *,
    now_ms: int,
    expires_at: int,
    state_completed: bool,
    lease_until: int,
    stored_fingerprint: str,
    request_fingerprint: str,
) -> bool | None:
    """Whether a claim may replace an existing record: ``True`` (a lease takeover),
    ``None`` (the record has expired: a fresh claim), ``False`` (the record stands).

    The SQL and Lua stores encode the same rule in their own language; the memory
    and SQLite stores call this.
    """
    if expires_at <= now_ms:
        return None
    return not state_completed and lease_until <= now_ms and stored_fingerprint == request_fingerprint


class StatusPolicy:
    """Which statuses are stored (``store_statuses``: ``2xx``, ``4xx``, ``5xx``, ``201``, ``503``, ...)."""

    __slots__ = ("statuses",)

    def __init__(self, entries: Iterable[str]) -> None:
        entries = list(entries)
        classes = frozenset(int(e[0]) for e in entries if e.endswith("xx"))
        exact = frozenset(int(e) for e in entries if e.isdigit())
        #: Every storable status, worked out once: a request pays one set lookup.
        self.statuses = frozenset(s for s in range(100, 600) if s // 100 in classes or s in exact)

    def storable(self, status: int) -> bool:
        """Whether a response with ``status`` is kept for replay."""
        return status in self.statuses


class ResponseCapture:
    """Copies a response as it streams past, up to ``max_bytes`` of body.

    The guard forwards every message at once and hands it here too; nothing is
    held back. Past ``max_bytes`` the body is dropped (not truncated: a partial
    body replayed as if whole would be worse than none).
    """

    __slots__ = ("_chunks", "_filter", "_size", "body_kept", "headers", "max_bytes", "status")

    def __init__(self, max_bytes: int, kept: HeaderFilter = DEFAULT_FILTER) -> None:
        self.max_bytes = max_bytes
        self._filter = kept
        self.status = 0
        self.headers: tuple[tuple[bytes, bytes], ...] = ()
        self._chunks: list[bytes] = []
        self._size = 0
        self.body_kept = True

    def start(self, status: int, headers: Iterable[tuple[bytes, bytes]]) -> None:
        """Record the status and the storable headers (copied: later layers edit the list in place)."""
        self.status = status
        self.headers = tuple(self._filter.kept(headers))

    def body(self, chunk: bytes) -> None:
        """Record one body chunk."""
        if not chunk or not self.body_kept:
            return
        self._size += len(chunk)
        if self._size > self.max_bytes:
            self.body_kept = False
            self._chunks = []
            return
        self._chunks.append(bytes(chunk))

    def finish(self, chunk: bytes) -> StoredResponse:
        """Record the last body chunk and return the response to store (:meth:`body`, then :meth:`result`)."""
        if not self._chunks and self.body_kept and len(chunk) <= self.max_bytes:
            return StoredResponse(self.status, self.headers, bytes(chunk), True)  # the body in one message
        self.body(chunk)
        return self.result()

    def result(self) -> StoredResponse:
        """The response to store."""
        if not self.body_kept:
            return StoredResponse(self.status, self.headers, b"", False)
        chunks = self._chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return StoredResponse(self.status, self.headers, body, True)
