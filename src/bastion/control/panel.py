"""The dashboard's control panel: the rules in force, suggested limits, and the admin API behind it.

The dashboard (:mod:`bastion.observability.dashboard`) shows each rule with its mode,
its limits per tier and the layer it comes from (``file`` or ``admin``), and, per rule
and tier, the limit ``bastion limits suggest`` would suggest from this process's
observations. With an admin API that has tokens (``admin.token_file``), the page sends
changes through it: the dashboard relays ``{path}/admin/v1/...`` to the same admin app,
with the same token check, validation and audit line as the admin listener.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from bastion.asgi import ASGIApp
from bastion.control.changes import RULE
from bastion.control.suggest import merge, suggest
from bastion.ratelimit.observed import observed_snapshot

if TYPE_CHECKING:
    from bastion.stack import Bastion

#: The percentile and headroom of the dashboard's suggestions (``limits suggest``'s defaults).
PERCENTILE = 99.0
HEADROOM = 1.5


class ControlPanel:
    """What the dashboard shows of, and changes in, one :class:`~bastion.Bastion`'s configuration."""

    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion

    @property
    def admin(self) -> ASGIApp | None:
        """The admin app the page's changes go to; ``None`` without an admin API that has tokens."""
        control = self.bastion.admin
        if control is None or control.tokens is None:
            return None
        app: ASGIApp | None = control.app
        return app

    def data(self) -> dict[str, Any]:
        """The rules in force and the suggested limits, for the dashboard's data endpoint."""
        control = self.bastion.admin
        changed = {name for kind, name in (control.changes if control is not None else {}) if kind == RULE}
        rules = []
        for rule in self.bastion.config.rate_limits.rules:
            rules.append(
                {
                    "name": rule.name,
                    "mode": rule.mode,
                    "enforce_percent": rule.enforce_percent,
                    "algorithm": rule.algorithm,
                    "limit": str(rule.limit),
                    "tiers": {tier: str(rate) for tier, rate in rule.tiers.items()},
                    "layer": "admin" if rule.name in changed else "file",
                }
            )
        suggestions = [
            asdict(suggest(observed, PERCENTILE, HEADROOM))
            for observed in merge([observed_snapshot(self.bastion.resources)])
        ]
        return {
            "rules": rules,
            "suggestions": suggestions,
            "suggest_at": {"percentile": PERCENTILE, "headroom": HEADROOM},
            "controls": self.admin is not None,
        }
