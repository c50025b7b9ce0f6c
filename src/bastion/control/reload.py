"""What a reload says: the log lines and ``bastion_config_reloads_total{result}``.

A refused reload logs every problem of the new configuration or description, one
line each, and keeps the configuration in force. Each line names the process
(``pid``): with ``--workers N`` every worker says it reloaded. A reload that changes a setting
only a start applies (the logger, the metrics registry, the server's own settings)
says which, since those stay as they were until the next start.
"""

from __future__ import annotations

import os
from typing import Any

from bastion.config import Config, ConfigError
from bastion.observability.metrics import Metrics
from bastion.validation.openapi import OpenAPIError

#: The counter of reloads, by result (``ok``, ``error``).
RELOADS = "bastion_config_reloads_total"
#: Configuration sections a reload cannot apply: they take effect at the next start.
RESTART_ONLY = ("logging", "metrics", "upstream", "gateway", "admin")


class ReloadLog:
    """Logs and counts the reloads of one :class:`~bastion.Bastion`."""

    def __init__(self, logger: Any, metrics: Metrics | None) -> None:
        self.logger = logger
        self.tally = (
            metrics.tally(RELOADS, "Configuration reloads, by result (ok, error).", ["result"])
            if metrics is not None
            else None
        )

    def failed(self, exc: Exception) -> None:
        """The new configuration was refused: log each problem; the one in force stays."""
        for where, reason in problems_of(exc):
            self.logger.error(
                "reload refused: the configuration in force stays", key=where, reason=reason, pid=os.getpid()
            )
        if self.tally is not None:
            self.tally.count("error")

    def succeeded(self, old: Config, new: Config) -> None:
        """The new configuration is in force: say so, and name what it changed that waits for a start."""
        waiting = [name for name in RESTART_ONLY if getattr(old, name) != getattr(new, name)]
        if waiting:
            self.logger.warning(
                "configuration reloaded; these sections apply at the next start",
                sections=waiting,
                pid=os.getpid(),
            )
        else:
            self.logger.info("configuration reloaded", pid=os.getpid())
        if self.tally is not None:
            self.tally.count("ok")


def problems_of(exc: Exception) -> list[tuple[str, str]]:
    """``(where, reason)`` for every problem ``exc`` reports (a configuration, a description, anything)."""
    if isinstance(exc, ConfigError):
        return [(f"{exc.source}: {key}", reason) for key, reason in exc.problems]
    if isinstance(exc, OpenAPIError):
        return [(f"{exc.source}: {exc.pointer or '/'}", exc.reason)]
    return [("reload", f"{type(exc).__name__}: {exc}")]
