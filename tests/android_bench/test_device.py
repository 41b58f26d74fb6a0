"""End to end on fake phones: tests/android_bench/fake_adb (first on PATH as `adb`) emulates the
devices, and tests/android_bench/fake_llama_main, pushed as the runner, runs the exported .pte
through ExecuTorch's TextLLMRunner and prints its real PyTorchObserver line."""

from __future__ import annotations

import csv
import json
import re
import shutil
import statistics

import pytest

from android_bench.__main__ import main
from tests.android_bench.conftest import FAKE_LLAMA_MAIN

REMOTE = "/data/local/tmp/edge_bench"


def jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def runner_calls(phones, serial):
    return [
        c["argv"]
        for c in phones.calls()
        if c["serial"] == serial and c["argv"][0] == "shell" and "llama_main --model_path" in c["argv"][-1]
    ]


def pushes(phones, serial):
    return [c["argv"][-1] for c in phones.calls() if c["serial"] == serial and c["argv"][0] == "push"]


def test_two_phones_side_by_side(phones, exported, tmp_path, capsys):
    phones.add("A1", battery_temps_c=[45.0, 41.0, 33.0])  # hot at first: the first run waits to cool down
    phones.add("B2", thermal_status=[0, 0, 0, 2])  # throttled after its first measured run
    stem = tmp_path / "out" / "bench"
    code = main(
        [
            "--serial",
            "A1",
            "--serial",
            "B2",
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--pte",
            str(exported / "model.pte"),
            "--repetitions",
            "2",
            "--prompt-tokens",
            "16",
            "--max-new-tokens",
            "32",
            "--threads",
            "2",
            "--cooldown-temp-c",
            "40",
            "--cooldown-poll-s",
            "0.01",
            "--output",
            str(stem),
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err

    records = jsonl(stem.with_suffix(".jsonl"))
    assert [(r["target_id"], r["phase"], r["run_index"]) for r in records] == [
        ("A1", "warmup", 1),
        ("A1", "measured", 1),
        ("A1", "measured", 2),
        ("B2", "warmup", 1),
        ("B2", "measured", 1),
        ("B2", "measured", 2),
    ]
    for r in records:
        assert r["status"] == "ok" and r["observer_form"] == "current"
        obs = json.loads(r["observer_json"])
        # Metrics are the definitions applied to the runner's own timestamps.
        assert r["ttft_s"] == pytest.approx((obs["first_token_ms"] - obs["inference_start_ms"]) / 1000)
        assert r["model_load_s"] == pytest.approx((obs["model_load_end_ms"] - obs["model_load_start_ms"]) / 1000)
        prefill_ms = obs["prompt_eval_end_ms"] - obs["inference_start_ms"]
        decode_ms = obs["inference_end_ms"] - obs["prompt_eval_end_ms"]
        assert r["prefill_tok_s"] == (pytest.approx(obs["prompt_tokens"] * 1000 / prefill_ms) if prefill_ms else None)
        assert r["decode_tok_s"] == (pytest.approx(obs["generated_tokens"] * 1000 / decode_ms) if decode_ms else None)
        assert r["prompt_tokens"] == 16 and 1 <= r["generated_tokens"] <= 32
        # RSS sampled from /proc/<pid>/status of the runner process (a Python process here).
        assert r["rss_samples"] >= 1 and 50 < r["rss_mb"] <= r["peak_rss_mb"] < 4000
        # Device facts with every record.
        assert (r["device_model"], r["soc"], r["os_version"], r["abi"], r["n_cores"]) == (
            "Pixel 8",
            "Google Tensor G3",
            "Android 14",
            "arm64-v8a",
            9,
        )
        assert r["cpu_max_freq_mhz"] == [1704] * 4 + [2367] * 4 + [2910]
        assert r["threads"] == 2 and r["charging_before"] is False
        assert r["pte_mb"] == pytest.approx((exported / "model.pte").stat().st_size / 2**20)
        assert r["thermal_status_before"] is not None and r["cpu_temp_c_after"] == 43.25
        # Where the runner ran and what memory it had: sampled on the device, per run.
        assert r["runner_threads"] >= 1 and r["cpus_allowed"] and r["cpuset"] is not None
        assert r["mem_avail_mb_before"] > 0 and r["mem_avail_mb_after"] > 0
        assert (r["length_flag"], r["ignore_eos"], r["log_source"]) == ("max_new_tokens", True, "stderr")

    # Cool-down: A1 read 45, 41, then 33 °C before its first run.
    assert records[0]["battery_temp_c_before"] == 33.0 and records[0]["cooldown_timed_out"] is False
    # B2's first measured run ended throttled: a loud warning, on the record and in the table.
    assert any("THROTTLED" in w for w in records[4]["warnings"])
    assert "> ⚠ **WARNING** Pixel 8 (B2) · tiny_8da4w · prompt 16: run 1: THROTTLED" in out
    assert "| tiny_8da4w ⚠ |" in out

    # Tables: one per phone, then side by side.
    assert "### Pixel 8 (A1) · prompt 16 tokens · 32 new tokens · median of 2 runs" in out
    assert "### Pixel 8 (B2) · prompt 16 tokens" in out
    assert "| model | Pixel 8 (A1) | Pixel 8 (B2) |" in out
    assert out == stem.with_suffix(".md").read_text()
    rows = list(csv.DictReader(stem.with_suffix(".csv").open()))
    for row in rows:
        assert row["n_ok"] == "2" and row["n_failed"] == "0"
        for metric in ("ttft_s", "decode_tok_s", "peak_rss_mb"):
            # A rate under the runner's 1 ms clock is None and left out of the summary.
            measured = [
                r[metric]
                for r in records
                if r["target_id"] == row["target_id"] and r["phase"] == "measured" and r[metric] is not None
            ]
            if not measured:
                assert row[f"{metric}_median"] == ""
                continue
            assert float(row[f"{metric}_median"]) == pytest.approx(statistics.median(measured), rel=1e-5)
            assert float(row[f"{metric}_min"]) == pytest.approx(min(measured), rel=1e-5)
            assert float(row[f"{metric}_max"]) == pytest.approx(max(measured), rel=1e-5)
    v3 = json.loads(stem.with_suffix(".json").read_text())
    assert {r["runners"][0]["extra_info"]["serial"] for r in v3} == {"A1", "B2"}

    # The real CLI's way: every runner flag inside the one quoted `adb -s SERIAL shell` argument.
    for serial in ("A1", "B2"):
        calls = runner_calls(phones, serial)
        assert len(calls) == 3
        ids = []
        for argv in calls:
            assert len(argv) == 2
            script = argv[1]
            assert script.startswith(f"cd {REMOTE} || exit 97; ")
            # A 1.4 runner: --prompt_file, --max_new_tokens and --ignore_eos; stdin from /dev/null.
            found = re.search(
                r"; \./llama_main --model_path tiny_8da4w/model\.pte --tokenizer_path tiny_8da4w/tokenizer\.json "
                r"--prompt_file tiny_8da4w/prompt_16\.txt --temperature 0 --max_new_tokens 32 --ignore_eos "
                r"--cpu_threads 2 > run-(\d+-\d+)\.out 2> run-\1\.err < /dev/null & pid=\$!;",
                script,
            )
            assert found, script
            ids.append(found.group(1))
        assert len(set(ids)) == 3  # each run its own output files
        # Each file pushed once, to the work folder under /data/local/tmp.
        assert sorted(pushes(phones, serial)) == sorted(
            [
                f"{REMOTE}/llama_main",
                f"{REMOTE}/tiny_8da4w/model.pte",
                f"{REMOTE}/tiny_8da4w/tokenizer.json",
                f"{REMOTE}/tiny_8da4w/prompt_16.txt",
            ]
        )
        on_device = phones.fs(serial) / REMOTE.lstrip("/") / "tiny_8da4w" / "model.pte"
        assert on_device.read_bytes() == (exported / "model.pte").read_bytes()
        assert len(phones.fs(serial).joinpath(REMOTE.lstrip("/"), "tiny_8da4w", "prompt_16.txt").read_text()) > 0
    assert "A1 · tiny_8da4w · prompt 16 · measured 2/2" in err  # progress on stderr
    assert all(c["stdin_null"] for c in phones.calls())  # adb never reads the user's keystrokes


def test_same_sha256_not_pushed_again_old_runner_form_and_big_cores(phones, exported, tmp_path, capsys, monkeypatch):
    # A two-cluster phone: core 0 little (1.0 GHz), core 1 big (2.0 GHz): --pin-big-cores -> taskset 2, 1 thread.
    phones.add(
        "C3",
        like={
            "model": "Phone",
            "props": {"ro.product.model": "Phone", "ro.build.version.release": "13"},
            "cpu_max_khz": [1000000, 2000000],
        },
    )
    work = phones.fs("C3") / REMOTE.lstrip("/")
    (work / "tiny_8da4w").mkdir(parents=True)
    shutil.copyfile(FAKE_LLAMA_MAIN, work / "llama_main")
    shutil.copyfile(exported / "model.pte", work / "tiny_8da4w" / "model.pte")
    (work / "tiny_8da4w" / "tokenizer.json").write_text("stale")  # different sha256: pushed again
    monkeypatch.setenv("FAKE_LLAMA_MAIN_FORM", "old")  # an ExecuTorch 1.1 llama_main
    monkeypatch.setenv("FAKE_LLAMA_MAIN_RELEASE", "1.1")
    code = main(
        [
            "--runner",
            str(FAKE_LLAMA_MAIN),
            "--pte",
            str(exported / "model.pte"),
            "--warmup",
            "0",
            "--repetitions",
            "1",
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "4",
            "--pin-big-cores",
            "--format",
            "jsonl",
        ]
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert sorted(pushes(phones, "C3")) == [f"{REMOTE}/tiny_8da4w/prompt_8.txt", f"{REMOTE}/tiny_8da4w/tokenizer.json"]
    (script,) = [argv[1] for argv in runner_calls(phones, "C3")]
    assert "; taskset 2 ./llama_main --model_path" in script and "--cpu_threads 1 >" in script
    # 1.1 has --max_new_tokens but neither --prompt_file nor --ignore_eos.
    assert '--prompt "$(cat tiny_8da4w/prompt_8.txt)" --temperature 0 --max_new_tokens 4 --cpu_threads 1 >' in script
    (rec,) = [json.loads(line) for line in out.splitlines()]
    assert rec["cpu_mask"] == "2" and rec["threads"] == 1 and rec["cpus_allowed"] == "1"
    # No CPU part ids in this phone's /proc/cpuinfo: the little cores are a guess, and the record says so.
    assert any("little cores guessed as the slowest clock cluster" in w for w in rec["warnings"])
    assert rec["observer_form"] == "old" and rec["reported_decode_tok_s"] is None
    obs = json.loads(rec["observer_json"])
    assert "prefill_token_per_sec" not in obs
    assert rec["ttft_s"] == pytest.approx((obs["first_token_ms"] - obs["inference_start_ms"]) / 1000)
    assert rec["os_version"] == "Android 13" and rec["n_cores"] == 2 and rec["soc"] is None
