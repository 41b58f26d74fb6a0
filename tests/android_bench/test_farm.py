"""The device-farm path: the package and spec are written, the spec's test commands run against
the stand-in phones exactly as a farm host would run them, and the phones' artifacts merge into
the same tables."""

from __future__ import annotations

import json
import os
import subprocess

import yaml

from android_bench.farm import main as farm
from tests.android_bench.conftest import FAKE_LLAMA_MAIN

FLAGS = ["--prompt-tokens", "8", "--max-new-tokens", "4", "--warmup", "0", "--repetitions", "2", "--cooldown-temp-c", "45"]


def run_spec_phase(spec: dict, phase: str, *, env: dict) -> subprocess.CompletedProcess:
    """A phase's commands in one shell, as Device Farm runs them (each command must succeed)."""
    script = "set -e\n" + "\n".join(spec["phases"][phase]["commands"])
    return subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, timeout=600)


def test_package_spec_and_merge(phones, exported, tmp_path, capsys):
    phones.add("A1")
    phones.add("B2", like={"model": "Phone", "props": {"ro.product.model": "Phone", "ro.build.version.release": "13"},
                           "cpu_max_khz": [1000000, 2000000]})
    out = tmp_path / "farm"
    code = farm(["package", "--out", str(out), "--runner", str(FAKE_LLAMA_MAIN), "--pte", str(exported / "model.pte"),
                 "--label", "tiny 8da4w", *FLAGS])
    assert code == 0, capsys.readouterr().err
    pkg = out / "test_package"
    bench = yaml.safe_load((pkg / "bench.yaml").read_text())
    assert bench["runner"] == "fake_llama_main" and bench["label"] == ["tiny 8da4w"]
    assert bench["pte"] == ["models/0_tiny_8da4w/model.pte"] and (pkg / bench["pte"][0]).read_bytes() == (exported / "model.pte").read_bytes()
    assert (bench["prompt_tokens"], bench["max_new_tokens"], bench["repetitions"], bench["warmup"]) == ([8], 4, 2, 0)
    assert (pkg / "models/0_tiny_8da4w/tokenizer.json").is_file() and (pkg / "edge/io.py").is_file()

    spec = yaml.safe_load((out / "testspec.yml").read_text())
    assert spec["version"] == 0.1 and spec["artifacts"] == ["$DEVICEFARM_LOG_DIR"]
    assert list(spec["phases"]) == ["install", "pre_test", "test", "post_test"]
    assert all(isinstance(c, str) for phase in spec["phases"].values() for c in phase["commands"])

    # The test phase on each phone, from the package's own copy of the harness (cwd = the package).
    artifacts = []
    for serial in ("A1", "B2"):
        logs = tmp_path / f"logs_{serial}"
        logs.mkdir()
        env = dict(os.environ, DEVICEFARM_DEVICE_UDID=serial, DEVICEFARM_TEST_PACKAGE_PATH=str(pkg),
                   DEVICEFARM_LOG_DIR=str(logs), PYTHONPATH="")
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
    code = farm(["package", "--out", str(tmp_path / "full"), "--runner", str(FAKE_LLAMA_MAIN), "--pte", str(exported / "model.pte")])
    assert (code, capsys.readouterr().err) == (2, f"error: {tmp_path / 'full'} is not empty: choose a new folder\n")
    code = farm(["package", "--out", str(tmp_path / "p"), "--runner", str(FAKE_LLAMA_MAIN), "--pte", str(exported / "model.pte"),
                 "--serial", "A1"])
    assert (code, capsys.readouterr().err) == (2, "error: a farm package measures the farm's phones: leave out --host and --serial\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    code = farm(["merge", str(tmp_path / "bad.jsonl")])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: {tmp_path / 'bad.jsonl'}:1: not a bench record") and err.count("\n") == 1
    code = farm(["merge", str(tmp_path / "missing.jsonl")])
    assert (code, capsys.readouterr().err) == (2, f"error: cannot read {tmp_path / 'missing.jsonl'}: No such file or directory\n")
