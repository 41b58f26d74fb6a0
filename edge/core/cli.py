"""The one CLI layer every entry point uses: prologue, flags generated from config fields, and the epilogue.

In:  a config dataclass (its fields' types and `help` metadata, `edge.core.fields`) for the flags; the
     entry point's work as a function for `run_cli`.
Out: `prologue()` (dependency noise off, SIGTERM as Ctrl-C), `add_config_flags` / `overrides_from_namespace`
     (one flag per field, with the field's name: `rotation.learning_rate` is `--rotation-learning-rate`),
     `run_cli` (EdgeError -> one `error:` line and its exit status, Ctrl-C -> 130, out of memory -> 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.core.errors import EdgeError, interrupt_on_termination, interrupts_win
from edge.core.fields import field_types

SEP = "__"  # dest "rotation__learning_rate" -> overrides {"rotation": {"learning_rate": ...}}


def prologue() -> None:
    """Run first in every entry point: libraries' import-time noise off, SIGTERM handled like Ctrl-C."""
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    interrupt_on_termination()


def add_field_flag(
    group,
    flag: str,
    *,
    dest: str,
    kind: Any,
    default: Any,
    key: str,
    help: str = "",
    repeat: bool = False,
    aliases: tuple[str, ...] = (),
) -> argparse.Action:
    """One config field -> one flag whose parsing follows the field's type (bool, enum, tuple, int, float, path, text).

    Tuple fields take "A,B" (enums, names), or with `repeat` one flag per item (`--pte A --pte B`)."""
    flags = (flag, *aliases)
    if typing.get_origin(kind) is not tuple:
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)
    lead = f"{help} " if help else ""
    if kind is bool:
        return group.add_argument(
            *flags,
            dest=dest,
            action=argparse.BooleanOptionalAction,
            default=None,
            help=f"{lead}({key}, default {str(default).lower()})",
        )
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return group.add_argument(
            *flags,
            dest=dest,
            choices=[m.value for m in kind],
            help=f"{lead}({key}, default {getattr(default, 'value', default)})",
        )
    if typing.get_origin(kind) is tuple:
        item = typing.get_args(kind)[0]
        if default is dataclasses.MISSING:
            shown = "required"
        else:
            shown = ",".join(m.value if isinstance(m, enum.Enum) else str(m) for m in (default or ())) or "none"
        if repeat:
            return group.add_argument(
                *flags,
                dest=dest,
                action="append",
                type=_PARSE.get(item, str),
                metavar=_METAVAR.get(item, "TEXT"),
                help=f"{lead}(repeatable; {key}, default {shown})",
            )
        return group.add_argument(*flags, dest=dest, metavar="A,B", help=f"{lead}({key}, default {shown})")
    return group.add_argument(
        *flags,
        dest=dest,
        type=_PARSE.get(kind, str),
        metavar=_METAVAR.get(kind, "TEXT"),
        help=f"{lead}({key}, default {default})",
    )


_PARSE = {int: int, float: float}
_METAVAR = {int: "N", float: "X", Path: "PATH", str: "TEXT"}


def add_config_flags(
    parser,
    cls: type,
    *,
    key: str = "",
    flag_prefix: str = "",
    rename: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """Every scalar field of dataclass `cls` -> one flag (`--{flag_prefix}{name}`), dest `key__name`; nested
    dataclasses and the fields in `skip` are left out. `rename` maps a field to another flag where two would clash."""
    hints = field_types(cls)
    default = (
        cls()
        if all(
            f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
            for f in dataclasses.fields(cls)
        )
        else None
    )
    for f in dataclasses.fields(cls):
        optional_cls = next((a for a in typing.get_args(hints[f.name]) if dataclasses.is_dataclass(a)), None)
        if f.name in skip or dataclasses.is_dataclass(hints[f.name]) or optional_cls is not None:
            continue
        flag = (rename or {}).get(f.name) or f"--{flag_prefix}{f.name}".replace("_", "-")
        value = getattr(default, f.name) if default is not None else f.default
        add_field_flag(
            parser,
            flag,
            dest=f"{key}{SEP}{f.name}" if key else f.name,
            kind=hints[f.name],
            default=None if value is dataclasses.MISSING else value,
            key=f"{key.replace(SEP, '.')}.{f.name}" if key else f.name,
            help=f.metadata.get("help", ""),
        )


def overrides_from_namespace(ns: argparse.Namespace, dests: typing.Iterable[str]) -> dict[str, Any]:
    """Parsed flags -> the config keys they set (unset flags set nothing), nested by the `__` in each dest."""
    out: dict[str, Any] = {}
    for dest in dests:
        value = getattr(ns, dest, None)
        if value is None:
            continue
        *path, name = dest.split(SEP)
        node = out
        for part in path:
            node = node.setdefault(part, {})
        node[name] = str(value) if isinstance(value, Path) else value
    return out


def config_dests(parser: argparse.ArgumentParser) -> list[str]:
    """The dests of a parser's config flags (those add_config_flags made, and any other that names a field)."""
    return [a.dest for a in parser._actions if a.option_strings and a.dest not in ("help", "config_flag", "quiet")]


def config_name(parser: argparse.ArgumentParser, ns: argparse.Namespace, default: str) -> str:
    """The positional CONFIG or --config FILE (one of them, or the same twice) -> the config to load."""
    if ns.config and ns.config_flag and ns.config != ns.config_flag:
        parser.error("give the config once: positionally or with --config")
    return ns.config or ns.config_flag or default


def run_cli(
    work: Callable[[], int], *, interrupted: str = "interrupted; nothing was written", out_of_memory: str | None = None
) -> int:
    """Run an entry point's work -> its exit status: what `work` returns, EdgeError's own status (2 for bad input)
    with one `error:` line, 130 on Ctrl-C or SIGTERM, 1 when out of memory (`out_of_memory`: the message, whose
    `{where}` becomes " on the GPU" for torch's CUDA error)."""
    try:
        with interrupts_win():
            return work()
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"error: {interrupted}", file=sys.stderr)
        return 130
    except (MemoryError, RuntimeError) as e:
        on_gpu = type(e).__name__ == "OutOfMemoryError"  # torch.OutOfMemoryError, a RuntimeError
        if out_of_memory is None or not (on_gpu or isinstance(e, MemoryError)):
            raise
        print(f"error: {out_of_memory.format(where=' on the GPU' if on_gpu else '')}", file=sys.stderr)
        return 1


def plain_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """Python keyword overrides -> YAML-shaped values (paths as strings, sections as nested dicts)."""
    return {
        k: plain_overrides(v) if isinstance(v, dict) else str(v) if isinstance(v, Path) else v
        for k, v in overrides.items()
    }
