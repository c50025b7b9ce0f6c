"""Validation probes: invalid bodies derived from the schemas get a 4xx that names the field."""

from __future__ import annotations

from collections import defaultdict

import orjson

from bastion.check.probes.analysis import names_field
from bastion.check.probes.base import ProbeContext, new_key
from bastion.check.probes.client import Exchange
from bastion.check.probes.target import Operation, query_string

PITFALL = "validation"
#: Larger than bastion's default ``validation.max_body_bytes`` (1 MiB).
OVERSIZED_BYTES = 1_572_864
MAX_OPERATIONS = 3

_TITLES = {
    "wrong-type": "a field of the wrong type is rejected with a 4xx naming it",
    "missing-required": "a missing required field is rejected with a 4xx naming it",
    "out-of-range": "an out-of-range value is rejected with a 4xx naming it",
    "unknown-field": "an unknown field in a closed object is rejected with a 4xx naming it",
    "malformed-json": "malformed JSON is rejected with a 4xx",
    "wrong-content-type": "a body in an undeclared Content-Type is rejected with a 4xx",
    "oversized": f"a body of {OVERSIZED_BYTES} bytes is rejected with a 4xx",
    "query-wrong-type": "a query parameter of the wrong type is rejected with a 4xx naming it",
}


def _verdict(exchange: Exchange, field: str) -> str | None:
    """Why the response to an invalid request is wrong (``None`` when it is right)."""
    if exchange.status == 0:
        return "the connection failed"
    if 200 <= exchange.status < 300:
        return f"accepted with {exchange.status}"
    if exchange.status >= 500:
        return f"answered {exchange.status}: the server crashed instead of validating"
    if not 400 <= exchange.status < 500:
        return f"answered {exchange.status}"
    if exchange.status == 429:
        return None
    if field and not names_field(exchange, field):
        return f"{exchange.status} does not name the field {field!r}"
    return None


def run(ctx: ProbeContext) -> None:
    """Send each kind of invalid request to up to three operations with JSON bodies."""
    outcomes: dict[str, list[tuple[Operation, str, Exchange, str | None]]] = defaultdict(list)
    target = ctx.target
    if target is None:
        for kind, title in _TITLES.items():
            ctx.add(f"validation-{kind}", PITFALL, title, "skip", "needs --spec to derive payloads")
        return
    client = ctx.client
    for op in target.with_json_body()[:MAX_OPERATIONS]:
        ctx.step(f"validation: {op.label}")
        valid = ctx.sampler.sample(op.json_schema)
        for variant in ctx.sampler.variants(op.json_schema):
            ex = client.send(op.method, op.path, json=variant.body, headers={"Idempotency-Key": new_key()})
            outcomes[variant.kind].append((op, variant.field, ex, _verdict(ex, variant.field)))
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        ex = client.send(op.method, op.path, headers=headers, body=b'{"unterminated": [1, 2')
        outcomes["malformed-json"].append((op, "", ex, _verdict(ex, "")))
        headers = {"Content-Type": "text/plain", "Idempotency-Key": new_key()}
        ex = client.send(op.method, op.path, headers=headers, body=orjson.dumps(valid))
        outcomes["wrong-content-type"].append((op, "", ex, _verdict(ex, "")))
        padding = OVERSIZED_BYTES
        big = orjson.dumps(
            {**(valid if isinstance(valid, dict) else {}), "bastion_probe_padding": "x" * padding}
        )
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        ex = client.send(op.method, op.path, headers=headers, body=big)
        outcomes["oversized"].append((op, "", ex, _verdict(ex, "")))
    for op in target.operations:
        typed = [
            (name, p)
            for name, p in op.query.items()
            if isinstance(p.get("schema"), dict)
            and p["schema"].get("type") in ("integer", "number", "boolean")
        ]
        if op.method == "GET" and typed:
            ctx.step(f"validation: {op.label} query")
            name = typed[0][0]
            ex = client.send("GET", op.path + query_string({**op.required_query, name: "not-a-number"}))
            outcomes["query-wrong-type"].append((op, name, ex, _verdict(ex, name)))
            break
    for kind, title in _TITLES.items():
        tried = outcomes.get(kind, [])
        if not tried:
            ctx.add(
                f"validation-{kind}",
                PITFALL,
                title,
                "skip",
                "no operation in the description allows this check",
            )
            continue
        if all(ex.status == 429 for _, _, ex, _ in tried):
            ctx.add(f"validation-{kind}", PITFALL, title, "skip", "rate limited before the check could run")
            continue
        failing = [(op, why, ex) for op, _, ex, why in tried if why]
        if failing:
            op, why, _ = failing[0]
            ctx.add(
                f"validation-{kind}",
                PITFALL,
                title,
                "fail",
                f"{op.label}: {why}",
                [ex.summary() for _, _, ex in failing[:3]],
            )
        else:
            statuses = ", ".join(sorted({str(ex.status) for _, _, ex, _ in tried}))
            ctx.add(
                f"validation-{kind}", PITFALL, title, "pass", f"{len(tried)} request(s) answered {statuses}"
            )
