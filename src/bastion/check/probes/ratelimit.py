"""Rate limit probes (only with ``--burst N``): a 429, a Retry-After that parses, a falling quota."""

from __future__ import annotations

import time

from bastion.check.probes.analysis import remaining_quota
from bastion.check.probes.base import ProbeContext
from bastion.check.probes.client import Exchange, retry_after_seconds
from bastion.check.probes.target import query_string

PITFALL = "rate-limiting"
#: The longest Retry-After the probe waits out to see the limit recover.
MAX_WAIT_SECONDS = 30.0
_TITLES = {
    "rate-limit-429": "a burst gets a 429",
    "rate-limit-retry-after": "the 429 carries a Retry-After that parses",
    "rate-limit-remaining": "the remaining quota falls consistently",
    "rate-limit-recovers": "a request after Retry-After succeeds",
}


def run(ctx: ProbeContext) -> None:
    """Send ``ctx.burst`` requests to one cheap GET and judge the limit from the answers."""
    if ctx.burst <= 0:
        for check_id, title in _TITLES.items():
            ctx.add(check_id, PITFALL, title, "skip", "pass --burst N to send a burst (it loads the target)")
        return
    op = ctx.target.simple_get() if ctx.target is not None else None
    path = op.path + query_string(op.required_query) if op is not None else "/"
    ctx.step(f"rate limiting: burst of {ctx.burst} to GET {path}")
    sent: list[Exchange] = []
    limited: Exchange | None = None
    for _ in range(ctx.burst):
        exchange = ctx.client.request("GET", path)
        sent.append(exchange)
        if exchange.status == 429:
            limited = exchange
            break
    if limited is None:
        statuses = ", ".join(sorted({str(e.status) for e in sent}))
        ctx.add(
            "rate-limit-429",
            PITFALL,
            _TITLES["rate-limit-429"],
            "fail",
            f"{len(sent)} requests to GET {path} in a row, no 429 (statuses {statuses})",
            [sent[-1].summary()] if sent else [],
        )
    else:
        ctx.add(
            "rate-limit-429", PITFALL, _TITLES["rate-limit-429"], "pass", f"429 after {len(sent)} request(s)"
        )
    _remaining(ctx, sent)
    if limited is None:
        for check_id in ("rate-limit-retry-after", "rate-limit-recovers"):
            ctx.add(check_id, PITFALL, _TITLES[check_id], "fail", "no 429 was returned")
        return
    wait = retry_after_seconds(limited.header("retry-after"))
    if wait is None:
        ctx.add(
            "rate-limit-retry-after",
            PITFALL,
            _TITLES["rate-limit-retry-after"],
            "fail",
            f"Retry-After is {limited.header('retry-after')!r}",
            [limited.summary()],
        )
        ctx.add(
            "rate-limit-recovers",
            PITFALL,
            _TITLES["rate-limit-recovers"],
            "skip",
            "no Retry-After to wait for",
        )
        return
    ctx.add(
        "rate-limit-retry-after",
        PITFALL,
        _TITLES["rate-limit-retry-after"],
        "pass",
        f"Retry-After: {wait:g} s",
    )
    if wait > MAX_WAIT_SECONDS or wait + 0.5 > ctx.client.remaining_seconds():
        ctx.add(
            "rate-limit-recovers",
            PITFALL,
            _TITLES["rate-limit-recovers"],
            "skip",
            f"Retry-After {wait:g} s is longer than the probe may wait",
        )
        return
    ctx.step(f"rate limiting: waiting {wait:g} s")
    time.sleep(wait + 0.2)
    after = ctx.client.request("GET", path)
    if after.status == 429:
        ctx.add(
            "rate-limit-recovers",
            PITFALL,
            _TITLES["rate-limit-recovers"],
            "fail",
            f"still 429 {wait:g} s later",
            [after.summary()],
        )
    else:
        ctx.add(
            "rate-limit-recovers", PITFALL, _TITLES["rate-limit-recovers"], "pass", f"answered {after.status}"
        )


def _remaining(ctx: ProbeContext, sent: list[Exchange]) -> None:
    title = _TITLES["rate-limit-remaining"]
    values = [(e, remaining_quota(e)) for e in sent]
    announced = [(e, v) for e, v in values if v is not None]
    if not announced:
        ctx.add(
            "rate-limit-remaining",
            PITFALL,
            title,
            "fail",
            "no response announced its remaining quota (RateLimit or X-RateLimit-Remaining)",
            [sent[0].summary()] if sent else [],
        )
        return
    previous: int | None = None
    for exchange, value in announced:
        assert value is not None
        # One unit of slack: a token may refill between two requests of the burst.
        if previous is not None and value > previous + 1:
            ctx.add(
                "rate-limit-remaining",
                PITFALL,
                title,
                "fail",
                f"remaining rose from {previous} to {value} during the burst",
                [exchange.summary()],
            )
            return
        previous = value
    last = sent[-1]
    if last.status == 429 and (remaining_quota(last) or 0) > 0:
        ctx.add(
            "rate-limit-remaining",
            PITFALL,
            title,
            "fail",
            f"the 429 says {remaining_quota(last)} remain",
            [last.summary()],
        )
        return
    shown = " ".join(str(v) for _, v in announced[:12])
    ctx.add(
        "rate-limit-remaining",
        PITFALL,
        title,
        "pass",
        f"remaining: {shown}{' ...' if len(announced) > 12 else ''}",
    )
