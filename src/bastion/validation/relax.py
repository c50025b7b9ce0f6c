"""Relaxed validation for legacy clients, each relaxation until a date (``validation.relax``).

An entry matches requests by tier, API key name, a header's value or a path prefix
(every key it gives), and either checks them in shadow mode or lets unknown body
fields through. The first entry that matches wins. Every response to a matching
request that validation checked carries the notice: ``Deprecation`` (RFC 9745,
``@<unix seconds>``), ``Sunset`` (RFC 8594, an HTTP-date) and, when the entry has a
``link``, ``Link`` with ``rel="deprecation"`` and ``rel="sunset"``.

Past its ``until`` an entry is skipped, as if it were no longer in the file, so
removing an expired entry later changes nothing; its expiry is logged once.

``allow-unknown-fields`` drops the unknown-field entries from the errors found with
the operation's usual (closed) schemas, rather than compiling a second, open
validator per operation: the refusal of every other error is unchanged, and nothing
is compiled or kept twice. Two consequences, both towards refusing: a list cut at
``validation.max_errors`` is refused whole (an error past the cut could be another
kind), and an unknown field inside a ``oneOf``/``anyOf`` branch that makes the whole
composition fail is still refused when it is not reported as an unknown field.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from email.utils import format_datetime
from typing import TYPE_CHECKING, Any

from bastion.asgi import Headers, RequestContext, Scope
from bastion.clients import KEY_ID_PREFIX, ClientIdentifier
from bastion.validation.errors import UNKNOWN_FIELD

if TYPE_CHECKING:
    from bastion.config.validation import RelaxConfig


def _instant(moment: date, *, end_of_day: bool) -> float:
    """Unix seconds of a datetime, or of a date's start (or the start of the day after)."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        if end_of_day:
            moment += timedelta(days=1)
    return moment.timestamp()


def _last_second(moment: date) -> float:
    """The moment a header names: a date's last second (``23:59:59`` UTC), or the datetime."""
    if isinstance(moment, datetime):
        return moment.timestamp()
    return _instant(moment, end_of_day=True) - 1


def notice_headers(entry: RelaxConfig, loaded_at: float) -> Headers:
    """The ``Deprecation``, ``Sunset`` and (with a ``link``) ``Link`` headers of an entry."""
    # Deprecated as of a date's start; out of service (sunset) only after its end.
    deprecated = loaded_at if entry.deprecated is None else _instant(entry.deprecated, end_of_day=False)
    sunset = datetime.fromtimestamp(_last_second(entry.sunset or entry.until), UTC)
    headers: Headers = [
        (b"deprecation", b"@%d" % int(deprecated)),
        (b"sunset", format_datetime(sunset, usegmt=True).encode("ascii")),
    ]
    if entry.link is not None:
        link = f'<{entry.link}>; rel="deprecation", <{entry.link}>; rel="sunset"'
        headers.append((b"link", link.encode("ascii")))
    return headers


@dataclass(frozen=True, slots=True)
class Relaxation:
    """One ``validation.relax`` entry, ready to match requests."""

    number: int
    #: ``shadow`` or ``allow-unknown-fields``.
    kind: str
    #: Unix seconds from which the entry no longer relaxes anything.
    ends: float
    headers: Headers
    tier: str | None
    client_id: str | None
    header: tuple[bytes, bytes] | None
    path_prefix: str | None

    @property
    def shadow(self) -> bool:
        """Whether matching requests are checked in shadow mode."""
        return self.kind == "shadow"

    def matches(self, scope: Scope, ctx: RequestContext) -> bool:
        """Whether every condition of the entry holds (identity already filled when one needs it)."""
        if self.tier is not None and ctx.tier != self.tier:
            return False
        if self.client_id is not None and ctx.client_id != self.client_id:
            return False
        if self.path_prefix is not None and not scope["path"].startswith(self.path_prefix):
            return False
        if self.header is not None:
            name, value = self.header
            return any(key == name and bytes(seen).strip() == value for key, seen in scope["headers"])
        return True

    def remaining(self, entries: list[dict[str, Any]], limit: int) -> list[dict[str, Any]]:
        """The error entries still refused: without unknown fields, if the entry allows them.

        A list of ``limit`` entries may have been cut, so it is kept whole.
        """
        if self.kind != "allow-unknown-fields" or len(entries) >= limit:
            return entries
        return [e for e in entries if e["code"] != "NOT_ALLOWED" or e["detail"] != UNKNOWN_FIELD]


def _relaxation(number: int, entry: RelaxConfig, loaded_at: float) -> Relaxation:
    match = entry.match
    header = None
    if match.header is not None:
        name, _, value = match.header.partition(":")
        header = (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
    return Relaxation(
        number=number,
        kind=entry.relax,
        ends=_instant(entry.until, end_of_day=True),
        headers=notice_headers(entry, loaded_at),
        tier=match.tier,
        client_id=None if match.client is None else KEY_ID_PREFIX + match.client,
        header=header,
        path_prefix=match.path_prefix,
    )


class RelaxTable:
    """The ``validation.relax`` entries still in force; :meth:`find` gives a request's one.

    ``now`` is the clock (unix seconds), replaceable in tests.
    """

    def __init__(
        self,
        entries: Sequence[RelaxConfig],
        clients: ClientIdentifier,
        *,
        logger: Any = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.now = now
        loaded_at = now()
        self.entries = tuple(_relaxation(n, entry, loaded_at) for n, entry in enumerate(entries))
        self.clients = clients
        self.logger = logger
        #: Whether some entry matches on the client, whose identity is then worked out.
        self.needs_client = any(e.tier is not None or e.client_id is not None for e in self.entries)

    def apply(self, scope: Scope, ctx: RequestContext) -> Relaxation | None:
        """The first entry in force that matches the request, its notice added to the response."""
        now = self.now()
        if self.needs_client:
            self.clients.fill(scope, ctx)
        for entry in self.entries:
            if now >= entry.ends:
                self._expire(entry)
            elif entry.matches(scope, ctx):
                ctx.response_headers += entry.headers
                ctx.log["validation_relax"] = entry.kind
                return entry
        return None

    def _expire(self, entry: Relaxation) -> None:
        """Drop an entry past its ``until``, logging it (once: it is no longer in the table)."""
        self.entries = tuple(e for e in self.entries if e is not entry)
        if self.logger is not None:
            self.logger.warning(
                "validation relaxation expired; matching requests are enforced",
                entry=f"validation.relax.{entry.number}",
                relax=entry.kind,
            )
