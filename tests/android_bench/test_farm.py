"""The device-farm path: the package and spec are written, the spec's test commands run against
the stand-in phones exactly as a farm host would run them, and the phones' artifacts merge into
the same tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import yaml

from android_bench.farm import copy_sources
from android_bench.farm import main as farm
from tests.android_bench.conftest import FAKE_LLAMA_MAIN

FLAGS = [
    "--prompt-tokens",
    "8",
    "--max-new-tokens",
    "4",
    "--warmup",
    "0",
    "--repetitions",
    "2",
    "--cooldown-temp-c",
    "45",
]


def run_spec_phase(spec: dict, phase: str, *, env: dict) -> subprocess.CompletedProcess:
    """A phase's commands in one shell, as Device Farm runs them (each command must succeed)."""
    script = "set -e\n" + "\n".join(spec["phases"][phase]["commands"])
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)


def test_package_spec_and_merge(phones, exported, tmp_path, capsys):
    phones.add("A1")
    phones.add(
        "B2",
        like={
            "model": "Phone",
            "props": {"ro.product.model": "Phone", "ro.build.version.release": "13"},
            "cpu_max_khz": [1000000, 2000000],
        },
    )
    out = tmp_path / "farm"
    code = farm(
        [
            "package",
            "--out",
            str(out),
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--pte",
            str(exported / "model.pte"),
            "--label",
            "tiny 8da4w",
            *FLAGS,
        ]
    )
    assert code == 0, capsys.readouterr().err
    pkg = out / "test_package"
    bench = yaml.safe_load((pkg / "bench.yaml").read_text())
    assert bench["runner"] == "fake_llama_main" and bench["label"] == ["tiny 8da4w"]
    assert (
        bench["pte"] == ["models/0_tiny_8da4w/model.pte"]
        and (pkg / bench["pte"][0]).read_bytes() == (exported / "model.pte").read_bytes()
    )
    assert (bench["prompt_tokens"], bench["max_new_tokens"], bench["repetitions"], bench["warmup"]) == ([8], 4, 2, 0)
    assert (pkg / "models/0_tiny_8da4w/tokenizer.json").is_file() and (pkg / "edge/core/io.py").is_file()

    spec = yaml.safe_load((out / "testspec.yml").read_text())
    assert spec["version"] == 0.1 and spec["artifacts"] == ["$DEVICEFARM_LOG_DIR"]
    assert list(spec["phases"]) == ["install", "pre_test", "test", "post_test"]
    assert all(isinstance(c, str) for phase in spec["phases"].values() for c in phase["commands"])

    # The test phase on each phone, from the package's own copy of the harness (cwd = the package).
    artifacts = []
    for serial in ("A1", "B2"):
        logs = tmp_path / f"logs_{serial}"
        logs.mkdir()
        env = dict(
            os.environ,
            DEVICEFARM_DEVICE_UDID=serial,
            DEVICEFARM_TEST_PACKAGE_PATH=str(pkg),
            DEVICEFARM_LOG_DIR=str(logs),
            PYTHONPATH="",
        )
        for phase in ("pre_test", "test", "post_test"):
            r = run_spec_phase(spec, phase, env=env)
            assert r.returncode == 0, (phase, r.stderr[-2000:])
        recs = [json.loads(line) for line in (logs / "bench.jsonl").read_text().splitlines()]
        assert [(r["target_id"], r["label"], r["status"]) for r in recs] == [(serial, "tiny 8da4w", "ok")] * 2
        artifacts.append(logs / "bench.jsonl")
    assert [c["serial"] for c in phones.calls() if c["argv"] == ["wait-for-device"]] == ["A1", "B2"]

    stem = tmp_path / "merged"
    code = farm(["merge", *map(str, artifacts), "--output", str(stem)])
    table, err = capsys.readouterr()
    assert code == 0, err
    assert "| model | Pixel 8 (A1) | Phone (B2) |" in table
    assert "### Phone (B2) · prompt 8 tokens · 4 new tokens · median of 2 runs" in table
    assert len(stem.with_suffix(".jsonl").read_text().splitlines()) == 4


def test_bad_input_is_one_error_line(tmp_path, exported, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    code = farm(
        [
            "package",
            "--out",
            str(tmp_path / "full"),
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--pte",
            str(exported / "model.pte"),
        ]
    )
    assert (code, capsys.readouterr().err) == (2, f"error: {tmp_path / 'full'} is not empty: choose a new folder\n")
    code = farm(
        [
            "package",
            "--out",
            str(tmp_path / "p"),
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--pte",
            str(exported / "model.pte"),
            "--serial",
            "A1",
        ]
    )
    assert (code, capsys.readouterr().err) == (
        2,
        "error: a farm package measures the farm's phones: leave out --host and --serial\n",
    )
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    code = farm(["merge", str(tmp_path / "bad.jsonl")])
    err = capsys.readouterr().err
    assert (
        code == 2 and err.startswith(f"error: {tmp_path / 'bad.jsonl'}:1: not a bench record") and err.count("\n") == 1
    )
    code = farm(["merge", str(tmp_path / "missing.jsonl")])
    assert (code, capsys.readouterr().err) == (
        2,
        f"error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory\n",
    )


# Run in a package's folder: import every android_bench module and every edge module any of them names (also inside
# functions), then print the edge and android_bench modules that were loaded from anywhere but the package.
LOADED_ELSEWHERE = """\
import ast, importlib, sys
from pathlib import Path
pkg = Path.cwd().resolve()
sources = sorted((pkg / "android_bench").glob("*.py"))
for source in sources:
    importlib.import_module("android_bench" + ("" if source.stem == "__init__" else "." + source.stem))
    for node in ast.walk(ast.parse(source.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
        for name in names:
            if name.split(".")[0] == "edge":
                importlib.import_module(name)
for name, module in sorted(sys.modules.items()):
    where = getattr(module, "__file__", None)
    if name.split(".")[0] in ("edge", "android_bench") and (
        where is None or not Path(where).resolve().is_relative_to(pkg)
    ):
        print(name, where)
"""


def loaded_elsewhere(pkg) -> list[str]:
    """-> the modules the package's harness could not load from its own files (or the import error)."""
    r = subprocess.run(
        [sys.executable, "-c", LOADED_ELSEWHERE],
        cwd=pkg,
        env=dict(os.environ, PYTHONPATH=""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    return r.stdout.splitlines() if r.returncode == 0 else [r.stderr.strip().splitlines()[-1]]


def test_the_package_carries_every_edge_module_the_harness_imports(tmp_path):
    pkg = tmp_path / "test_package"
    copied = {p.relative_to(pkg).as_posix() for p in copy_sources(pkg)}
    assert {
        "edge/__init__.py",
        "edge/core/__init__.py",
        "edge/core/errors.py",
        "edge/core/fields.py",
        "edge/core/io.py",
        "edge/core/progress.py",
    } <= copied
    assert not any(
        name.startswith(("edge/quant", "edge/export", "edge/model")) for name in copied
    )  # only what it imports
    assert loaded_elsewhere(pkg) == []
    (pkg / "edge/core/fields.py").unlink()  # as if the packaging had missed a module the harness needs
    assert loaded_elsewhere(pkg) != []
