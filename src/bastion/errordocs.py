"""Generates ``docs/errors.md`` from the error-code registry, so the page cannot go stale.

Run ``python -m bastion.errordocs > docs/errors.md``; a test fails when the file
differs from what this prints. Each code's row carries the anchor ``#{slug}`` (the
code in kebab-case), which the default ``errors.docs_url`` links every problem to.
``bastion errors docs --app module:app`` writes the same page with an application's
own codes added (:mod:`bastion.appcodes`).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from collections.abc import Iterable

import bastion
from bastion.problems import FIELD_CODES, ErrorCode, code_slug, error_codes

# Modules that are not bastion's own API (the demo registers codes of its own).
_SKIP = ("bastion.demo", "bastion.__main__")


def _import_all() -> None:
    for info in pkgutil.walk_packages(bastion.__path__, "bastion."):
        if info.name.startswith(_SKIP):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError:
            # An optional extra that is not installed; its codes live in bastion.problems anyway.
            continue


def bastion_codes() -> list[ErrorCode]:
    """Every problem code bastion itself answers with, sorted by status then code."""
    _import_all()
    return [
        entry
        for entry in error_codes()
        if entry.module.startswith("bastion.") and not entry.module.startswith(_SKIP)
    ]


def anchor(code: str) -> str:
    """The HTML anchor that marks ``code``'s row: ``#{slug}`` of the default ``errors.docs_url``."""
    return f'<a id="{code_slug(code)}"></a>'


def _row(entry: ErrorCode, source: str | None) -> str:
    cells = [f"{anchor(entry.code)}`{entry.code}`", str(entry.status), entry.meaning, entry.action]
    if source is not None:
        cells.append(source)
    return "| " + " | ".join(cells) + " |"


def render_markdown() -> str:
    """The whole ``docs/errors.md`` page."""
    return _page("# Error codes", [], ((entry, None) for entry in bastion_codes()), sources=False)


def render_reference(title: str, intro: list[str], entries: Iterable[tuple[ErrorCode, str]]) -> str:
    """The page with a ``source`` column: each entry beside who defines it (bastion, the application)."""
    return _page(title, intro, entries, sources=True)


def _page(
    title: str, intro: list[str], entries: Iterable[tuple[ErrorCode, str | None]], *, sources: bool
) -> str:
    lines = [
        title,
        "",
        *intro,
        "Every error bastion answers is an RFC 9457 problem (`application/problem+json`) with a",
        "stable `code`, a `trace_id` equal to the response's `traceparent` trace id and",
        "`X-Request-ID` (unless the client sent its own request id), and, for validation errors,",
        "field-level `errors[]`. The `type` is `errors.type_base` followed by the code in",
        "kebab-case. Branch on `code`, never on `title` or `detail`.",
        "",
        'Every problem also carries `Link: <URL>; rel="describedby"`, the page that documents its',
        "code: `errors.docs_url` with `{code}`, `{slug}` (the code in kebab-case) and `{type_base}`",
        "filled in. The default, `{type_base}#{slug}`, is the code's row below: each row has the",
        "anchor `#{slug}`. The body has no member for it: `type` already names the code's",
        "documentation (RFC 9457, section 3.1.1), and the link is where the Idempotency-Key draft",
        "puts it; clients that read only the body find the same row from `type`'s last segment.",
        "",
        "A problem never echoes client input beyond a bounded, escaped form: `instance` is the",
        "raw request path with control characters, spaces and non-ASCII percent-encoded, at most",
        "1,024 characters; `field`, `pointer` and `name` in `errors[]` are cut to 128 characters;",
        "a whole body is at most 16 KiB, trailing `errors[]` entries being dropped to stay within",
        "it and counted in `errors_truncated` (and, past that, extension members, counted in",
        "`extensions_truncated`).",
        "",
        "An error response of the application (middleware) or upstream (gateway) whose body is",
        "not a problem, such as an HTML page with a stack trace, is replaced by a problem of the",
        "same status: a 5xx by default, a 4xx too with `errors.normalize_upstream: all`. 500 and",
        "other 5xx become `INTERNAL_ERROR`, 502 `UPSTREAM_UNAVAILABLE`, 503",
        "`DEPENDENCY_UNAVAILABLE`, 504 `UPSTREAM_TIMEOUT`; a 4xx its generic code below. The",
        "original body (its first 64 KiB) goes to the server log under the trace id, never to",
        "the client.",
        "",
        "This page is generated from the code (`python -m bastion.errordocs`); a test fails when",
        "it is stale. `bastion errors docs --app module:app` writes it with an application's own",
        'codes added: those of its `Problem` subclasses, and those it passes as `code="..."` to',
        "bastion's problem classes (read from its source), each marked with where it is defined.",
        "",
        "## Problem codes",
        "",
        "| code | status | meaning | what the client should do |" + (" source |" if sources else ""),
        "|---|---|---|---|" + ("---|" if sources else ""),
    ]
    lines.extend(_row(entry, source) for entry, source in entries)
    lines += [
        "",
        "## Field codes in `errors[]`",
        "",
        "Each entry of a problem's `errors[]` names one broken place: `in` (body, path, query,",
        "header, cookie), `pointer` (a JSON pointer into the body) or `name` (a parameter),",
        "`field` (a dotted path for display), its own `code`, and a `detail` a person",
        "understands. Submitted values are never echoed back.",
        "",
        "| code | meaning |",
        "|---|---|",
    ]
    for code, meaning in FIELD_CODES.items():
        lines.append(f"| `{code}` | {meaning} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render_markdown())
