"""Parsers for the value types of the configuration: durations, rates and byte sizes.

Each parser accepts the strings a person writes in YAML (``24h``, ``100/minute``,
``1MiB``) and raises :class:`ValueError` with a message that says what was expected.
The ``Annotated`` aliases plug them into pydantic models.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer

_DURATION_UNITS_MS: dict[str, int] = {
    "ms": 1,
    "s": 1000,
    "sec": 1000,
    "second": 1000,
    "seconds": 1000,
    "m": 60_000,
    "min": 60_000,
    "minute": 60_000,
    "minutes": 60_000,
    "h": 3_600_000,
    "hour": 3_600_000,
    "hours": 3_600_000,
    "d": 86_400_000,
    "day": 86_400_000,
    "days": 86_400_000,
}

_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$")


def parse_duration_ms(value: object) -> int:
    """Parse ``500ms``, ``60s``, ``5m``, ``24h``, ``7d`` or a number of seconds into milliseconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 500ms, 60s, 5m or 24h, got a boolean")
    if isinstance(value, int | float):
        if value < 0 or not math.isfinite(value):
            raise ValueError("a duration cannot be negative")
        return round(value * 1000)
    if not isinstance(value, str):
        raise ValueError(f"expected a duration such as 500ms, 60s, 5m or 24h, got {type(value).__name__}")
    match = _DURATION_RE.match(value.lower())
    if match is None:
        raise ValueError(f"{value!r} is not a duration; write it like 500ms, 60s, 5m or 24h")
    number, unit = match.groups()
    if unit == "":
        unit = "s"
    scale = _DURATION_UNITS_MS.get(unit)
    if scale is None:
        raise ValueError(f"{value!r} has an unknown unit {unit!r}; use ms, s, m, h or d")
    return round(float(number) * scale)


@dataclass(frozen=True, slots=True)
class Duration:
    """A length of time, kept in whole milliseconds."""

    ms: int

    @property
    def seconds(self) -> float:
        """The duration in seconds."""
        return self.ms / 1000

    def __str__(self) -> str:
        for unit, scale in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
            if self.ms and self.ms % scale == 0:
                return f"{self.ms // scale}{unit}"
        return f"{self.ms}ms"


def _to_duration(value: Any) -> Duration:
    if isinstance(value, Duration):
        return value
    return Duration(parse_duration_ms(value))


DurationField = Annotated[Duration, BeforeValidator(_to_duration), PlainSerializer(str, return_type=str)]
"""A pydantic field type for durations."""


#: A rate's period takes the same units as a duration ("100/minute", "5/10s").
_RATE_PERIODS_MS = _DURATION_UNITS_MS

_RATE_RE = re.compile(r"^\s*(\d+)\s*(?:/|per)\s*(\d+)?\s*([a-z]+)\s*$")


@dataclass(frozen=True, slots=True)
class Rate:
    """``limit`` requests per ``period_ms`` milliseconds, parsed from ``100/minute`` or ``10/5s``."""

    limit: int
    period_ms: int

    @property
    def period_seconds(self) -> float:
        """The window length in seconds."""
        return self.period_ms / 1000

    def __str__(self) -> str:
        for unit, scale in (
            ("day", 86_400_000),
            ("hour", 3_600_000),
            ("minute", 60_000),
            ("second", 1000),
        ):
            if self.period_ms == scale:
                return f"{self.limit}/{unit}"
        return f"{self.limit}/{self.period_ms}ms"


def parse_rate(value: object) -> Rate:
    """Parse ``100/minute``, ``5/min``, ``1000/s``, ``10/5s`` or ``2 per second``."""
    if isinstance(value, Rate):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a rate such as 100/minute or 10/5s, got {type(value).__name__}")
    match = _RATE_RE.match(value.lower())
    if match is None:
        raise ValueError(f"{value!r} is not a rate; write it like 100/minute, 5/min, 1000/s or 10/5s")
    limit_s, multiplier_s, unit = match.groups()
    scale = _RATE_PERIODS_MS.get(unit)
    if scale is None:
        raise ValueError(f"{value!r} has an unknown period {unit!r}; use s, min, hour or day")
    limit = int(limit_s)
    multiplier = int(multiplier_s) if multiplier_s else 1
    if limit < 1:
        raise ValueError(f"{value!r} allows no requests; the limit must be at least 1")
    if multiplier < 1:
        raise ValueError(f"{value!r} has an empty period")
    return Rate(limit, scale * multiplier)


RateField = Annotated[Rate, BeforeValidator(parse_rate), PlainSerializer(str, return_type=str)]
"""A pydantic field type for rates."""


_SIZE_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "k": 1024,
    "m": 1024**2,
}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([a-z]*)\s*$")


def parse_byte_size(value: object) -> int:
    """Parse ``1048576``, ``64KiB``, ``1MiB`` or ``10MB`` into a number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size in bytes such as 1048576 or 1MiB, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a size cannot be negative")
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a size in bytes such as 1048576 or 1MiB, got {type(value).__name__}")
    match = _SIZE_RE.match(value.lower())
    if match is None or match.group(2) not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size; write it like 1048576, 64KiB or 1MiB")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2)]


ByteSize = Annotated[int, BeforeValidator(parse_byte_size)]
"""A pydantic field type for sizes in bytes."""
