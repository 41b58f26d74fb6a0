"""`python -m android_bench [--host | --serial S ...] --pte X.pte [--pte Y.pte] [flags]`

In:  flags, each one field of `android_bench.config.BenchConfig` (`--max-new-tokens` is
     `max_new_tokens`), and optionally `--config bench.yaml` with the same keys (flags win).
     Phone:  --runner llama_main (arm64-v8a) and --pte; --serial picks devices (repeatable;
             default $ANDROID_SERIAL, else the only device attached).
     Host:   --host --pte X.pte --tokenizer T is enough.
Out: the table (markdown by default, `--format`) on stdout; progress on stderr; with
     `--output STEM`, STEM.md, STEM.csv, STEM.jsonl and STEM.json (atomic writes).
     Exit 0 when every configuration measured; exit 2 with one `error:` line per fault
     otherwise (bad input, no adb, no device, push failure, runner crash, unreadable output,
     disconnect), after writing whatever was measured. Ctrl-C kills the runner on the phone and
     exits 130, also after writing. `python -m android_bench.farm` runs the same on AWS Device Farm.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from pathlib import Path
from typing import Any

from android_bench.config import FIELDS, BenchConfig, Target
from edge.core.cli import add_field_flag, overrides_from_namespace, run_cli
from edge.core.fields import field_types

GROUPS = ("where", "what", "how", "output")  # the --help sections, named by each field's `group` metadata
ALIASES = {"pte": ("--model",)}  # more flags for a field


def build_parser() -> argparse.ArgumentParser:
    """-> the parser: --config, then one flag per BenchConfig field (`max_new_tokens` is --max-new-tokens), in
    sections by the field's `group`; tuple fields are repeatable flags; --host is --target host."""
    p = argparse.ArgumentParser(
        prog="python -m android_bench",
        description="Benchmark ExecuTorch .pte files on Android phones over adb, or on this machine (--host).",
    )
    p.add_argument("--config", type=Path, help="YAML file with any of the keys below (flags override it)")
    hints = field_types(BenchConfig)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for f in dataclasses.fields(BenchConfig):
        group, kind, help = groups[f.metadata["group"]], hints[f.name], f.metadata["help"]
        add_field_flag(
            group,
            f"--{f.name.replace('_', '-')}",
            dest=f.name,
            kind=kind,
            default=f.default,
            key=f.name,
            help=help,
            repeat=typing.get_origin(kind) is tuple,
            aliases=ALIASES.get(f.name, ()),
        )
        if f.name == "target":
            group.add_argument(
                "--host", dest="target", action="store_const", const=Target.HOST.value, help="same as --target host"
            )
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict[str, Any]:
    """Parsed flags -> the config keys they set (unset flags set nothing)."""
    return overrides_from_namespace(ns, FIELDS)


def bench(ns: argparse.Namespace) -> int:
    """Parsed flags -> the session's exit status: 0, 2 with one `error:` line per fault, 130 after Ctrl-C (what was
    measured is written first). Bad input before the session raises EdgeError; Ctrl-C before it, KeyboardInterrupt."""
    from android_bench.bench import Session
    from android_bench.config import load_bench_config
    from android_bench.model_specs import describe_models, pick_baseline
    from android_bench.report import render, write_all
    from android_bench.targets import make_targets
    from edge.core.progress import Progress

    session = baseline = None
    targets: list = []
    config: BenchConfig = load_bench_config(config=ns.config, overrides=overrides_from_args(ns))
    progress = Progress(quiet=config.quiet)
    try:
        models = describe_models(config)
        baseline = pick_baseline(config, models)
        targets = make_targets(config)
        session = Session(config=config, models=models, progress=progress)
        session.run(targets)
    except KeyboardInterrupt:
        if session is None:
            raise
        session.faults.append("interrupted")
    except Exception:
        # A bug, not a fault: keep what was measured, then let the traceback show.
        if session is not None and session.records and config.output is not None:
            write_all(session.result(baseline=baseline), config.output)
        raise
    finally:
        for target in targets:
            target.close()
        if session is not None:
            session.close()
    result = session.result(baseline=baseline)
    if config.output is not None:
        try:
            paths = write_all(result, config.output)
        except OSError as e:
            print(f"error: cannot write {config.output}.*: {e.strerror}", file=sys.stderr)
            return 2
        progress.info("wrote " + ", ".join(str(p) for p in paths))
    sys.stdout.write(render(result, config.format))
    sys.stdout.flush()
    for fault in result.faults:
        print(f"error: {fault}", file=sys.stderr)
    if "interrupted" in result.faults:
        return 130
    return 2 if result.faults else 0


def main(argv: list[str] | None = None) -> int:
    """argv -> exit status (see the module's docstring).

    Not edge's `prologue()`: it imports torch, which a phone benchmark (and a Device Farm host) does not need, and
    its signal handlers mark the process interrupted, after which edge.core.io refuses the atomic writes of what
    was measured before Ctrl-C. Ctrl-C is Python's own KeyboardInterrupt here."""
    ns = build_parser().parse_args(argv)
    return run_cli(lambda: bench(ns), interrupted="interrupted; nothing was measured")


if __name__ == "__main__":
    sys.exit(main())
