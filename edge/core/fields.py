"""One parser for every typed config (export, fine-tune, benchmark): dataclass fields in, checked values out.

In:  a frozen dataclass whose fields carry their type and, in `field(metadata=...)`, what a type cannot say:
       help      one line, for the CLI's --help and docs/configs.md
       min, max  an inclusive range for int and float fields (`min_exclusive=True`: the minimum itself is refused)
       required  the message for a field without a default that the mapping leaves out
       check     `check(value, key, problems) -> value` for a field whose rule is not a type's (a file that must exist)
     and a YAML-shaped mapping of its keys (nested dataclasses are nested mappings).
Out: `parse_fields` -> {field: value}, with every problem appended to `problems` as one line
     ("rotation.steps: -1 is less than 0", "unknown key 'quantization.bogus'") instead of raised, so a
     config reports all its problems together; a bad value becomes None. `to_plain` goes the other way.

Types understood: bool, int, float, str, Path, enums, `X | None`, `tuple[X, ...]` (a YAML list or a single
value; for enums also "a,b"), nested dataclasses (a mapping; `D | None` stays None when absent), and Any.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from pathlib import Path
from typing import Any

Problems = list[str]


def field_types(cls: type) -> dict[str, Any]:
    """Dataclass -> {field name: resolved type} (annotations are strings under `from __future__ import annotations`)."""
    return typing.get_type_hints(cls)


def parse_fields(cls: type, raw: Any, problems: Problems, *, prefix: str = "") -> dict[str, Any]:
    """A mapping of `cls`'s keys -> {field: checked value or None}; unknown keys and bad values go to `problems`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{prefix.rstrip('.')}: expected a mapping")
        raw = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    problems.extend(f"unknown key {prefix + key!r}" for key in sorted(set(raw) - set(fields), key=str))
    hints = field_types(cls)
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        if name in raw:
            out[name] = parse_value(hints[name], raw[name], key, problems, f.metadata)
        elif f.default is not dataclasses.MISSING:
            out[name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[name] = f.default_factory()
        else:
            problems.append(f.metadata.get("required", f"{key}: missing"))
            out[name] = None
    return out


def parse_value(
    kind: Any, value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any] = types.MappingProxyType({})
) -> Any:
    """One value against its field type (and metadata) -> the checked value, or None with a problem appended."""
    if "check" in meta:
        return meta["check"](value, key, problems)
    optional, kind = _unwrap_optional(kind)
    if value is None and optional:
        return None
    if kind is Any:
        return value
    if (cls := _dataclass_of(kind)) is not None:
        values = parse_fields(cls, value, problems, prefix=key + ".")
        return _build(cls, values)
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        items = _as_list(value, split=isinstance(item, type) and issubclass(item, enum.Enum))
        return tuple(parse_value(item, v, key, problems, meta) for v in items)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return enum_value(kind, value, key, problems)
    check = _SCALARS.get(kind)
    if check is None:
        raise TypeError(f"{key}: no parser for field type {kind!r}")
    return check(value, key, problems, meta)


def _unwrap_optional(kind: Any) -> tuple[bool, Any]:
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        if len(args) == 1:
            return True, args[0]
    return False, kind


def _dataclass_of(kind: Any) -> type | None:
    kind = _unwrap_optional(kind)[1]
    return kind if isinstance(kind, type) and dataclasses.is_dataclass(kind) else None


def _build(cls: type, values: dict[str, Any]) -> Any:
    """Checked values -> cls(**values); None where a value failed (the caller raises before using it)."""
    try:
        return cls(**values)
    except (TypeError, ValueError):
        return None


def _as_list(value: Any, *, split: bool) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if split and isinstance(value, str):
        return [v.strip() for v in value.split(",")]
    return [value]


def enum_value(cls: type[enum.Enum], value: Any, key: str, problems: Problems) -> Any:
    if isinstance(value, cls):
        return value
    try:
        return cls(value)
    except ValueError:
        problems.append(f"{key}: {value!r} is not one of {', '.join(m.value for m in cls)}")
        return None


def _int(value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append(f"{key}: {value!r} is not an integer")
        return None
    return value if _in_range(value, key, problems, meta) else None


def _float(value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        problems.append(f"{key}: {value!r} is not a number")
        return None
    return float(value) if _in_range(value, key, problems, meta) else None


def _in_range(value: float, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> bool:
    lo, hi = meta.get("min", -math.inf), meta.get("max", math.inf)
    if math.isfinite(hi) and not lo <= value <= hi:
        problems.append(f"{key}: {value} is outside [{lo}, {hi}]")
        return False
    if meta.get("min_exclusive") and value <= lo:
        problems.append(f"{key}: {value} is not more than {lo}")
        return False
    if value < lo:
        problems.append(f"{key}: {value} is less than {lo}")
        return False
    return True


def _bool(value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> bool | None:
    if not isinstance(value, bool):
        problems.append(f"{key}: {value!r} is not true or false")
        return None
    return value


def _str(value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> str | None:
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value):
        problems.append(f"{key}: {value!r} is not a string")
        return None
    return str(value)


def _path(value: Any, key: str, problems: Problems, meta: typing.Mapping[str, Any]) -> Path | None:
    if not isinstance(value, (str, Path)) or not str(value):
        problems.append(f"{key}: {value!r} is not a path")
        return None
    return Path(value)


_SCALARS = {int: _int, float: _float, bool: _bool, str: _str, Path: _path}


def to_plain(value: Any) -> Any:
    """A config value (enums, paths, dataclasses, nested dicts/tuples) -> the YAML-shaped plain value."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


def field_help(cls: type, name: str) -> str:
    """The `help` metadata of one field ("" when it has none)."""
    return next((f.metadata.get("help", "") for f in dataclasses.fields(cls) if f.name == name), "")


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = dataclasses.MISSING, **meta: Any) -> Any:
    """A dataclass field with its help line and checks in metadata: `x: int = option(8, help="...", min=1)`."""
    return dataclasses.field(default=default, default_factory=factory, metadata={"help": help, **meta})
