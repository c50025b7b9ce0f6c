"""Idempotency probes: replay, key reuse with another body, concurrent duplicates, a required key."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bastion.check.probes.analysis import is_replay
from bastion.check.probes.base import ProbeContext, new_key
from bastion.check.probes.client import BudgetExhausted, Exchange, decode_json, retry_after_seconds
from bastion.check.probes.target import Operation

PITFALL = "idempotency"
CONCURRENT = 5
_TITLES = {
    "idempotency-replay": "the same POST twice with one key returns the same response, marked as a replay",
    "idempotency-key-reuse": "the same key with another body gets 409 or 422",
    "idempotency-concurrent": "concurrent duplicates run once (one success, the rest replays or 409)",
    "idempotency-key-required": "a missing key where the description requires one gets 400",
}


def pick_post(ctx: ProbeContext) -> Operation | None:
    """The POST to probe idempotency on: one that requires or declares a key first."""
    target = ctx.target
    if target is None:
        return None
    posts = [op for op in target.operations if op.method == "POST"]
    posts.sort(
        key=lambda op: (not op.key_required, not op.key_declared, "{" in op.template, op.json_schema is None)
    )
    return posts[0] if posts else None


def _same(a: Exchange, b: Exchange) -> bool:
    if a.status != b.status:
        return False
    if a.body == b.body:
        return True
    first = decode_json(a)
    return first is not None and first == decode_json(b)


def run(ctx: ProbeContext) -> None:
    """Exercise the Idempotency-Key contract on one POST operation."""
    op = pick_post(ctx)
    if op is None:
        why = "needs --spec with a POST operation" if ctx.target is None else "the description has no POST"
        for check_id, title in _TITLES.items():
            ctx.add(check_id, PITFALL, title, "skip", why)
        return
    client = ctx.client
    body: Any = ctx.sampler.sample(op.json_schema) if op.json_schema is not None else None
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}

    ctx.step(f"idempotency: replay on {op.label}")
    key = new_key()
    first = client.send(op.method, op.path, headers={"Idempotency-Key": key}, **kwargs)
    title = _TITLES["idempotency-replay"]
    if not 200 <= first.status < 300:
        detail = f"{op.label} with a generated body answered {first.status}, so nothing could be replayed"
        ctx.add("idempotency-replay", PITFALL, title, "skip", detail, [first.summary()])
        ctx.add("idempotency-key-reuse", PITFALL, _TITLES["idempotency-key-reuse"], "skip", detail)
    else:
        second = client.send(op.method, op.path, headers={"Idempotency-Key": key}, **kwargs)
        evidence = [first.summary(), second.summary()]
        if not _same(first, second):
            ctx.add(
                "idempotency-replay",
                PITFALL,
                title,
                "fail",
                f"the retry answered {second.status} with a different body: the operation ran twice",
                evidence,
            )
        elif not is_replay(second):
            ctx.add(
                "idempotency-replay",
                PITFALL,
                title,
                "fail",
                "same response, but no Idempotent-Replayed header",
                evidence,
            )
        else:
            ctx.add(
                "idempotency-replay",
                PITFALL,
                title,
                "pass",
                f"{second.status}, identical body, marked replayed",
            )
        ctx.step(f"idempotency: key reuse on {op.label}")
        other = (
            ctx.sampler.changed(op.json_schema, body) if body is not None else {"bastion_probe_changed": 1}
        )
        reused = client.send(op.method, op.path, headers={"Idempotency-Key": key}, json=other)
        title = _TITLES["idempotency-key-reuse"]
        if reused.status in (409, 422):
            ctx.add("idempotency-key-reuse", PITFALL, title, "pass", f"answered {reused.status}")
        else:
            ctx.add(
                "idempotency-key-reuse",
                PITFALL,
                title,
                "fail",
                f"answered {reused.status}: a reused key with another body was not detected",
                [reused.summary()],
            )

    ctx.step(f"idempotency: concurrent duplicates on {op.label}")
    title = _TITLES["idempotency-concurrent"]
    key = new_key()

    def one(_: int) -> Exchange | None:
        try:
            return client.request(op.method, op.path, headers={"Idempotency-Key": key}, **kwargs)
        except BudgetExhausted:
            return None

    answers: list[Exchange] = []
    for attempt in range(2):
        with ThreadPoolExecutor(max_workers=CONCURRENT) as pool:
            answers = [a for a in pool.map(one, range(CONCURRENT)) if a is not None]
        limited = [a for a in answers if a.status == 429]
        wait = max((retry_after_seconds(a.header("retry-after")) or 0.0 for a in limited), default=0.0)
        if attempt or not limited or wait > 5 or wait + 1 > client.remaining_seconds():
            break
        # A rate limit answered some duplicates: wait it out and try once more with a fresh key.
        time.sleep(wait + 0.1)
        key = new_key()
    originals = [a for a in answers if 200 <= a.status < 300 and not is_replay(a)]
    conflicts = [a for a in answers if a.status == 409]
    replays = [a for a in answers if is_replay(a)]
    distinct = {a.body for a in originals}
    evidence = [a.summary() for a in answers]
    limited = [a for a in answers if a.status == 429]
    if not answers or (limited and len(originals) <= 1 and not conflicts and not replays):
        ctx.add("idempotency-concurrent", PITFALL, title, "skip", "rate limited or out of budget", evidence)
    elif len(originals) == 1 and len(originals) + len(conflicts) + len(replays) + len(limited) == len(
        answers
    ):
        ctx.add(
            "idempotency-concurrent",
            PITFALL,
            title,
            "pass",
            f"{len(answers)} concurrent: 1 ran, {len(replays)} replayed, {len(conflicts)} got 409",
        )
    elif not originals and not replays:
        ctx.add(
            "idempotency-concurrent",
            PITFALL,
            title,
            "skip",
            f"no request succeeded ({', '.join(sorted({str(a.status) for a in answers}))})",
            evidence,
        )
    else:
        ctx.add(
            "idempotency-concurrent",
            PITFALL,
            title,
            "fail",
            f"{len(originals)} of {len(answers)} concurrent duplicates ran ({len(distinct)} distinct bodies)",
            evidence,
        )

    ctx.step("idempotency: missing key")
    title = _TITLES["idempotency-key-required"]
    required = next((o for o in ctx.target.operations if o.key_required), None) if ctx.target else None
    if required is None:
        ctx.add("idempotency-key-required", PITFALL, title, "skip", "the description requires no key")
        return
    req_body = ctx.sampler.sample(required.json_schema) if required.json_schema is not None else None
    missing = client.send(
        required.method, required.path, **({"json": req_body} if req_body is not None else {})
    )
    if missing.status == 400:
        ctx.add(
            "idempotency-key-required", PITFALL, title, "pass", f"{required.label} without a key answered 400"
        )
    elif missing.status in (413, 415, 422, 429):
        # Validation and rate limits answer before idempotency: the key rule was never reached.
        ctx.add(
            "idempotency-key-required",
            PITFALL,
            title,
            "skip",
            f"{required.label} without a key answered {missing.status} before the key was judged",
            [missing.summary()],
        )
    else:
        ctx.add(
            "idempotency-key-required",
            PITFALL,
            title,
            "fail",
            f"{required.label} without a key answered {missing.status}",
            [missing.summary()],
        )
