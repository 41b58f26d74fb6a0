"""AWS Device Farm: the same measurement on every phone of a device pool, then the same tables.

`python -m android_bench.farm package --runner llama_main --pte X.pte [bench flags] --out DIR`
    DIR/test_package/   android_bench, the edge modules it imports (found by reading its imports), the runner, each .pte
                        with its tokenizer and manifest.json, bench.yaml (the flags, paths
                        relative to it), requirements.txt
    DIR/testspec.yml    a custom test spec: on the farm's host, for the phone it is given
                        ($DEVICEFARM_DEVICE_UDID), run `python3 -m android_bench --config
                        bench.yaml --serial $DEVICEFARM_DEVICE_UDID --output
                        $DEVICEFARM_LOG_DIR/bench`, the very harness used at a desk (over adb)
`python -m android_bench.farm merge A/bench.jsonl B/bench.jsonl ... [--format md] [--output STEM]`
    the per-phone records (the jobs' artifacts) -> the same tables, phones side by side.
Bad input is one `error:` line and exit status 2.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import re
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from android_bench.config import FIELDS, BenchError, OutputFormat, Target
from android_bench.model_specs import choose_baseline
from android_bench.records import RunRecord, make_result

REQUIREMENTS = "pyyaml\ntokenizers\ntiktoken\n"
DEVICE_KEYS = (
    "device_model",
    "manufacturer",
    "soc",
    "hardware",
    "os_version",
    "sdk",
    "abi",
    "n_cores",
    "cpu_max_freq_mhz",
    "mem_total_gb",
)
# Keys that name files or this machine: the package sets them itself.
NOT_PASSED = {"pte", "runner", "tokenizer", "label", "serial", "target", "output", "format", "quiet"}


def test_spec() -> str:
    """The Device Farm custom test spec (version 0.1: install, pre_test, test, post_test, artifacts)."""
    return """\
version: 0.1
phases:
  install:
    commands:
      - cd "$DEVICEFARM_TEST_PACKAGE_PATH"
      - python3 -m pip install --user -r requirements.txt
  pre_test:
    commands:
      - adb -s "$DEVICEFARM_DEVICE_UDID" wait-for-device
  test:
    commands:
      - cd "$DEVICEFARM_TEST_PACKAGE_PATH"
      - python3 -m android_bench --config bench.yaml --serial "$DEVICEFARM_DEVICE_UDID" \
--output "$DEVICEFARM_LOG_DIR/bench" --quiet
  post_test:
    commands:
      - ls "$DEVICEFARM_LOG_DIR"
artifacts:
  - $DEVICEFARM_LOG_DIR
"""


def imported_modules(source: Path, *, package: str, module: str = "") -> set[str]:
    """A Python file (named `module`, for its relative imports) -> the names of the `package` modules it imports, at
    the top or inside functions (`from edge.core import io` names edge.core.io where that is a module, and
    edge.core)."""
    tree = ast.parse(source.read_text(), filename=str(source))
    here = module.split(".") if source.name == "__init__.py" else module.split(".")[:-1]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(here[: len(here) - node.level + 1] + [node.module or ""]).strip(".")
            else:
                base = node.module
            names.add(base or "")
            names.update(f"{base}.{a.name}" for a in node.names)
    return {n for n in names if n == package or n.startswith(package + ".")}


def module_file(name: str, root: Path) -> Path | None:
    """edge.core.io -> root/core/io.py (a package: its __init__.py), root being edge's folder; None if there is
    no such module."""
    rel = Path(*name.split(".")[1:])
    candidates = [root / rel / "__init__.py", *([root / rel.with_suffix(".py")] if rel.parts else [])]
    return next((path for path in candidates if path.is_file()), None)


def edge_root() -> Path:
    """-> the folder of the importable edge package (BenchError when there is none)."""
    spec = importlib.util.find_spec("edge")
    if spec is None or not spec.submodule_search_locations:
        raise BenchError("the edge package is not importable here: cannot package the edge modules android_bench uses")
    return Path(list(spec.submodule_search_locations)[0])


def edge_sources(sources: Iterable[Path]) -> list[Path]:
    """Python files -> every file of the installed edge package they import, directly or through each other,
    with the __init__.py of each package on the way (what `import edge.core.io` runs)."""
    root = edge_root()
    found: set[Path] = set()
    todo = [name for source in sources for name in imported_modules(source, package="edge")]
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for path in (module_file(".".join(parts[:i]), root) for i in range(1, len(parts) + 1)):
            if path is not None and path not in found:
                found.add(path)
                module = ".".join(["edge", *path.relative_to(root).with_suffix("").parts])
                todo += imported_modules(path, package="edge", module=module.removesuffix(".__init__"))
    return sorted(found)


def copy_sources(pkg: Path) -> list[Path]:
    """android_bench and the edge modules it imports -> copies under `pkg` (returns the edge files copied there)."""
    here = Path(__file__).resolve().parent
    shutil.copytree(here, pkg / "android_bench", ignore=shutil.ignore_patterns("__pycache__"))
    root = edge_root()
    copied = []
    for source in edge_sources(sorted(here.glob("*.py"))):
        target = pkg / "edge" / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        copied.append(target)
    return copied


def package(*, argv: list[str], out: Path) -> Path:
    """Bench flags (as `python -m android_bench` takes them) -> the test package and spec in `out`."""
    from android_bench.__main__ import build_parser, overrides_from_args
    from android_bench.config import load_bench_config
    from android_bench.model_specs import describe_models

    ns = build_parser().parse_args(argv)
    config = load_bench_config(config=ns.config, overrides=overrides_from_args(ns))
    if config.target is not Target.ANDROID or config.serial:
        raise BenchError("a farm package measures the farm's phones: leave out --host and --serial")
    if out.exists() and any(out.iterdir()):
        raise BenchError(f"{out} is not empty: choose a new folder")
    models = describe_models(config)
    pkg = out / "test_package"
    copy_sources(pkg)
    if config.runner is None:
        raise BenchError("a farm package needs --runner (llama_main built for arm64-v8a)")
    shutil.copyfile(config.runner, pkg / config.runner.name)
    ptes, labels, tokenizers = [], [], []
    for i, m in enumerate(models):
        folder = pkg / "models" / f"{i}_{re.sub(r'[^A-Za-z0-9._-]+', '_', m.label)}"
        folder.mkdir(parents=True)
        for path in (m.pte, m.tokenizer, m.pte.parent / "manifest.json"):
            if path.is_file():
                shutil.copyfile(path, folder / path.name)
        ptes.append(f"{folder.relative_to(pkg)}/{m.pte.name}")
        tokenizers.append(f"{folder.relative_to(pkg)}/{m.tokenizer.name}")
        labels.append(m.label)
    settings: dict[str, Any] = {
        k: v
        for k, v in config.to_dict().items()
        if k not in NOT_PASSED
        and v != FIELDS[k].default
        and not (isinstance(v, list) and tuple(v) == FIELDS[k].default)
    }
    bench = {"runner": config.runner.name, "pte": ptes, "label": labels, **settings}
    if config.tokenizer is not None:
        bench["tokenizer"] = tokenizers[0]
    import yaml

    (pkg / "bench.yaml").write_text(yaml.safe_dump(bench, sort_keys=False))
    (pkg / "requirements.txt").write_text(REQUIREMENTS)
    (out / "testspec.yml").write_text(test_spec())
    return pkg


def read_records(paths: list[Path]) -> list[RunRecord]:
    """bench.jsonl files -> their records (BenchError naming a missing or broken file)."""
    known = {f.name for f in dataclasses.fields(RunRecord)}
    out = []
    for path in paths:
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as e:
            raise BenchError(f"cannot read {path}: {e.strerror}") from None
        for n, line in enumerate(lines, 1):
            try:
                data = json.loads(line)
                out.append(RunRecord(**{k: v for k, v in data.items() if k in known}))
            except (json.JSONDecodeError, TypeError) as e:
                raise BenchError(f"{path}:{n}: not a bench record ({e})") from None
    return out


def merge(*, paths: list[Path], baseline: str | None):
    """Several phones' records -> one BenchResult (device facts taken from the records)."""
    records = read_records(paths)
    if not records:
        raise BenchError("no records in " + ", ".join(str(p) for p in paths))
    baseline = choose_baseline(baseline, [(r.label, r.scheme) for r in records])
    devices = {}
    for r in records:
        facts = {k: getattr(r, k) for k in DEVICE_KEYS}
        devices[r.target_id] = {**facts, "model": facts.pop("device_model")}
    faults = list(dict.fromkeys(f"{r.target_id} · {r.label}: {r.error}" for r in records if not r.ok))
    measured = [r.run_index for r in records if r.phase == "measured"]
    config = {"repetitions": max(measured, default=0), "threads": records[0].threads}
    return make_result(
        records=records,
        baseline=baseline,
        faults=faults,
        started=min(r.timestamp for r in records),
        config=config,
        devices=devices,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m android_bench.farm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("package", help="write the test package and spec for AWS Device Farm")
    pk.add_argument("--out", type=Path, required=True, help="an empty or new folder")
    mg = sub.add_parser("merge", help="turn the phones' bench.jsonl artifacts into the tables")
    mg.add_argument("jsonl", nargs="+", type=Path)
    mg.add_argument("--baseline")
    mg.add_argument("--format", choices=[x.value for x in OutputFormat], default=OutputFormat.MARKDOWN.value)
    mg.add_argument("--output", type=Path, help="write STEM.md, STEM.csv, STEM.jsonl, STEM.json")
    ns, rest = p.parse_known_args(argv)
    from edge.core.errors import EdgeError

    try:
        if ns.command == "package":
            pkg = package(argv=rest, out=ns.out)
            print(f"wrote {pkg} and {ns.out / 'testspec.yml'}", file=sys.stderr)
            return 0
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        from android_bench.report import render, write_all

        result = merge(paths=ns.jsonl, baseline=ns.baseline)
        if ns.output is not None:
            write_all(result, ns.output)
        sys.stdout.write(render(result, OutputFormat(ns.format)))
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for fault in result.faults:
        print(f"error: {fault}", file=sys.stderr)
    return 2 if result.faults else 0


if __name__ == "__main__":
    sys.exit(main())
