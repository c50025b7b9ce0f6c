"""Error probes: provoked 404, 405, 400 and 422 are problems; trace ids match; nothing leaks."""

from __future__ import annotations

import uuid

from bastion.check.probes.analysis import leaks, problem_issues, trace_issue
from bastion.check.probes.base import ProbeContext, new_key
from bastion.check.probes.client import Exchange
from bastion.check.probes.target import query_string

PITFALL = "errors"
_WRONG_METHODS = ("DELETE", "PUT", "PATCH", "POST", "GET")


def _problem_check(
    ctx: ProbeContext, check_id: str, title: str, exchange: Exchange, expected: set[int]
) -> None:
    if exchange.status == 429:
        ctx.add(
            check_id, PITFALL, title, "skip", "rate limited before the check could run", [exchange.summary()]
        )
        return
    issues = []
    if exchange.status not in expected:
        issues.append(f"status {exchange.status}, expected {' or '.join(map(str, sorted(expected)))}")
    issues.extend(problem_issues(exchange))
    if issues:
        ctx.add(check_id, PITFALL, title, "fail", "; ".join(issues), [exchange.summary()])
    else:
        ctx.add(
            check_id,
            PITFALL,
            title,
            "pass",
            f"{exchange.status} application/problem+json with type, title, status",
        )


def run(ctx: ProbeContext) -> None:
    """Provoke each error status and check that the answer is a problem."""
    client = ctx.client
    ctx.step("errors: unknown path")
    missing = client.send("GET", f"/bastion-probe-missing-{uuid.uuid4().hex[:12]}")
    _problem_check(ctx, "errors-404-problem", "unknown path gives a 404 problem", missing, {404})

    ctx.step("errors: wrong method")
    target = ctx.target
    choice = next(
        (
            (template, method)
            for template, allowed in (target.methods.items() if target is not None else ())
            for method in _WRONG_METHODS
            if method not in allowed
        ),
        None,
    )
    if target is not None and choice is not None:
        template, method = choice
        op = next(o for o in target.operations if o.template == template)
        wrong = client.send(method, op.path)
        _problem_check(ctx, "errors-405-problem", f"{method} {template} gives a 405 problem", wrong, {405})
    elif target is not None:
        ctx.add(
            "errors-405-problem",
            PITFALL,
            "wrong method gives a 405 problem",
            "skip",
            "every path of the description allows every method",
        )
    else:
        wrong = client.send("DELETE", "/")
        if wrong.status == 405:
            _problem_check(ctx, "errors-405-problem", "DELETE / gives a 405 problem", wrong, {405})
        else:
            ctx.add(
                "errors-405-problem",
                PITFALL,
                "wrong method gives a 405 problem",
                "skip",
                f"DELETE / gave {wrong.status}; pass --spec so a known path can be tried",
            )

    ctx.step("errors: malformed JSON")
    json_ops = target.with_json_body() if target is not None else []
    if json_ops:
        op = json_ops[0]
        headers = {"Content-Type": "application/json", "Idempotency-Key": new_key()}
        broken = client.send(op.method, op.path, headers=headers, body=b'{"broken": ')
        _problem_check(
            ctx, "errors-400-problem", f"malformed JSON to {op.label} gives a 400 problem", broken, {400}
        )
        ctx.step("errors: invalid body")
        variants = ctx.sampler.variants(op.json_schema)
        if variants:
            variant = variants[0]
            invalid = client.send(
                op.method, op.path, json=variant.body, headers={"Idempotency-Key": new_key()}
            )
            _problem_check(
                ctx,
                "errors-422-problem",
                f"invalid body ({variant.kind} {variant.field!r}) to {op.label} gives a 422 problem",
                invalid,
                {400, 422},
            )
        else:
            ctx.add(
                "errors-422-problem", PITFALL, "invalid body gives a 422 problem", "skip", "no object schema"
            )
    else:
        broken = client.send("POST", "/", headers={"Content-Type": "application/json"}, body=b'{"broken": ')
        if broken.status >= 500 or broken.status == 400:
            _problem_check(
                ctx, "errors-400-problem", "malformed JSON to POST / gives a 400 problem", broken, {400}
            )
        else:
            ctx.add(
                "errors-400-problem",
                PITFALL,
                "malformed JSON gives a 400 problem",
                "skip",
                f"POST / gave {broken.status}; pass --spec so an operation with a JSON body can be tried",
            )
        ctx.add("errors-422-problem", PITFALL, "invalid body gives a 422 problem", "skip", "needs --spec")
    _provoke(ctx)


def _provoke(ctx: ProbeContext) -> None:
    """Send inputs that commonly crash naive handlers, so that leaks have a chance to show."""
    target = ctx.target
    ctx.step("errors: odd inputs")
    for op in (target.operations if target is not None else [])[:20]:
        if op.method == "GET" and op.query:
            odd = {name: "'\"<>" for name in op.query}
            ctx.client.send("GET", op.path + query_string({**op.required_query, **odd}))
            break
    for op in (target.operations if target is not None else [])[:20]:
        if op.method == "GET" and "{" in op.template:
            ctx.client.send("GET", op.path.rsplit("/", 1)[0] + "/%27%22%3C%3E")
            break


def finish(ctx: ProbeContext) -> None:
    """Judge every error response of the run: trace ids and leaked internals."""
    errors = [e for e in ctx.client.exchanges if e.status >= 400 and e.status != 429]
    problems = [e for e in errors if not problem_issues(e)]
    if not problems:
        ctx.add(
            "errors-trace-id",
            PITFALL,
            "problems carry a trace id that matches a response header",
            "fail" if errors else "skip",
            "no error response was a problem, so none carried a trace id"
            if errors
            else "no error responses seen",
            [e.summary() for e in errors[:3]],
        )
    else:
        bad = [(e, trace_issue(e)) for e in problems]
        failing = [(e, why) for e, why in bad if why]
        if failing:
            ctx.add(
                "errors-trace-id",
                PITFALL,
                "problems carry a trace id that matches a response header",
                "fail",
                f"{len(failing)} of {len(problems)} problem(s): {failing[0][1]}",
                [e.summary() for e, _ in failing[:3]],
            )
        else:
            ctx.add(
                "errors-trace-id",
                PITFALL,
                "problems carry a trace id that matches a response header",
                "pass",
                f"all {len(problems)} problem(s) carry a trace_id equal to traceparent or X-Request-ID",
            )
    leaking = [(e, leaks(e.text)) for e in errors]
    leaking = [(e, kinds) for e, kinds in leaking if kinds]
    title = "error bodies reveal no stack trace, exception, file path or SQL"
    if leaking:
        kinds = sorted({k for _, found in leaking for k in found})
        ctx.add(
            "errors-no-leaks",
            PITFALL,
            title,
            "fail",
            f"{len(leaking)} of {len(errors)} error response(s) reveal: {', '.join(kinds)}",
            [e.summary() for e, _ in leaking[:3]],
        )
    else:
        ctx.add(
            "errors-no-leaks",
            PITFALL,
            title,
            "pass" if errors else "skip",
            f"{len(errors)} error response(s) checked" if errors else "no error responses seen",
        )
