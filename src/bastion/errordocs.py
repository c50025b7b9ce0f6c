"""Generates ``docs/errors.md`` from the error-code registry, so the page cannot go stale.

Run ``python -m bastion.errordocs > docs/errors.md``; a test fails when the file
differs from what this prints.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bastion
from bastion.problems import FIELD_CODES, error_codes

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


def render_markdown() -> str:
    """The whole ``docs/errors.md`` page."""
    _import_all()
    lines = [
        "# Error codes",
        "",
        "Every error bastion answers is an RFC 9457 problem (`application/problem+json`) with a",
        "stable `code`, a `trace_id` equal to the response's `traceparent` trace id and",
        "`X-Request-ID` (unless the client sent its own request id), and, for validation errors,",
        "field-level `errors[]`. The `type` is `errors.type_base` followed by the code in",
        "kebab-case. Branch on `code`, never on `title` or `detail`.",
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
        "it is stale.",
        "",
        "## Problem codes",
        "",
        "| code | status | meaning | what the client should do |",
        "|---|---|---|---|",
    ]
    for entry in error_codes():
        if not entry.module.startswith("bastion.") or entry.module.startswith(_SKIP):
            continue
        lines.append(f"| `{entry.code}` | {entry.status} | {entry.meaning} | {entry.action} |")
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
