"""--host: the same metrics through ExecuTorch's runtime on this machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import types
from importlib import metadata
from pathlib import Path

import pytest

from android_bench import host_runner
from android_bench.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_host_with_no_other_flag(exported):
    """`python -m android_bench --host --pte X.pte --tokenizer T` prints the table on stdout."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "android_bench",
            "--host",
            "--pte",
            str(exported / "model.pte"),
            "--tokenizer",
            str(exported / "tokenizer.json"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "median of 5 runs" in r.stdout and "prompt 64 tokens · 128 new tokens" in r.stdout
    row = next(
        line for line in r.stdout.splitlines() if line.startswith("| tiny_8da4w")
    )  # ⚠: the 128-token context ends the runs early
    cells = [c.strip() for c in row.strip("|").split("|")]
    decode, ttft, prefill, pte_mb, rss = cells[1:]
    assert float(ttft) > 0 and float(prefill) > 0 and (decode == "-" or float(decode) > 0)
    assert float(pte_mb) == pytest.approx((exported / "model.pte").stat().st_size / 2**20, abs=0.01)
    assert float(rss) > 50
    assert r.stderr.count("measured") == 5 and r.stderr.count("warmup 1/1") == 1  # progress on stderr
    assert "Traceback" not in r.stderr


def test_host_records_and_ratios(exported, tmp_path, capsys):
    stem = tmp_path / "host"
    pte = str(exported / "model.pte")
    code = main(
        [
            "--host",
            "--pte",
            pte,
            "--pte",
            pte,
            "--label",
            "base",
            "--label",
            "same",
            "--baseline",
            "base",
            "--warmup",
            "0",
            "--repetitions",
            "2",
            "--prompt-tokens",
            "20",
            "--max-new-tokens",
            "48",
            "--threads",
            "1",
            "--output",
            str(stem),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    recs = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    assert [(r["label"], r["run_index"]) for r in recs] == [("base", 1), ("base", 2), ("same", 1), ("same", 2)]
    for r in recs:
        obs = json.loads(r["observer_json"])
        assert r["target"] == "host" and r["target_id"] == "host" and r["status"] == "ok"
        assert r["prompt_tokens"] == 20 and r["threads"] == 1
        assert r["ttft_s"] == pytest.approx((obs["first_token_ms"] - obs["inference_start_ms"]) / 1000)
        assert r["peak_rss_mb"] > 50 and r["rss_samples"] >= 1
        assert r["os_version"].startswith("Linux") and r["n_cores"] == os.cpu_count()
    # Same .pte twice: its size ratio is exactly 1 (+0.0%), and the baseline row has none.
    assert re.search(r"\| base \(baseline\)( ⚠)? \| [^|]+ \| [^|]+ \| [^|]+ \| [0-9.]+ \| [0-9.]+ \|", out)
    assert re.search(r"\| same( ⚠)? \| .* \| [0-9.]+ \(\+0\.0%\) \| [0-9.]+ \([+-][0-9.]+%\) \|", out)


def test_threads_are_set_through_the_runtimes_private_binding():
    calls = []
    assert host_runner.set_threads(4, types.SimpleNamespace(_unsafe_reset_threadpool=calls.append)) is True
    assert host_runner.set_threads(-1, types.SimpleNamespace(_unsafe_reset_threadpool=calls.append)) is False
    assert calls == [4]


def test_an_executorch_without_the_private_binding_warns_once_and_goes_on(monkeypatch):
    from executorch.extension.pybindings import _C

    monkeypatch.delattr(_C, "_unsafe_reset_threadpool")
    host_runner.warn_no_threadpool_reset.cache_clear()
    try:
        with pytest.warns(RuntimeWarning) as seen:
            assert host_runner.set_threads(2) is False
            assert host_runner.set_threads(3) is False
    finally:
        host_runner.warn_no_threadpool_reset.cache_clear()
    assert len(seen) == 1
    assert f"executorch {metadata.version('executorch')} has no _C._unsafe_reset_threadpool" in str(seen[0].message)
