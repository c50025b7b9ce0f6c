"""A large real-world description for memory tests and measurements: Stripe's paths, repeated."""

from __future__ import annotations

import re
from pathlib import Path

STRIPE = Path("/work/shared/specs/stripe_spec3.yaml")
_PATH_KEY = re.compile(r'^  "/', re.MULTILINE)
_OPERATION_ID = re.compile(r"^(\s+operationId: )(\S+)$", re.MULTILINE)


def big_description(target_bytes: int, source: Path = STRIPE) -> str:
    """Stripe's description with its ``paths`` repeated, renamed per copy, to ``target_bytes``."""
    text = source.read_text(encoding="utf-8")
    start = text.index("\npaths:\n") + len("\npaths:\n")
    end = text.index("\nsecurity:\n")
    head, paths, tail = text[:start], text[start : end + 1], text[end + 1 :]
    copies = [paths]
    size = len(text)
    index = 0
    while size < target_bytes:
        index += 1
        copy = _PATH_KEY.sub(f'  "/c{index}/', paths)
        copy = _OPERATION_ID.sub(rf"\g<1>\g<2>C{index}", copy)
        copies.append(copy)
        size += len(copy)
    return head + "".join(copies) + tail
