"""Chaos probes (``--chaos``): what clients see when requests are slow, time out, repeat and fail.

When the target is a bastion gateway that takes ``Bastion-Fault-*`` headers
(``faults.allow_header_control``, docs/faults.md), the probe asks it for upstream
delays and failures; otherwise it makes its own slow and failing requests (a client
timeout shorter than the API's answer, duplicates sent at once, broken bodies).
Each check records its result as every probe does, under the pitfall it tests.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bastion.check.probes.analysis import is_replay, leaks, problem_issues, trace_issue
from bastion.check.probes.base import ProbeContext, new_key
from bastion.check.probes.client import BudgetExhausted, Exchange, decode_json, retry_after_seconds
from bastion.check.probes.idempotency import pick_post
from bastion.check.probes.target import Operation, query_string

#: How long the probe's client waits for a POST it means to time out, with an injected delay.
CLIENT_TIMEOUT = 1.0
#: The upstream delay asked for: longer than the client waits.
INJECTED_DELAY = "upstream 2500ms"
#: Without fault injection, a timeout this short is the probe's own slow request.
OWN_TIMEOUT = 0.02
#: The longest Retry-After the probe waits out.
MAX_WAIT_SECONDS = 5.0
#: Requests sent at most to meet a 429 when no other chaos request met one.
BURST = 30
DUPLICATES = 3
#: Every chaos check, by id, with what passing means.
TITLES = {
    "chaos-fault-control": "the target injects faults on request (Bastion-Fault-* headers)",
    "chaos-retry-after-timeout": "a retry after a timed-out POST, with the same key, runs it once",
    "chaos-duplicates-while-slow": "duplicates sent while the first is slow run once (409 or a replay)",
    "chaos-retry-after-honoured": "every 429 carries a Retry-After; waiting it out succeeds",
    "chaos-errors-under-faults": "errors under failure are problems with a trace id",
    "chaos-no-stack-trace": "no response under any fault shows a stack trace or internals",
}
_PITFALLS = {
    "chaos-fault-control": "errors",
    "chaos-retry-after-timeout": "idempotency",
    "chaos-duplicates-while-slow": "idempotency",
    "chaos-retry-after-honoured": "rate-limiting",
    "chaos-errors-under-faults": "errors",
    "chaos-no-stack-trace": "errors",
}
#: The upstream failures asked for by header, and the client-side abort.
_INJECTED_FAILURES = ("upstream 503", "upstream 502", "upstream 504", "upstream drop", "503")


class _Run:
    """One chaos run: the context, whether faults can be asked for, and every exchange seen."""

    def __init__(self, ctx: ProbeContext) -> None:
        self.ctx = ctx
        self.control = False
        self.seen: list[Exchange] = []

    def add(self, check_id: str, status: Any, detail: str, evidence: list[str] | None = None) -> None:
        self.ctx.add(check_id, _PITFALLS[check_id], TITLES[check_id], status, detail, evidence or [])

    def request(self, method: str, path: str, **kwargs: Any) -> Exchange:
        exchange = self.ctx.client.request(method, path, **kwargs)
        self.seen.append(exchange)
        return exchange

    def honour(self, exchange: Exchange) -> bool:
        """Wait out the ``Retry-After`` of a 409 or 429 (``False``: none, or too long to wait)."""
        wait = retry_after_seconds(exchange.header("retry-after"))
        if wait is None or wait > MAX_WAIT_SECONDS or wait + 1 > self.ctx.client.remaining_seconds():
            return False
        time.sleep(wait + 0.05)
        return True


def run(ctx: ProbeContext) -> None:
    """Every chaos check, in order; the last judges every response the others got."""
    chaos = _Run(ctx)
    try:
        _checks(chaos)
    except BudgetExhausted:
        client = ctx.client
        for check_id in TITLES:
            if not ctx.has(check_id):
                chaos.add(
                    check_id,
                    "skip",
                    f"the request or time budget ran out ({client.max_requests} requests)",
                )


def _checks(chaos: _Run) -> None:
    ctx = chaos.ctx
    _fault_control(chaos)
    op = pick_post(ctx)
    if op is None:
        why = "needs --spec with a POST operation" if ctx.target is None else "the description has no POST"
        chaos.add("chaos-retry-after-timeout", "skip", why)
        chaos.add("chaos-duplicates-while-slow", "skip", why)
    else:
        body: Any = ctx.sampler.sample(op.json_schema) if op.json_schema is not None else None
        _retry_after_timeout(chaos, op, body)
        _duplicates_while_slow(chaos, op, body)
    _errors_under_faults(chaos, op)
    _retry_after_honoured(chaos)
    _no_stack_trace(chaos)


def _simple_path(ctx: ProbeContext) -> str:
    op = ctx.target.simple_get() if ctx.target is not None else None
    return op.path + query_string(op.required_query) if op is not None else "/"


def _fault_control(chaos: _Run) -> None:
    """Ask for an injected 503 on a cheap GET: an ``INJECTED_FAULT`` answer means faults can be asked for."""
    chaos.ctx.step("chaos: does the target inject faults on request?")
    path = _simple_path(chaos.ctx)
    answer = chaos.ctx.client.request("GET", path, headers={"Bastion-Fault-Abort": "503"})
    body = decode_json(answer)
    chaos.control = answer.status == 503 and isinstance(body, dict) and body.get("code") == "INJECTED_FAULT"
    if chaos.control:
        chaos.add("chaos-fault-control", "pass", "Bastion-Fault-Abort answered 503 INJECTED_FAULT")
    else:
        chaos.add(
            "chaos-fault-control",
            "skip",
            f"GET {path} with Bastion-Fault-Abort: 503 answered {answer.status}: the chaos probes make"
            " their own slow and failing requests (faults.allow_header_control injects them in the gateway)",
        )


def _post(chaos: _Run, op: Operation, key: str, body: Any, **options: Any) -> Exchange:
    headers = {"Idempotency-Key": key, **options.pop("headers", {})}
    kwargs: dict[str, Any] = {"json": body} if body is not None else {}
    return chaos.request(op.method, op.path, headers=headers, **kwargs, **options)


def _originals(answers: list[Exchange]) -> list[Exchange]:
    return [a for a in answers if 200 <= a.status < 300 and not is_replay(a)]


def _retry_after_timeout(chaos: _Run, op: Operation, body: Any) -> None:
    """POST, give up before the answer, retry with the same key until answered; then once more."""
    chaos.ctx.step(f"chaos: retry after a timed-out {op.label}")
    key = new_key()
    if chaos.control:
        first = _post(
            chaos, op, key, body, headers={"Bastion-Fault-Delay": INJECTED_DELAY}, timeout=CLIENT_TIMEOUT
        )
    else:
        first = _post(chaos, op, key, body, timeout=OWN_TIMEOUT)
    retries: list[Exchange] = []
    for _ in range(8):
        answer = _post(chaos, op, key, body)
        retries.append(answer)
        if answer.status not in (409, 425, 429) or not chaos.honour(answer):
            break
    final = retries[-1]
    evidence = [e.summary() for e in (first, *retries)]
    if not 200 <= final.status < 300:
        chaos.add(
            "chaos-retry-after-timeout",
            "skip",
            f"the retries ended with {final.status}, so there is no effect to count",
            evidence,
        )
        return
    confirm = _post(chaos, op, key, body)
    evidence.append(confirm.summary())
    timed_out = first.status == 0
    how = "after a client timeout" if timed_out else f"(the first was answered {first.status} in time)"
    ran = _originals([*retries, confirm])
    if (
        len(ran) > 1
        or not is_replay(confirm)
        or (confirm.body != final.body and not _same_json(confirm, final))
    ):
        chaos.add(
            "chaos-retry-after-timeout",
            "fail",
            f"retries with the same key {how} ran the POST again: {len(ran)} answers were fresh, not"
            " replays (an order or a charge would be made twice)",
            evidence,
        )
        return
    waits = sum(1 for r in retries if r.status == 409)
    chaos.add(
        "chaos-retry-after-timeout",
        "pass",
        f"retried {how}: {waits} in-progress answer(s), then the stored response, marked replayed",
    )


def _same_json(a: Exchange, b: Exchange) -> bool:
    first = decode_json(a)
    return first is not None and first == decode_json(b)


def _duplicates_while_slow(chaos: _Run, op: Operation, body: Any) -> None:
    """One slow POST, and duplicates with its key while it runs: one effect, whatever they get."""
    chaos.ctx.step(f"chaos: duplicates while {op.label} is slow")
    key = new_key()
    slow = {"Bastion-Fault-Delay": INJECTED_DELAY} if chaos.control else {}

    def first() -> Exchange | None:
        try:
            return _post(chaos, op, key, body, headers=slow)
        except BudgetExhausted:
            return None

    def duplicate(_: int) -> Exchange | None:
        try:
            return _post(chaos, op, key, body)
        except BudgetExhausted:
            return None

    with ThreadPoolExecutor(max_workers=DUPLICATES + 1) as pool:
        pending = pool.submit(first)
        if chaos.control:
            # The slow one claims its key at once; the duplicates arrive while it waits upstream.
            time.sleep(0.3)
        duplicates = list(pool.map(duplicate, range(DUPLICATES)))
        answers = [a for a in (pending.result(), *duplicates) if a is not None]
    ran = _originals(answers)
    evidence = [a.summary() for a in answers]
    if len(ran) > 1:
        chaos.add(
            "chaos-duplicates-while-slow",
            "fail",
            f"{len(ran)} of {len(answers)} requests with one key ran while the first was slow",
            evidence,
        )
    elif not ran and not any(is_replay(a) for a in answers):
        statuses = ", ".join(sorted({str(a.status) for a in answers}))
        chaos.add("chaos-duplicates-while-slow", "skip", f"no request succeeded ({statuses})", evidence)
    else:
        conflicts = sum(1 for a in answers if a.status == 409)
        replays = sum(1 for a in answers if is_replay(a))
        chaos.add(
            "chaos-duplicates-while-slow",
            "pass",
            f"{len(answers)} requests, one ran: {conflicts} got 409 in progress, {replays} a replay",
        )


def _errors_under_faults(chaos: _Run, op: Operation | None) -> None:
    """Injected upstream failures (or the probe's own broken requests) answer problems with trace ids."""
    chaos.ctx.step("chaos: errors under failure")
    path = _simple_path(chaos.ctx)
    answers: list[Exchange] = []
    if chaos.control:
        for failure in _INJECTED_FAILURES:
            answers.append(chaos.request("GET", path, headers={"Bastion-Fault-Abort": failure}))
    else:
        if op is not None:
            headers = {"Idempotency-Key": new_key(), "Content-Type": "application/json"}
            answers.append(chaos.request(op.method, op.path, headers=headers, body=b'{"broken": '))
        answers.append(chaos.request("GET", f"/bastion-probe-chaos-{uuid.uuid4().hex[:12]}"))
    issues: list[str] = []
    for answer in answers:
        if answer.status < 400 or answer.status == 429:
            continue
        found = problem_issues(answer)
        trace = trace_issue(answer) if not found else None
        if trace is not None:
            found.append(trace)
        if found:
            issues.append(f"{answer.method} {answer.path} -> {answer.status}: {'; '.join(found)}")
    errors = [a for a in answers if a.status >= 400 and a.status != 429]
    evidence = [a.summary() for a in answers]
    if not errors:
        chaos.add("chaos-errors-under-faults", "skip", "no request failed", evidence)
    elif issues:
        chaos.add("chaos-errors-under-faults", "fail", "; ".join(issues), evidence)
    else:
        statuses = ", ".join(str(a.status) for a in errors)
        chaos.add("chaos-errors-under-faults", "pass", f"{statuses}: problems, each with its trace id")


def _retry_after_honoured(chaos: _Run) -> None:
    """Every 429 seen carries a Retry-After; after waiting the first one out, the request succeeds."""
    chaos.ctx.step("chaos: 429s and Retry-After")
    limited = [e for e in chaos.seen if e.status == 429]
    path = _simple_path(chaos.ctx)
    if not limited:
        for _ in range(BURST):
            answer = chaos.request("GET", path)
            if answer.status == 429:
                limited.append(answer)
                break
    if not limited:
        chaos.add(
            "chaos-retry-after-honoured",
            "skip",
            f"no 429 within {BURST} requests to GET {path} (the rate-limiting checks judge whether"
            " there should be one)",
        )
        return
    missing = [e for e in limited if retry_after_seconds(e.header("retry-after")) is None]
    evidence = [e.summary() for e in limited[:5]]
    if missing:
        chaos.add(
            "chaos-retry-after-honoured",
            "fail",
            f"{len(missing)} of {len(limited)} 429 answer(s) carry no Retry-After a client can parse",
            evidence,
        )
        return
    first = limited[0]
    if not chaos.honour(first):
        chaos.add(
            "chaos-retry-after-honoured",
            "skip",
            f"Retry-After: {first.header('retry-after')} is longer than the probe waits"
            f" ({MAX_WAIT_SECONDS:g} s)",
            evidence,
        )
        return
    again = chaos.request(
        first.method, first.path, headers=_resent_headers(first), body=first.sent_body or None
    )
    evidence.append(again.summary())
    if again.status == 429:
        chaos.add(
            "chaos-retry-after-honoured",
            "fail",
            f"still 429 after waiting Retry-After: {first.header('retry-after')}",
            evidence,
        )
    else:
        chaos.add(
            "chaos-retry-after-honoured",
            "pass",
            f"{len(limited)} 429(s) with Retry-After; after waiting"
            f" {first.header('retry-after')} s: {again.status}",
        )


def _resent_headers(exchange: Exchange) -> dict[str, str]:
    """The headers to send the request again with: the same key, no fault asked for."""
    dropped = ("user-agent", "accept", "bastion-fault-delay", "bastion-fault-abort")
    return {name: value for name, value in exchange.sent_headers.items() if name.lower() not in dropped}


def _no_stack_trace(chaos: _Run) -> None:
    """No answer the chaos run got, whatever the fault, shows a stack trace or other internals."""
    found: list[Exchange] = []
    kinds: set[str] = set()
    answered = [e for e in chaos.seen if e.status]
    for exchange in answered:
        leaked = leaks(exchange.text)
        if leaked:
            found.append(exchange)
            kinds.update(leaked)
    if found:
        chaos.add(
            "chaos-no-stack-trace",
            "fail",
            f"{len(found)} of {len(answered)} responses show {', '.join(sorted(kinds))}",
            [e.summary() for e in found[:5]],
        )
    else:
        chaos.add("chaos-no-stack-trace", "pass", f"{len(answered)} responses, none shows internals")
