"""Writers: markdown, csv, jsonl and PyTorch benchmark v3 json, all from one `BenchResult`.

In:  `BenchResult` (records, summaries, faults) and a text stream.
Out: `WRITERS[fmt](result, stream)`, interchangeable:
       md     the model card's table per device and prompt length (decode tok/s, TTFT s,
              prefill tok/s, model MiB, RSS MiB), each row with its ratio to the bf16 baseline row
              ("50.2 (2.6x)", "0.3 (-76.9%)"), a side-by-side table when there are several
              devices, a details table (median [min-max], runs), and loud warnings
       csv    one row per configuration: median, min, max, ratio and raw samples of each metric
       jsonl  one flat record per run, warm-ups and failures included (llama-bench's pattern)
       json   PyTorch benchmark v3 rows (benchmark / model / metric / runners) for dashboards
     `write_all(result, stem)` writes stem.md, stem.csv, stem.jsonl and stem.json, each
     atomically (a temporary file beside it, then a rename).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from android_bench import HARNESS_VERSION
from android_bench.config import OutputFormat
from android_bench.records import CARD_METRICS, BenchResult, ConfigSummary, Metric, baseline_for, ratio
from edge.core.io import write_text_atomic

WARN = "⚠"
BACKENDS = {"onnxruntime": "onnxruntime-cpu", "llama.cpp": "ggml-cpu"}  # v3 json backend by runtime (else xnnpack)


def fmt_value(metric: Metric, value: float | None) -> str:
    """A metric value as the tables print it ('-' when missing)."""
    if value is None:
        return "-"
    if metric in (Metric.DECODE, Metric.PREFILL):
        return f"{value:.1f}"
    if metric in (Metric.PTE, Metric.RSS):
        return f"{value:.0f}" if value >= 100 else f"{value:.2f}"
    return f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def fmt_ratio(metric: Metric, r: float | None) -> str:
    """Ratio to the baseline as Meta's table prints it: rates as '2.6x', the rest as '-76.9%'."""
    if r is None:
        return ""
    if metric.higher_is_better:
        return f"{r:.1f}x"
    return f"{(r - 1) * 100:+.1f}%".replace("+-", "-")


def card_cell(s: ConfigSummary, base: ConfigSummary | None, metric: Metric) -> str:
    text = fmt_value(metric, s.median(metric))
    if base is None or s is base or s.median(metric) is None:
        return text
    r = fmt_ratio(metric, ratio(s, base, metric))
    return f"{text} ({r})" if r else text


def _row_label(s: ConfigSummary) -> str:
    label = s.label + (" (baseline)" if s.is_baseline else "")
    if s.warnings or s.n_failed:
        label += f" {WARN}"
    return label


def _device_name(result: BenchResult, target_id: str) -> str:
    facts = result.devices.get(target_id, {})
    model = facts.get("model") or target_id
    return model if target_id in ("host", model) else f"{model} ({target_id})"


def _facts_line(result: BenchResult, target_id: str) -> str:
    """One line of device facts and run settings under a table's heading."""
    f = result.devices.get(target_id, {})
    freqs = sorted({x for x in f.get("cpu_max_freq_mhz") or () if x is not None})
    clocks = f" (max {'/'.join(str(x) for x in freqs)} MHz)" if freqs else ""
    parts = [
        f.get("os_version"),
        f.get("soc") or f.get("hardware"),
        f.get("abi"),
        f"{f['n_cores']} cores{clocks}" if f.get("n_cores") else None,
        f"{f['mem_total_gb']:.1f} GB RAM" if f.get("mem_total_gb") else None,
    ]
    run = next((r for r in result.records if r.target_id == target_id), None)
    if run is not None:
        parts.append(f"runner {run.runner}")
        parts.append(f"threads {run.threads if run.threads is not None else 'runner default'}")
        if run.cpu_mask:
            parts.append(f"taskset {run.cpu_mask}")
        if run.charging_before is not None:
            parts.append("charging" if run.charging_before else "on battery")
    return " · ".join(dict.fromkeys(p for p in parts if p))


def _groups(result: BenchResult) -> dict[tuple[str, int], list[ConfigSummary]]:
    groups: dict[tuple[str, int], list[ConfigSummary]] = {}
    for s in result.summaries:
        groups.setdefault((s.target_id, s.prompt_tokens_requested), []).append(s)
    return groups


def warning_lines(result: BenchResult) -> list[str]:
    """Every fault and every suspect measurement, one line each."""
    lines = [f"FAULT: {f}" for f in result.faults]
    for s in result.summaries:
        where = f"{_device_name(result, s.target_id)} · {s.label} · prompt {s.prompt_tokens_requested}"
        for w in s.warnings:
            lines.append(f"{where}: {w}")
        if s.n_failed and s.error:
            lines.append(f"{where}: {s.n_failed} run(s) failed: {s.error}")
    return lines


def write_markdown(result: BenchResult, stream: TextIO) -> None:
    devices = list(dict.fromkeys(s.target_id for s in result.summaries))
    reps = result.config.get("repetitions")
    stream.write(f"## android_bench results ({result.started})\n\n")
    if result.baseline is None:
        stream.write("No bf16 baseline row (pass --baseline LABEL): ratios are left out.\n\n")
    for line in warning_lines(result):
        stream.write(f"> {WARN} **WARNING** {line}\n")
    if warning_lines(result):
        stream.write("\n")
    for (target_id, n), rows in _groups(result).items():
        new_tokens = rows[0].max_new_tokens
        stream.write(
            f"### {_device_name(result, target_id)} · prompt {n} tokens · {new_tokens} new tokens · "
            f"median of {reps} run{'' if reps == 1 else 's'}\n\n"
        )
        facts = _facts_line(result, target_id)
        if facts:
            stream.write(facts + "\n\n")
        stream.write("| model | " + " | ".join(m.header for m in CARD_METRICS) + " |\n")
        stream.write("|---|" + "---:|" * len(CARD_METRICS) + "\n")
        for s in rows:
            base = baseline_for(s, result.summaries)
            cells = [card_cell(s, base, m) for m in CARD_METRICS]
            stream.write(f"| {_row_label(s)} | " + " | ".join(cells) + " |\n")
        stream.write("\n")
    if len(devices) > 1:
        _write_side_by_side(result, devices, stream)
    _write_details(result, stream)
    stream.write(
        'MiB = 2^20 bytes (the model card\'s "MB" are MiB). Model MiB: the .pte, the ONNX model with its '
        "external data, or the .gguf. RSS is the runner process's peak (VmHWM); on --host it includes the "
        "Python interpreter of the host runners (torch's libraries for ExecuTorch, none for ONNX Runtime).\n"
    )


def _write_side_by_side(result: BenchResult, devices: list[str], stream: TextIO) -> None:
    lengths = list(dict.fromkeys(s.prompt_tokens_requested for s in result.summaries))
    labels = list(dict.fromkeys(s.label for s in result.summaries))
    by_key = {(s.target_id, s.label, s.prompt_tokens_requested): s for s in result.summaries}
    for n in lengths:
        stream.write(f"### Side by side · prompt {n} tokens · decode tok/s / TTFT s / RSS MiB\n\n")
        stream.write("| model | " + " | ".join(_device_name(result, d) for d in devices) + " |\n")
        stream.write("|---|" + "---:|" * len(devices) + "\n")
        for label in labels:
            cells = []
            for d in devices:
                s = by_key.get((d, label, n))
                shown = (Metric.DECODE, Metric.TTFT, Metric.RSS)
                cells.append("-" if s is None else " / ".join(fmt_value(m, s.median(m)) for m in shown))
            stream.write(f"| {label} | " + " | ".join(cells) + " |\n")
        stream.write("\n")


def _range(s: ConfigSummary, m: Metric) -> str:
    st = s.stats.get(m)
    if st is None:
        return "-"
    return f"{fmt_value(m, st.median)} [{fmt_value(m, st.min)}–{fmt_value(m, st.max)}]"


def _write_details(result: BenchResult, stream: TextIO) -> None:
    metrics = (Metric.DECODE, Metric.TTFT, Metric.PREFILL, Metric.RSS, Metric.LOAD)
    stream.write("### Details: median [min–max] over the measured runs\n\n")
    stream.write(
        "| device | model | scheme | prompt / generated tokens | "
        + " | ".join(m.header for m in metrics)
        + " | runs ok / failed |\n"
    )
    stream.write("|---|---|---|---:|" + "---:|" * len(metrics) + "---:|\n")
    for s in result.summaries:
        shown = ["-" if t is None else str(t) for t in (s.prompt_tokens, s.generated_tokens)]
        tokens = " / ".join(shown)
        stream.write(
            f"| {_device_name(result, s.target_id)} | {_row_label(s)} | {s.scheme} | {tokens} | "
            + " | ".join(_range(s, m) for m in metrics)
            + f" | {s.n_ok} / {s.n_failed} |\n"
        )
    stream.write("\n")


CSV_DEVICE_FIELDS = ("soc", "hardware", "os_version", "abi", "n_cores", "cpu_max_freq_mhz", "mem_total_gb")


def csv_rows(result: BenchResult) -> list[dict[str, object]]:
    """One flat row per configuration (what the csv writer writes)."""
    rows = []
    for s in result.summaries:
        base = baseline_for(s, result.summaries)
        facts = result.devices.get(s.target_id, {})
        row: dict[str, object] = {
            "target": s.target,
            "target_id": s.target_id,
            "device_model": s.device_model,
            "label": s.label,
            "scheme": s.scheme,
            "runtime": s.runtime,
            "runner_build": s.runner_build,
            "baseline": s.is_baseline,
            "prompt_tokens_requested": s.prompt_tokens_requested,
            "prompt_tokens": s.prompt_tokens,
            "generated_tokens": s.generated_tokens,
            "max_new_tokens": s.max_new_tokens,
            "n_ok": s.n_ok,
            "n_failed": s.n_failed,
        }
        for m in Metric:
            st = s.stats.get(m)
            r = ratio(s, base, m)
            row[f"{m.value}_median"] = None if st is None else round(st.median, 6)
            row[f"{m.value}_min"] = None if st is None else round(st.min, 6)
            row[f"{m.value}_max"] = None if st is None else round(st.max, 6)
            row[f"{m.value}_ratio"] = None if r is None else round(r, 6)
            row[f"{m.value}_samples"] = "" if st is None else ";".join(f"{v:.6g}" for v in st.samples)
        for key in CSV_DEVICE_FIELDS:
            v = facts.get(key)
            row[key] = ";".join("" if x is None else str(x) for x in v) if isinstance(v, (list, tuple)) else v
        row["warnings"] = " | ".join(s.warnings)
        row["error"] = s.error
        rows.append(row)
    return rows


def write_csv(result: BenchResult, stream: TextIO) -> None:
    rows = csv_rows(result)
    if not rows:
        stream.write("target,target_id,label\n")
        return
    w = csv.DictWriter(stream, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: ("" if v is None else v) for k, v in row.items()})


def write_jsonl(result: BenchResult, stream: TextIO) -> None:
    for r in result.records:
        stream.write(json.dumps(r.as_dict(), ensure_ascii=False) + "\n")


def v3_rows(result: BenchResult) -> list[dict[str, object]]:
    """PyTorch benchmark v3 rows: one per configuration and metric, raw samples as benchmark_values."""
    rows = []
    for s in result.summaries:
        facts = result.devices.get(s.target_id, {})
        for m in Metric:
            st = s.stats.get(m)
            if st is None:
                continue
            rows.append(
                {
                    "benchmark": {
                        "name": "edge android_bench",
                        "mode": "inference",
                        "extra_info": {
                            "harness_version": HARNESS_VERSION,
                            "target": s.target,
                            "prompt_tokens": s.prompt_tokens_requested,
                            "max_new_tokens": s.max_new_tokens,
                            "repetitions": result.config.get("repetitions"),
                            "threads": result.config.get("threads"),
                        },
                    },
                    "model": {
                        "name": s.label,
                        "type": "OSS model",
                        "backend": BACKENDS.get(s.runtime, "xnnpack"),
                        "extra_info": {
                            "scheme": s.scheme,
                            "baseline": s.is_baseline,
                            "runtime": s.runtime,
                            "runner_build": s.runner_build,
                        },
                    },
                    "metric": {
                        "name": m.v3_name,
                        "benchmark_values": [round(v * m.v3_scale, 6) for v in st.samples],
                        "target_value": 0,
                        "extra_info": {
                            "method": "generate",
                            "median": round(st.median * m.v3_scale, 6),
                            "min": round(st.min * m.v3_scale, 6),
                            "max": round(st.max * m.v3_scale, 6),
                        },
                    },
                    "runners": [
                        {
                            "name": s.device_model,
                            "type": facts.get("os_version", s.target),
                            "avail_mem_in_gb": facts.get("mem_avail_gb") or "",
                            "total_mem_in_gb": facts.get("mem_total_gb") or "",
                            "extra_info": {"serial": s.target_id, "soc": facts.get("soc"), "abi": facts.get("abi")},
                        }
                    ],
                }
            )
    return rows


def write_v3_json(result: BenchResult, stream: TextIO) -> None:
    json.dump(v3_rows(result), stream, indent=2, ensure_ascii=False)
    stream.write("\n")


Writer = Callable[[BenchResult, TextIO], None]

WRITERS: dict[OutputFormat, Writer] = {
    OutputFormat.MARKDOWN: write_markdown,
    OutputFormat.CSV: write_csv,
    OutputFormat.JSONL: write_jsonl,
    OutputFormat.V3_JSON: write_v3_json,
}


def render(result: BenchResult, fmt: OutputFormat) -> str:
    buf = io.StringIO()
    WRITERS[fmt](result, buf)
    return buf.getvalue()


def write_all(result: BenchResult, stem: Path) -> list[Path]:
    """stem -> stem.md, stem.csv, stem.jsonl, stem.json (each atomic); the paths written."""
    stem = Path(stem)
    paths = []
    for fmt in OutputFormat:
        path = stem.parent / f"{stem.name}.{fmt.value}"
        write_text_atomic(path, render(result, fmt))
        paths.append(path)
    return paths
