"""Rate limit response headers: the IETF draft's structured fields and the legacy trio.

``RateLimit-Policy`` and ``RateLimit`` follow draft-ietf-httpapi-ratelimit-headers
(revision 11): each is a Structured Fields List whose members are the policy name
as an sf-string, with Integer parameters::

    RateLimit-Policy: "per-client";q=20;w=12, "login";q=5;w=60
    RateLimit: "per-client";r=19;t=1, "login";r=4;t=60

``q`` is the quota, ``w`` the window in seconds, ``r`` the quota remaining and
``t`` the seconds until the quota is whole again. ``X-RateLimit-Limit``,
``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (delta seconds) describe the
most constrained rule: the one with the least quota left.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.asgi import Headers
from bastion.ratelimit.algorithms import CONCURRENCY, US_PER_SECOND, Limit, Verdict


def policy_member(name: str, limit: Limit) -> str:
    """One member of ``RateLimit-Policy`` (constant for a rule and tier: computed once)."""
    window = limit.window_s
    member = f'"{name}";q={limit.quota}'
    return member if window is None else f"{member};w={window}"


def _seconds(us: int) -> int:
    return -(-us // US_PER_SECOND) if us > 0 else 0


def policy_header(policies: Sequence[str]) -> bytes:
    """The ``RateLimit-Policy`` value from the members of the matched rules."""
    return ", ".join(policies).encode()


def ratelimit_header(names: Sequence[str], limits: Sequence[Limit], verdicts: Sequence[Verdict]) -> bytes:
    """The ``RateLimit`` value: each matched rule's remaining quota and seconds to reset."""
    if len(names) == 1 and limits[0].algorithm != CONCURRENCY:
        verdict = verdicts[0]
        return f'"{names[0]}";r={verdict.remaining};t={_seconds(verdict.reset_us)}'.encode()
    members = []
    for name, limit, verdict in zip(names, limits, verdicts, strict=True):
        if limit.algorithm == CONCURRENCY:
            members.append(f'"{name}";r={verdict.remaining}')
        else:
            members.append(f'"{name}";r={verdict.remaining};t={_seconds(verdict.reset_us)}')
    return ", ".join(members).encode()


def legacy_headers(limits: Sequence[Limit], verdicts: Sequence[Verdict]) -> Headers:
    """``X-RateLimit-Limit``, ``-Remaining`` and ``-Reset`` of the rule with the least quota left."""
    tightest = 0
    for i in range(1, len(verdicts)):  # the loop is empty for the common single rule
        here, best = verdicts[i], verdicts[tightest]
        if here.remaining < best.remaining or (
            here.remaining == best.remaining and here.reset_us > best.reset_us
        ):
            tightest = i
    verdict = verdicts[tightest]
    return [
        (b"x-ratelimit-limit", str(limits[tightest].quota).encode()),
        (b"x-ratelimit-remaining", str(verdict.remaining).encode()),
        (b"x-ratelimit-reset", str(_seconds(verdict.reset_us)).encode()),
    ]


def render_headers(
    names: Sequence[str],
    policies: Sequence[str],
    limits: Sequence[Limit],
    verdicts: Sequence[Verdict],
    *,
    draft: bool = True,
    legacy: bool = True,
) -> Headers:
    """The headers for one response, from the rules that matched it and their verdicts."""
    headers: Headers = []
    if draft:
        headers.append((b"ratelimit-policy", policy_header(policies)))
        headers.append((b"ratelimit", ratelimit_header(names, limits, verdicts)))
    if legacy:
        headers.extend(legacy_headers(limits, verdicts))
    return headers
