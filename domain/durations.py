"""Human durations for playbooks: ``30s``, ``15m``, ``2h``, ``1d``, ``1w``, and compounds
such as ``1h30m``."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Annotated, Any

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+)([smhdw])")
DURATION_PATTERN = r"^(\d+[smhdw])+$"
_FULL = re.compile(DURATION_PATTERN)
MAX_SECONDS = 3650 * 86400  # far beyond any crisis, and well inside Temporal's timer range


def parse_duration(value: Any) -> timedelta:
    """Parse ``15m``-style text (or pass a timedelta through); raise ValueError otherwise."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, str):
        text = value.strip()
        if not _FULL.match(text):
            raise ValueError(
                f"invalid duration {value!r}: use a number and a unit, e.g. 30s, 15m, 2h, 1d, 1w"
            )
        seconds = sum(int(n) * _UNITS[u] for n, u in _PART.findall(text))
    else:
        raise ValueError(f"invalid duration {value!r}: expected text such as 15m, 2h or 1d")
    if seconds <= 0:
        raise ValueError(f"invalid duration {value!r}: must be greater than zero")
    if seconds > MAX_SECONDS:
        raise ValueError(f"invalid duration {value!r}: must be at most 3650d (10 years)")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest text that `parse_duration` reads back to the same value."""
    seconds = int(value.total_seconds())
    parts = []
    for unit in ("w", "d", "h", "m", "s"):
        size = _UNITS[unit]
        if seconds >= size:
            count, seconds = divmod(seconds, size)
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str),
    WithJsonSchema(
        {"type": "string", "pattern": DURATION_PATTERN, "examples": ["15m", "2h", "1d"]}),
]
