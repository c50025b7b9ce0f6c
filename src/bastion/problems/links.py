"""Where a problem's documentation lives: the ``Link: <...>; rel="describedby"`` of every problem.

``errors.docs_url`` is a template with ``{code}`` (``IDEMPOTENCY_KEY_REUSED``),
``{slug}`` (``idempotency-key-reused``, the form ``docs/errors.md`` anchors use) and
``{type_base}`` (``errors.type_base``). The default, ``{type_base}#{slug}``, points at
the code's row of the error-code page wherever ``type_base`` serves it.
"""

from __future__ import annotations

import re
from string import Formatter

from bastion.problems.codes import type_uri

#: The template of ``errors.docs_url`` when none is configured.
DEFAULT_DOCS_URL = "{type_base}#{slug}"
#: The placeholders a ``docs_url`` template may use.
PLACEHOLDERS = ("code", "slug", "type_base")
#: How many codes one :class:`ProblemLinks` keeps rendered; codes come from code, not
#: from clients, so this is never reached in practice, and past it links are still right.
MAX_CACHED_CODES = 4096

# What may stand in a URI reference (RFC 3986), and so between the < > of a Link header.
_URI_REFERENCE = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+")
_SAMPLE_CODE = "IDEMPOTENCY_KEY_REUSED"


def code_slug(code: str) -> str:
    """``code`` in kebab-case: the anchor of its row in ``docs/errors.md``."""
    return code.lower().replace("_", "-")


def check_docs_url(template: str, type_base: str) -> str:
    """``template`` if it is a usable ``errors.docs_url``, else a ``ValueError`` saying why."""
    try:
        fields = list(Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc} (a brace stands only around a placeholder)") from None
    names = set()
    for _, name, spec, conversion in fields:
        if name is None:
            continue
        names.add(name)
        if name not in PLACEHOLDERS:
            raise ValueError(
                f"unknown placeholder {{{name}}}; use {', '.join('{' + p + '}' for p in PLACEHOLDERS)}"
            )
        if spec or conversion:
            raise ValueError(f"placeholder {{{name}}} takes no format or conversion")
    if "type_base" in names and type_base and not _URI_REFERENCE.fullmatch(type_base):
        raise ValueError(
            f"errors.type_base {type_base!r} cannot stand in a link (it holds a space, a quote, an angle"
            " bracket, a control or a non-ASCII character): fix it, or use a docs_url without {type_base}"
        )
    example = template.format(code=_SAMPLE_CODE, slug=code_slug(_SAMPLE_CODE), type_base=type_base)
    if not _URI_REFERENCE.fullmatch(example):
        raise ValueError(
            f"{example!r} (the link for {_SAMPLE_CODE}) is not a URI reference: it is empty or holds"
            " a space, a quote, an angle bracket, a control or a non-ASCII character"
        )
    return template


class ProblemLinks:
    """``errors.type_base`` and ``errors.docs_url``, with each code's ``Link`` header rendered once.

    Build one per configuration and pass it to :func:`bastion.problems.render` as
    ``type_base``; a problem then costs one dictionary lookup for its link.
    """

    __slots__ = ("_links", "docs_url", "type_base")

    def __init__(self, type_base: str, docs_url: str | None = DEFAULT_DOCS_URL) -> None:
        #: The prefix of every problem's ``type``.
        self.type_base = type_base
        #: The documentation link template, checked; ``None``: problems carry no link.
        self.docs_url = None if docs_url is None else check_docs_url(docs_url, type_base)
        self._links: dict[str, tuple[bytes, bytes] | None] = {}

    def __repr__(self) -> str:
        return f"ProblemLinks(type_base={self.type_base!r}, docs_url={self.docs_url!r})"

    def docs_url_of(self, code: str) -> str | None:
        """The documentation URL of ``code``, or ``None`` when links are off."""
        if self.docs_url is None:
            return None
        return self.docs_url.format(code=code, slug=code_slug(code), type_base=self.type_base)

    def type_of(self, code: str) -> str:
        """The problem ``type`` of ``code``."""
        return type_uri(self.type_base, code)

    def link_header(self, code: str) -> tuple[bytes, bytes] | None:
        """The ``Link`` header pair of a problem with ``code``, rendered on its first use."""
        try:
            return self._links[code]
        except KeyError:
            pass
        url = self.docs_url_of(code)
        header = None if url is None else (b"link", b'<%s>; rel="describedby"' % url.encode("ascii"))
        if len(self._links) < MAX_CACHED_CODES:
            self._links[code] = header
        return header


def links_of(type_base: str | ProblemLinks) -> ProblemLinks:
    """``type_base`` as :class:`ProblemLinks`: a plain string gets the default documentation link.

    A string that cannot make a link (it holds a space, say) gets none: rendering a
    problem never fails for want of a link.
    """
    if isinstance(type_base, ProblemLinks):
        return type_base
    try:
        return ProblemLinks(type_base)
    except ValueError:
        return ProblemLinks(type_base, None)
