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
from bastion.ratelimit.algorithms import US_PER_SECOND, Limit, Verdict


def policy_member(name: str, limit: Limit) -> str:
    """One member of ``RateLimit-Policy`` (constant for a rule and tier: computed once)."""
    window = limit.window_s
    member = f'"{name}";q={limit.quota}'
    return member if window is None else f"{member};w={window}"


def _seconds(us: int) -> int:
    return -(-us // US_PER_SECOND) if us > 0 else 0


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
        headers.append((b"ratelimit-policy", ", ".join(policies).encode()))
        members = []
        for name, limit, verdict in zip(names, limits, verdicts, strict=True):
            member = f'"{name}";r={verdict.remaining}'
            if limit.window_s is not None:
                member += f";t={_seconds(verdict.reset_us)}"
            members.append(member)
        headers.append((b"ratelimit", ", ".join(members).encode()))
    if legacy:
        tightest = min(range(len(verdicts)), key=lambda i: (verdicts[i].remaining, -verdicts[i].reset_us))
        verdict = verdicts[tightest]
        headers.append((b"x-ratelimit-limit", str(limits[tightest].quota).encode()))
        headers.append((b"x-ratelimit-remaining", str(verdict.remaining).encode()))
        headers.append((b"x-ratelimit-reset", str(_seconds(verdict.reset_us)).encode()))
    return headers
