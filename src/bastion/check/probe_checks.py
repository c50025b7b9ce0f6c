"""Every probe check bastion knows: its pitfall, where it sits in the checklist, and its fix.

The checks themselves live in :mod:`bastion.check.probes`; this catalogue gives each
id a :class:`~bastion.check.remediation.Remediation` (what bastion enforces as
bastion.yaml lines, the rest as an instruction) and a priority group for the HTML
report's checklist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bastion.catalog import PER_CLIENT
from bastion.check.remediation import OPERATION, Remediation

#: The checklist's groups, most urgent first: a duplicated write costs money, a leak or a
#: coarse error costs debugging time, then load, then bad input, then what you can see.
PRIORITIES = ("idempotency for writes", "errors", "rate limits", "validation", "monitoring", "other")


@dataclass(frozen=True, slots=True)
class ProbeCheck:
    """One probe check: pitfall, checklist group and remediation."""

    id: str
    pitfall: str
    priority: str
    fix: Remediation


_BEHIND = "Put bastion in front of the API (`Bastion(app, 'bastion.yaml')` or `bastion gateway`); "
_IDEMPOTENT: dict[str, Any] = {"enabled": True, "methods": ["POST", "PATCH"]}
_PROBLEMS: dict[str, Any] = {"errors": {"normalize_upstream": "all"}}
_VALIDATE: dict[str, Any] = {"enabled": True, "mode": "enforce"}
_LIMITED: dict[str, Any] = {"rate_limits": {"enabled": True, "headers": "both", "rules": [PER_CLIENT]}}
_BUDGET = Remediation("Give the probe more room (`--max-requests`, `--max-seconds`) so these checks can run.")


def _check(check_id: str, pitfall: str, priority: str, fix: Remediation) -> ProbeCheck:
    return ProbeCheck(check_id, pitfall, priority, fix)


_ALL = (
    _check(
        "idempotency-replay",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "it stores the first response per Idempotency-Key and replays it to a retry, "
            "marked `Idempotent-Replayed: true`, so the operation runs once.",
            {"idempotency": _IDEMPOTENT},
        ),
    ),
    _check(
        "idempotency-key-reuse",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "a key sent again with another body then gets 409 (or 422 with `on_mismatch: 422`).",
            {"idempotency": {**_IDEMPOTENT, "on_mismatch": 409}},
        ),
    ),
    _check(
        "idempotency-concurrent",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "the first request of a key holds a lease, so a concurrent duplicate gets 409 "
            "instead of running the operation a second time. Use a shared store (Redis, PostgreSQL) "
            "when the API runs in several processes.",
            {"idempotency": {**_IDEMPOTENT, "lease": "60s"}},
        ),
    ),
    _check(
        "idempotency-key-required",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "with the operation in `idempotency.require` (or `x-bastion-idempotency: "
            "required` on it) a request without a key gets 400.",
            {"idempotency": {"enabled": True, "require": [OPERATION]}},
            {"x-bastion-idempotency": "required"},
        ),
    ),
    _check(
        "errors-404-problem",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "with the description in `openapi`, a path it does not declare gets a 404 "
            "problem, and an upstream's own 404 page becomes one.",
            {**_PROBLEMS, "validation": {"unknown_routes": "reject"}},
        ),
    ),
    _check(
        "errors-405-problem",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "with the description in `openapi`, a method a path does not declare gets a "
            "405 problem with `Allow`.",
            {**_PROBLEMS, "validation": {"unknown_routes": "reject"}},
        ),
    ),
    _check(
        "errors-400-problem",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "malformed JSON then gets a 400 problem before it reaches the handler.",
            {**_PROBLEMS, "validation": _VALIDATE},
        ),
    ),
    _check(
        "errors-422-problem",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "a body that breaks its schema then gets a 422 problem listing every field.",
            {**_PROBLEMS, "validation": _VALIDATE},
        ),
    ),
    _check(
        "errors-no-leaks",
        "errors",
        "errors",
        Remediation(
            "Turn off debug pages in the framework, and "
            + _BEHIND[0].lower()
            + _BEHIND[1:]
            + "every error body that is not a problem is replaced by one (the original is logged, "
            "never sent).",
            _PROBLEMS,
        ),
    ),
    _check(
        "errors-trace-id",
        "errors",
        "monitoring",
        Remediation(
            _BEHIND + "every problem then carries `trace_id`, the trace id of the `traceparent` it "
            "sends back, so a report from a client finds its log lines.",
            _PROBLEMS,
        ),
    ),
    _check(
        "rate-limit-429",
        "rate-limiting",
        "rate limits",
        Remediation(
            _BEHIND + "with a rule (or `x-bastion-rate-limit` on the operation) a client past its "
            "budget gets 429.",
            _LIMITED,
            {"x-bastion-rate-limit": "100/minute"},
        ),
    ),
    _check(
        "rate-limit-retry-after",
        "rate-limiting",
        "rate limits",
        Remediation(_BEHIND + "its 429 always carries `Retry-After` in seconds.", _LIMITED),
    ),
    _check(
        "rate-limit-remaining",
        "rate-limiting",
        "rate limits",
        Remediation(
            _BEHIND + "it announces the remaining quota in `RateLimit` (and `X-RateLimit-*` with "
            "`headers: both`) from the same counter that decides.",
            _LIMITED,
        ),
    ),
    _check(
        "rate-limit-recovers",
        "rate-limiting",
        "rate limits",
        Remediation(
            _BEHIND + "its budgets refill continuously (GCRA), so a request after `Retry-After` passes.",
            _LIMITED,
        ),
    ),
    *(
        _check(
            f"validation-{kind}",
            "validation",
            "validation",
            Remediation(_BEHIND + f"with the description in `openapi`, {what}.", {"validation": extra}),
        )
        for kind, what, extra in (
            ("wrong-type", "a field of the wrong type gets 422 naming it", _VALIDATE),
            ("missing-required", "a missing required field gets 422 naming it", _VALIDATE),
            ("out-of-range", "a value past its bounds gets 422 naming it", _VALIDATE),
            (
                "unknown-field",
                "an unknown field gets 422 naming it",
                {**_VALIDATE, "reject_unknown_fields": True},
            ),
            ("malformed-json", "malformed JSON gets 400", _VALIDATE),
            ("wrong-content-type", "a body in an undeclared media type gets 415", _VALIDATE),
            ("oversized", "a body over `max_body_bytes` gets 413", {**_VALIDATE, "max_body_bytes": "1MiB"}),
            ("query-wrong-type", "a query parameter of the wrong type gets 422 naming it", _VALIDATE),
        )
    ),
    _check(
        "chaos-fault-control",
        "errors",
        "monitoring",
        Remediation(
            "In staging, run `bastion gateway` in front of the API with fault injection that tests may "
            "ask for by header (docs/faults.md); never in production.",
            {"faults": {"allow_header_control": True}},
        ),
    ),
    _check(
        "chaos-retry-after-timeout",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "a client that gives up on a slow POST and retries it with the same Idempotency-Key "
            "gets the first run's response (or 409 while it still runs), never a second run.",
            {"idempotency": _IDEMPOTENT},
        ),
    ),
    _check(
        "chaos-duplicates-while-slow",
        "idempotency",
        "idempotency for writes",
        Remediation(
            _BEHIND + "duplicates that arrive while the first request is slow get 409 (or, with "
            "`idempotency.wait`, the first request's response) instead of a second run.",
            {"idempotency": {**_IDEMPOTENT, "wait": "2s"}},
        ),
    ),
    _check(
        "chaos-retry-after-honoured",
        "rate-limiting",
        "rate limits",
        Remediation(
            _BEHIND + "every 429 carries `Retry-After`, and a client that waits that long is admitted.",
            _LIMITED,
        ),
    ),
    _check(
        "chaos-errors-under-faults",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "an upstream failure or timeout becomes a problem (502, 504) with a trace id, and an "
            "error page the API sends itself is replaced by a problem.",
            _PROBLEMS,
        ),
    ),
    _check(
        "chaos-no-stack-trace",
        "errors",
        "errors",
        Remediation(
            _BEHIND + "5xx bodies that are not problems are replaced by problems (the original is logged, "
            "never sent), so no fault shows a stack trace.",
            _PROBLEMS,
        ),
    ),
    *(
        _check(f"{pitfall}-budget", pitfall, priority, _BUDGET)
        for pitfall, priority in (
            ("idempotency", "idempotency for writes"),
            ("errors", "errors"),
            ("rate-limiting", "rate limits"),
            ("validation", "validation"),
        )
    ),
)

#: Every probe check by id.
PROBE_CHECKS: dict[str, ProbeCheck] = {check.id: check for check in _ALL}

_FALLBACK = Remediation(
    "See the check's detail and docs/checker.md; put bastion in front of the API for what it enforces."
)


def check_fix(check_id: str) -> Remediation:
    """The remediation of ``check_id`` (unfilled), or a pointer to the docs for an unknown id."""
    check = PROBE_CHECKS.get(check_id)
    return check.fix if check is not None else _FALLBACK


def check_priority(check_id: str, pitfall: str) -> str:
    """The checklist group of ``check_id``."""
    check = PROBE_CHECKS.get(check_id)
    if check is not None:
        return check.priority
    by_pitfall = {"idempotency": 0, "errors": 1, "rate-limiting": 2, "validation": 3}
    return PRIORITIES[by_pitfall.get(pitfall, len(PRIORITIES) - 1)]
