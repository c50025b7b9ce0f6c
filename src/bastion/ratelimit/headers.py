"""Rate limit response headers: the IETF draft's structured fields and the legacy trio.

``RateLimit-Policy`` and ``RateLimit`` follow draft-ietf-httpapi-ratelimit-headers
(the text of revision 10): each is a Structured Fields List whose members are the
policy name as an sf-string (the rule's name), with parameters::

    RateLimit-Policy: "per-client";q=20;w=12, "login";q=5;w=60, "uploads";q=4;qu="concurrent-requests"
    RateLimit: "per-client";r=19;t=1, "login";r=4;t=60, "uploads";r=3

``q`` is the quota, ``w`` the window in seconds, ``r`` the quota remaining and
``t`` the seconds until the quota is whole again. A concurrency limit has no window
and no reset; its quota is in ``qu="concurrent-requests"`` (the draft's registered
unit; the others count in the default unit, ``requests``, which is left out). No
``pk`` (partition key) is sent: the partition is the client itself (or its address,
or everyone), which the client knows, and a digest of it would only cost work per
response. ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset``
(delta seconds) describe the most constrained rule: the one with the least quota
left (the later reset on a tie).

Every response's header bytes come from :meth:`HeaderSet.render`, admitted or refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.ratelimit.algorithms import CONCURRENCY, US_PER_SECOND, Limit, Verdict

_new = tuple.__new__

#: One response header: name and value.
Header = tuple[bytes, bytes]


#: The quota unit (``qu``) of a concurrency limit: requests in flight at once.
CONCURRENT_REQUESTS = "concurrent-requests"


def policy_member(name: str, limit: Limit) -> str:
    """One member of ``RateLimit-Policy`` (constant for a rule and tier: computed once).

    ``name`` is a rule name: printable ASCII without quotes or backslashes (the
    configuration refuses others), so it stands in an sf-string as it is.
    """
    member = f'"{name}";q={limit.quota}'
    if limit.algorithm == CONCURRENCY:
        return f'{member};qu="{CONCURRENT_REQUESTS}"'
    return f"{member};w={limit.window_s}"


def _member_template(name: str, limit: Limit) -> str:
    # The RateLimit member with ``r`` (and ``t``) left to fill in with %d.
    escaped = name.replace("%", "%%")
    return f'"{escaped}";r=%d' if limit.algorithm == CONCURRENCY else f'"{escaped}";r=%d;t=%d'


class HeaderSet:
    """The rate limit headers of one set of rules at one tier.

    Everything that depends only on the rules and limits is bytes computed once: the
    ``RateLimit-Policy`` value, each quota, and the ``RateLimit`` value with the numbers
    left to fill in. :meth:`render` fills them in for one decision.
    """

    __slots__ = ("costs", "draft", "legacy", "policy", "quotas", "resets", "template", "timed")

    def __init__(
        self,
        names: Sequence[str],
        limits: Sequence[Limit],
        costs: Sequence[int],
        *,
        draft: bool = True,
        legacy: bool = True,
    ) -> None:
        #: Whether to send ``RateLimit-Policy`` and ``RateLimit``.
        self.draft = draft
        #: Whether to send the ``X-RateLimit-*`` trio.
        self.legacy = legacy
        #: Each rule's cost: what a refused request did not consume.
        self.costs = tuple(costs)
        #: The ``RateLimit-Policy`` value.
        self.policy = ", ".join(map(policy_member, names, limits)).encode()
        #: Each rule's quota as ``X-RateLimit-Limit`` bytes.
        self.quotas = tuple(b"%d" % limit.quota for limit in limits)
        #: The ``RateLimit`` value to fill with each rule's ``r`` (and ``t``).
        self.template = ", ".join(map(_member_template, names, limits)).encode()
        #: Per rule: whether its ``RateLimit`` member has a reset (``t``).
        self.resets = tuple(limit.algorithm != CONCURRENCY for limit in limits)
        #: Whether every rule has a reset: no concurrency limit among them.
        self.timed = all(self.resets)

    def render(self, verdicts: Sequence[Verdict], admitted: bool) -> tuple[Header, ...]:
        """The headers of one decision: each rule's verdict, in rule order.

        On a refusal, rules that would have admitted the request report the quota it
        did not consume.
        """
        if not admitted:
            verdicts = [
                _new(Verdict, (True, v[1], v[2] + cost, v[3], v[4])) if v[0] else v
                for v, cost in zip(verdicts, self.costs, strict=True)
            ]
        # The numbers of RateLimit, and the rule with the least quota left (index i).
        count = len(verdicts)
        if count == 1 and self.timed:
            tightest = verdicts[0]
            i = 0
            reset_us = tightest[3]
            reset = -(-reset_us // US_PER_SECOND) if reset_us > 0 else 0
            ratelimit = self.template % (tightest[2], reset)
        elif count == 2 and self.timed:
            # Two rules (a global and a per-client one, say): the loop below, unrolled.
            tightest, second = verdicts
            remaining = tightest[2]
            reset_us = tightest[3]
            other = second[2]
            other_us = second[3]
            reset = -(-reset_us // US_PER_SECOND) if reset_us > 0 else 0
            other_reset = -(-other_us // US_PER_SECOND) if other_us > 0 else 0
            ratelimit = self.template % (remaining, reset, other, other_reset)
            i = 0
            if other < remaining or (other == remaining and other_us > reset_us):
                tightest = second
                i = 1
                reset = other_reset
        else:
            values: list[int] = []
            resets: list[int] = []
            tightest = verdicts[0]
            i = 0
            for j, (verdict, timed) in enumerate(zip(verdicts, self.resets, strict=True)):
                remaining = verdict[2]
                reset_us = verdict[3]
                resets.append(-(-reset_us // US_PER_SECOND) if reset_us > 0 else 0)
                values.append(remaining)
                if timed:
                    values.append(resets[j])
                if remaining < tightest[2] or (remaining == tightest[2] and reset_us > tightest[3]):
                    tightest = verdict
                    i = j
            ratelimit = self.template % tuple(values)
            reset = resets[i]
        if self.draft:
            if self.legacy:
                return (
                    (b"ratelimit-policy", self.policy),
                    (b"ratelimit", ratelimit),
                    (b"x-ratelimit-limit", self.quotas[i]),
                    (b"x-ratelimit-remaining", b"%d" % tightest[2]),
                    (b"x-ratelimit-reset", b"%d" % reset),
                )
            return ((b"ratelimit-policy", self.policy), (b"ratelimit", ratelimit))
        if self.legacy:
            return (
                (b"x-ratelimit-limit", self.quotas[i]),
                (b"x-ratelimit-remaining", b"%d" % tightest[2]),
                (b"x-ratelimit-reset", b"%d" % reset),
            )
        return ()
