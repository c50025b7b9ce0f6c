"""What a response says, without I/O: problem shape, trace ids, leaked internals, named fields."""

from __future__ import annotations

import re
from typing import Any

from bastion.check.probes.client import Exchange, decode_json

PROBLEM_MEMBERS = ("type", "title", "status")
_TRACE_MEMBERS = ("trace_id", "traceId", "trace-id", "request_id", "requestId", "correlation_id")
_TRACE_HEADERS = (
    "x-request-id",
    "x-trace-id",
    "x-correlation-id",
    "request-id",
    "x-amzn-requestid",
    "x-b3-traceid",
)

# Fingerprints of internals in a response body, by platform. Each is specific
# enough not to fire on ordinary prose ("Exception" alone would).
LEAK_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (name, re.compile(pattern, flags))
    for name, pattern, flags in (
        ("Python traceback", r"Traceback \(most recent call last\)", 0),
        ("Python stack frame", r'File "[^"]+", line \d+', 0),
        ("Python exception", r"\b(?:[A-Z]\w*(?:Error|Exception)|KeyError|StopIteration):\s", 0),
        ("Node.js stack frame", r"\n\s+at [\w.<>$]+ \((?:/|[A-Za-z]:\\|node:|file:)[^)]*:\d+:\d+\)", 0),
        ("Node.js stack frame", r"\bat (?:Object|Module|Layer|process)\.[\w<>]+ \(", 0),
        ("Java stack frame", r"\bat [a-z][\w$]*(?:\.[\w$<>]+)+\([\w$]+\.(?:java|kt|scala):\d+\)", 0),
        ("Java exception", r"\b(?:java|javax|jakarta|org\.springframework)\.[\w.]+(?:Exception|Error)\b", 0),
        (".NET stack frame", r"\bat [\w.`<>]+\([^)]*\) in [^\n]+:line \d+", 0),
        (".NET exception", r"\bSystem\.[\w.]+Exception\b", 0),
        ("Go panic", r"\bgoroutine \d+ \[[\w ]+\]:|\bpanic: ", 0),
        ("Go source path", r"\.go:\d+ \+0x[0-9a-f]+", 0),
        (
            "PHP error",
            r"\b(?:PHP )?(?:Fatal error|Parse error|Warning|Notice): .+ in \S+\.php on line \d+",
            0,
        ),
        ("PHP stack frame", r"#\d+ \S+\.php\(\d+\): ", 0),
        ("Ruby stack frame", r"\S+\.rb:\d+:in [`'][^'`]+'", 0),
        ("Ruby exception", r"\b(?:NoMethodError|ActiveRecord::\w+|ActionController::\w+)\b", 0),
        (
            "file path",
            r"(?:/(?:home|usr|var|opt|srv|app|src)/[\w.\-/]+\.(?:py|js|ts|java|rb|php|go|cs)\b)",
            0,
        ),
        ("file path", r"\b[A-Za-z]:\\(?:[\w .\-]+\\)+[\w .\-]+\.(?:cs|java|py|js|php|rb|go)\b", 0),
        # Upper-case keywords only, as ORMs and drivers print them; prose says "select ... from".
        (
            "SQL fragment",
            r"\b(?:SELECT\s+[\w*,\s.\"`()]+?\s+FROM|INSERT\s+INTO|UPDATE\s+[\w\"`.]+\s+SET|DELETE\s+FROM)"
            r"\s+[\w\"`.]+",
            0,
        ),
        (
            "SQL error",
            r"\b(?:SQLSTATE\[|syntax error at or near|ORA-\d{5}|sqlite3\.\w+Error|psycopg2?\.|"
            r"You have an error in your SQL syntax|UNIQUE constraint failed)",
            0,
        ),
    )
)


def leaks(text: str) -> list[str]:
    """The kinds of internals ``text`` reveals (empty when it reveals none)."""
    return sorted({name for name, pattern in LEAK_PATTERNS if pattern.search(text)})


def problem_issues(exchange: Exchange) -> list[str]:
    """Why a response is not an RFC 9457 problem (empty when it is one)."""
    issues: list[str] = []
    if exchange.content_type != "application/problem+json":
        issues.append(f"Content-Type is {exchange.content_type or 'missing'}, not application/problem+json")
    body = decode_json(exchange)
    if not isinstance(body, dict):
        issues.append("the body is not a JSON object")
        return issues
    missing = [m for m in PROBLEM_MEMBERS if m not in body]
    if missing:
        issues.append(f"the body lacks {', '.join(missing)}")
    if "status" in body and body["status"] != exchange.status:
        issues.append(f"status member {body['status']!r} differs from the response status {exchange.status}")
    return issues


def trace_ids_in_headers(exchange: Exchange) -> set[str]:
    """Every trace or request id the response headers carry."""
    found: set[str] = set()
    traceparent = exchange.header("traceparent")
    if traceparent:
        parts = traceparent.strip().split("-")
        if len(parts) >= 2:
            found.add(parts[1].lower())
    for name in _TRACE_HEADERS:
        value = exchange.header(name)
        if value:
            found.add(value.strip().lower())
    return found


def trace_issue(exchange: Exchange) -> str | None:
    """Why the error's trace id is missing or unmatched by a header (``None`` when it is fine)."""
    body = decode_json(exchange)
    value: Any = None
    if isinstance(body, dict):
        value = next((body[m] for m in _TRACE_MEMBERS if m in body), None)
    headers = trace_ids_in_headers(exchange)
    if value is None:
        return "the body carries no trace_id"
    if str(value).lower() not in headers:
        shown = ", ".join(sorted(headers)) or "none"
        return f"trace_id {value!r} matches no response header (traceparent, X-Request-ID: {shown})"
    return None


def names_field(exchange: Exchange, field: str) -> bool:
    """Whether the error response names ``field`` (in errors[], a pointer, or the detail)."""
    if not field:
        return True
    text = exchange.text
    return field in text


def is_replay(exchange: Exchange) -> bool:
    """Whether the response says it is a replayed idempotent response."""
    value = exchange.header("idempotent-replayed") or exchange.header("idempotency-replayed")
    return value is not None and value.strip().lower() in ("true", "1", "?1")


def remaining_quota(exchange: Exchange) -> int | None:
    """The remaining quota the response announces (RateLimit drafts or X-RateLimit-Remaining)."""
    for name in ("ratelimit-remaining", "x-ratelimit-remaining"):
        value = exchange.header(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value.strip())
    combined = exchange.header("ratelimit")
    if combined:
        # draft-7: "limit=10, remaining=3, reset=5"; draft-8 and later: '"policy";r=3;t=5'
        match = re.search(r"(?:\bremaining=|;\s*r=)(\d+)", combined)
        if match:
            return int(match.group(1))
    return None
