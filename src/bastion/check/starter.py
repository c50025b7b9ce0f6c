"""``bastion probe --suggest-config``: a starter bastion.yaml that closes every failed check.

The bastion.yaml fragments of the failed checks' remediations are merged one by one
(mappings recursively, lists as a union); after each, the configuration so far must
pass :func:`bastion.config.load_config`, so a fragment that conflicts with another
or is refused is reported by the check it belongs to, and nothing is written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from bastion.check.remediation import MergeConflict, merge_fragment, to_yaml
from bastion.check.results import CheckResult, ProbeResult


class SuggestError(Exception):
    """The remediations do not merge into a configuration bastion accepts."""


def starter_config(result: ProbeResult, out: Path) -> tuple[dict[str, Any], list[CheckResult]]:
    """The merged configuration and the failed checks it answers; ``out`` anchors relative paths."""
    from bastion.config import ConfigError, load_config

    config: dict[str, Any] = {}
    if result.spec is not None:
        # Relative to the file written, as bastion reads paths in a configuration file.
        config["openapi"] = os.path.relpath(Path(result.spec).resolve(), out.resolve().parent)
    answered = []
    for check in result.checks:
        if check.status != "fail":
            continue
        fix = check.remediation
        if fix.config is None:
            continue
        try:
            merge_fragment(config, fix.config)
            load_config(config, env={})
        except MergeConflict as exc:
            raise SuggestError(f"the fix for {check.id} conflicts with an earlier one: {exc}") from None
        except ConfigError as exc:
            raise SuggestError(f"the fix for {check.id} makes an invalid configuration: {exc}") from None
        answered.append(check)
    return config, answered


def write_starter_config(result: ProbeResult, out: Path) -> int:
    """Write the starter configuration to ``out``; returns the number of failed checks it answers."""
    config, answered = starter_config(result, out)
    # One comment line each: nothing the command line or the server said may start a YAML line.
    url = "".join(c for c in result.base_url if c.isprintable())
    header = [f"# A starter bastion.yaml from `bastion probe {url}`.", "# It answers:"]
    header += [f"#   {c.id}{f' ({c.operation})' if c.operation else ''}" for c in answered]
    unanswered = [c for c in result.checks if c.status == "fail" and c not in answered]
    if unanswered:
        header.append("# Not answered by configuration (see the report's fixes):")
        header += [f"#   {c.id}" for c in unanswered]
    if not answered:
        header.append("#   (no failed check that configuration answers)")
    out.write_text("\n".join(header) + "\n" + (to_yaml(config) if config else ""), encoding="utf-8")
    return len(answered)
