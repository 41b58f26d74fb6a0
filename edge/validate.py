"""Field checks shared by every typed config (export, benchmark): each appends a one-line
problem instead of raising, so a config reports all its problems together."""

from __future__ import annotations

import enum
from pathlib import Path
from typing import Any


def enum_field(cls: type[enum.Enum], value: Any, key: str, problems: list[str]) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        problems.append(f"{key}: {value!r} is not one of {', '.join(m.value for m in cls)}")
        return None


def int_field(value: Any, key: str, problems: list[str], *, minimum: int) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key}: {value!r} is not an integer")
        return None
    if value < minimum:
        problems.append(f"{key}: {value} is less than {minimum}")
        return None
    return value


def float_field(value: Any, key: str, problems: list[str], *, minimum: float, maximum: float = float("inf")) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        problems.append(f"{key}: {value!r} is not a number")
        return None
    if not minimum <= value <= maximum:
        problems.append(f"{key}: {value} is outside [{minimum}, {maximum}]")
        return None
    return float(value)


def bool_field(value: Any, key: str, problems: list[str]) -> bool | None:
    if not isinstance(value, bool):
        problems.append(f"{key}: {value!r} is not true or false")
        return None
    return value


def to_plain(value: Any) -> Any:
    """A config value (enums, paths, nested dicts/tuples) -> the YAML-shaped plain value."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value
