"""The lint rules: the catalog of rule ids and the one-pass walk that applies them."""

from __future__ import annotations

from bastion.catalog import RULES, Rule

__all__ = ["RULES", "Rule"]
