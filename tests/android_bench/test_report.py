"""Summaries, ratios and the four writers, on records with known numbers.

The numbers are Meta's OnePlus 12 table (Llama 3.2 model card, prompt 64): the ratios the
writers print must be the ones Meta's table prints where its rounding allows (model MiB and RSS MiB
are given to the MB, so their percentages match to the digit).
"""

from __future__ import annotations

import csv
import io
import json

import pytest

from android_bench.config import OutputFormat
from android_bench.records import Metric, RunRecord, baseline_for, make_result, ratio, stat, summarize
from android_bench.report import WRITERS, csv_rows, fmt_ratio, render, v3_rows, write_all
from edge.core.io import write_text_atomic as write_atomic


def record(
    label: str,
    *,
    decode,
    ttft,
    prefill,
    pte_mb,
    rss,
    index=1,
    target_id="R5CX",
    phase="measured",
    ok=True,
    warnings=(),
    **kw,
) -> RunRecord:
    base = dict(
        target="android",
        target_id=target_id,
        label=label,
        scheme="bf16" if "BF16" in label else "8da4w",
        pte=f"/out/{label}.pte",
        pte_sha256="0" * 64,
        pte_mb=pte_mb,
        tokenizer="tokenizer.model",
        runner="llama_main",
        prompt_tokens_requested=64,
        max_new_tokens=128,
        threads=None,
        cpu_mask=None,
        phase=phase,
        run_index=index,
        timestamp="2026-11-22T00:00:00Z",
        device_model="CPH2583",
        manufacturer="OnePlus",
        soc="QTI SM8650",
        hardware="pineapple",
        os_version="Android 14",
        sdk="34",
        abi="arm64-v8a",
        n_cores=8,
        cpu_max_freq_mhz=[2265, 2265, 3148, 3148, 3148, 2956, 2956, 3302],
        mem_total_gb=16.1,
        status="ok" if ok else "failed",
        decode_tok_s=decode,
        ttft_s=ttft,
        prefill_tok_s=prefill,
        peak_rss_mb=rss,
        model_load_s=1.5,
        prompt_tokens=64,
        generated_tokens=127,
        warnings=list(warnings),
    )
    base.update(kw)
    return RunRecord(**base)


# Three runs per row; the middle one is Meta's number, the others bracket it.
CARD = {
    "1B BF16": (19.2, 1.0, 60.3, 2358, 3185),
    "1B SpinQuant": (50.2, 0.3, 260.5, 1083, 1921),
    "1B QLoRA": (45.8, 0.3, 252.0, 1127, 2255),
}


def card_records(target_id="R5CX") -> list[RunRecord]:
    out = []
    for label, (decode, ttft, prefill, pte, rss) in CARD.items():
        for i, f in enumerate((0.9, 1.0, 1.05), start=1):
            out.append(
                record(
                    label,
                    decode=decode * f,
                    ttft=ttft / f,
                    prefill=prefill * f,
                    pte_mb=pte,
                    rss=rss * f,
                    index=i,
                    target_id=target_id,
                )
            )
    return out


def test_stat_median_min_max():
    s = stat([3.0, 1.0, 2.0])
    assert (s.median, s.min, s.max, s.samples) == (2.0, 1.0, 3.0, (3.0, 1.0, 2.0))
    assert stat([4.0, 1.0, 3.0, 2.0]).median == 2.5  # even count: mean of the middle two
    assert stat([]) is None


def test_summary_uses_measured_ok_runs_only():
    recs = [
        record("1B BF16", decode=5.0, ttft=9.0, prefill=1.0, pte_mb=1, rss=1, phase="warmup"),
        record("1B BF16", decode=19.0, ttft=1.0, prefill=60.0, pte_mb=2358, rss=3000, index=1),
        record("1B BF16", decode=20.0, ttft=1.2, prefill=61.0, pte_mb=2358, rss=3100, index=2),
        record(
            "1B BF16",
            decode=None,
            ttft=None,
            prefill=None,
            pte_mb=2358,
            rss=None,
            index=3,
            ok=False,
            error="the runner crashed",
        ),
    ]
    (s,) = summarize(recs, baseline="1B BF16")
    assert (s.n_ok, s.n_failed) == (2, 1)
    assert s.stats[Metric.DECODE].samples == (19.0, 20.0)
    assert s.median(Metric.DECODE) == 19.5
    assert s.stats[Metric.TTFT].min == 1.0 and s.stats[Metric.TTFT].max == 1.2
    assert s.error == "the runner crashed"
    assert s.is_baseline


def test_ratios_against_the_baseline_row():
    summaries = summarize(card_records(), baseline="1B BF16")
    spin = summaries[1]
    base = baseline_for(spin, summaries)
    assert base is not None and base.label == "1B BF16"
    assert ratio(spin, base, Metric.DECODE) == pytest.approx(50.2 / 19.2)
    assert ratio(spin, base, Metric.PTE) == pytest.approx(1083 / 2358)
    assert fmt_ratio(Metric.DECODE, ratio(spin, base, Metric.DECODE)) == "2.6x"
    assert fmt_ratio(Metric.PREFILL, ratio(spin, base, Metric.PREFILL)) == "4.3x"
    assert fmt_ratio(Metric.PTE, ratio(spin, base, Metric.PTE)) == "-54.1%"  # Meta: 1083 (-54.1%)
    assert fmt_ratio(Metric.RSS, ratio(spin, base, Metric.RSS)) == "-39.7%"  # Meta: 1,921 (-39.7%)
    assert fmt_ratio(Metric.TTFT, ratio(spin, base, Metric.TTFT)) == "-70.0%"
    assert fmt_ratio(Metric.RSS, 1.25) == "+25.0%"
    # No baseline on another device: no ratio.
    other = summarize(card_records(target_id="OTHER"), baseline=None)
    assert baseline_for(other[1], other) is None and ratio(other[1], None, Metric.DECODE) is None


def test_markdown_table_in_the_model_card_layout():
    result = make_result(
        records=card_records(),
        baseline="1B BF16",
        faults=[],
        started="T",
        config={"repetitions": 3},
        devices={"R5CX": {"model": "CPH2583"}},
    )
    md = render(result, OutputFormat.MARKDOWN)
    assert "| model | decode tok/s | TTFT s | prefill tok/s | model MiB | RSS MiB |" in md
    assert "| 1B BF16 (baseline) | 19.2 | 1.00 | 60.3 | 2358 | 3185 |" in md
    assert "| 1B SpinQuant | 50.2 (2.6x) | 0.300 (-70.0%) | 260.5 (4.3x) | 1083 (-54.1%) | 1921 (-39.7%) |" in md
    assert "| 1B QLoRA | 45.8 (2.4x) | 0.300 (-70.0%) | 252.0 (4.2x) | 1127 (-52.2%) | 2255 (-29.2%) |" in md
    assert "CPH2583 (R5CX) · prompt 64 tokens · 128 new tokens · median of 3 runs" in md
    # Details: median [min–max] of the three runs.
    assert "17.3–20.2" in md.replace("[", "").replace("]", "")
    assert "WARNING" not in md


def test_loud_warning_for_a_throttled_run_and_a_fault():
    recs = card_records()
    recs[4] = record(
        "1B SpinQuant",
        decode=40.0,
        ttft=0.4,
        prefill=200.0,
        pte_mb=1083,
        rss=1921,
        index=2,
        warnings=["THROTTLED: thermal status 2 after the run (was 0)"],
    )
    result = make_result(
        records=recs,
        baseline="1B BF16",
        faults=["R5CX: device R5CX disconnected (gone)"],
        started="T",
        config={"repetitions": 3},
        devices={},
    )
    md = render(result, OutputFormat.MARKDOWN)
    assert "> ⚠ **WARNING** R5CX · 1B SpinQuant · prompt 64: run 2: THROTTLED" in md
    assert "> ⚠ **WARNING** FAULT: R5CX: device R5CX disconnected (gone)" in md
    assert "| 1B SpinQuant ⚠ |" in md
    row = next(r for r in csv_rows(result) if r["label"] == "1B SpinQuant")
    assert "THROTTLED" in row["warnings"]


def test_side_by_side_with_two_devices():
    recs = card_records("A") + card_records("B")
    result = make_result(
        records=recs,
        baseline="1B BF16",
        faults=[],
        started="T",
        config={"repetitions": 3},
        devices={"A": {"model": "Pixel 8"}, "B": {"model": "CPH2583"}},
    )
    md = render(result, OutputFormat.MARKDOWN)
    assert "| model | Pixel 8 (A) | CPH2583 (B) |" in md
    assert "| 1B SpinQuant | 50.2 / 0.300 / 1921 | 50.2 / 0.300 / 1921 |" in md


def test_csv_row_numbers():
    result = make_result(records=card_records(), baseline="1B BF16", faults=[], started="T", config={}, devices={})
    rows = list(csv.DictReader(io.StringIO(render(result, OutputFormat.CSV))))
    spin = next(r for r in rows if r["label"] == "1B SpinQuant")
    assert float(spin["decode_tok_s_median"]) == pytest.approx(50.2)
    assert float(spin["decode_tok_s_min"]) == pytest.approx(50.2 * 0.9)
    assert float(spin["decode_tok_s_max"]) == pytest.approx(50.2 * 1.05)
    assert float(spin["decode_tok_s_ratio"]) == pytest.approx(50.2 / 19.2, abs=1e-5)
    assert [float(x) for x in spin["decode_tok_s_samples"].split(";")] == pytest.approx([45.18, 50.2, 52.71])
    assert spin["baseline"] == "False" and spin["n_ok"] == "3"


def test_jsonl_is_one_flat_record_per_run():
    recs = card_records()
    result = make_result(records=recs, baseline="1B BF16", faults=[], started="T", config={}, devices={})
    lines = render(result, OutputFormat.JSONL).splitlines()
    assert len(lines) == len(recs) == 9
    first = json.loads(lines[0])
    assert first["label"] == "1B BF16" and first["decode_tok_s"] == pytest.approx(19.2 * 0.9)
    assert all(not isinstance(v, dict) for v in first.values())  # flat
    assert first["soc"] == "QTI SM8650" and first["os_version"] == "Android 14"


def test_v3_rows_follow_the_pytorch_benchmark_schema():
    result = make_result(
        records=card_records(),
        baseline="1B BF16",
        faults=[],
        started="T",
        config={"repetitions": 3},
        devices={"R5CX": {"model": "CPH2583", "os_version": "Android 14", "mem_total_gb": 16.1, "mem_avail_gb": 6.5}},
    )
    rows = v3_rows(result)
    assert len(rows) == 3 * len(Metric)
    for row in rows:
        assert set(row) == {"benchmark", "model", "metric", "runners"}
        assert {"name", "mode", "extra_info"} <= set(row["benchmark"])
        assert {"name", "type", "backend"} <= set(row["model"])
        assert {"name", "benchmark_values", "target_value", "extra_info"} <= set(row["metric"])
        assert {"name", "type", "avail_mem_in_gb", "total_mem_in_gb"} <= set(row["runners"][0])
    ttft = next(r for r in rows if r["model"]["name"] == "1B BF16" and r["metric"]["name"] == "ttft(ms)")
    assert ttft["metric"]["benchmark_values"] == pytest.approx([1000 / 0.9, 1000.0, 1000 / 1.05])
    assert ttft["runners"][0] == {
        "name": "CPH2583",
        "type": "Android 14",
        "avail_mem_in_gb": 6.5,
        "total_mem_in_gb": 16.1,
        "extra_info": {"serial": "R5CX", "soc": None, "abi": None},
    }
    assert json.loads(render(result, OutputFormat.V3_JSON)) == rows


def test_writers_are_interchangeable(tmp_path):
    result = make_result(records=card_records(), baseline="1B BF16", faults=[], started="T", config={}, devices={})
    for fmt, writer in WRITERS.items():
        buf = io.StringIO()
        writer(result, buf)
        assert buf.getvalue() == render(result, fmt) and buf.getvalue()
    paths = write_all(result, tmp_path / "out" / "bench")
    assert sorted(p.name for p in paths) == ["bench.csv", "bench.json", "bench.jsonl", "bench.md"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        p.name for p in paths
    )  # no temporary files left


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    path = tmp_path / "t.md"
    write_atomic(path, "old")

    with pytest.raises(TypeError):
        write_atomic(path, 42)  # type: ignore[arg-type]
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["t.md"]


def test_no_baseline_no_ratios():
    recs = [r for r in card_records() if r.label != "1B BF16"]
    result = make_result(records=recs, baseline=None, faults=[], started="T", config={}, devices={})
    md = render(result, OutputFormat.MARKDOWN)
    assert "ratios are left out" in md
    assert "| 1B SpinQuant | 50.2 | 0.300 | 260.5 | 1083 | 1921 |" in md
