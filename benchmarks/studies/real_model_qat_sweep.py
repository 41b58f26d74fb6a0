"""QAT and LoRA learning rates and steps on the real model: what a short CPU fine-tune reaches, and how it scales.

The shipped 1B/3B recipe (1000 QAT + 1000 LoRA steps of 8 x 2048 tokens, QAT lr 2e-5, LoRA lr 2e-4) is GPU work.
On 2 CPU cores one step of 4 x 256 tokens of SmolLM2-135M costs about half a minute of CPU, so the real-model table
(benchmarks/results/real_model_quality.md) ran 10 + 10 steps at the recipe's rates. This sweep measures whether
the rates, or the steps, are what keeps that row under its targets: each point is a fine-tune (loss `distill`,
the fixture's calibration.txt) of the grid model, quantized as the export does and scored eagerly on the same
held-out windows as the table, with the table's PTQ row as the gap's baseline.

    python benchmarks/studies/real_model_qat_sweep.py --point 10:1e-4:0:0 --point 10:5e-4:0:0 --point 40:1e-4:0:0

A point is QAT_STEPS:QAT_LR:LORA_STEPS:LORA_LR. Points are cached in --work, so a sweep grows point by point.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = "llama3_2_1b_qat_lora"
# the table's earlier rows (shipped rates, 10 + 10 steps), the rates at 10 steps, then length; the table's rows now
# are 40:1e-4:0:0 and 40:1e-4:40:2e-4
DEFAULT_POINTS = [
    "10:2e-5:0:0",
    "10:2e-5:10:2e-4",
    "10:1e-4:0:0",
    "10:5e-4:0:0",
    "40:1e-4:0:0",
    "40:1e-4:40:2e-4",
    "80:1e-4:40:2e-4",
]


def table_module():
    """benchmarks/real_model_quality.py, whose rows, caching and scoring this sweep reuses."""
    spec = importlib.util.spec_from_file_location("real_model_quality", ROOT / "benchmarks" / "real_model_quality.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def parse_point(text: str) -> dict:
    """'QAT_STEPS:QAT_LR:LORA_STEPS:LORA_LR' -> the point as a dict (argparse type: bad text is a usage error)."""
    try:
        qs, ql, ls, ll = text.split(":")
        point = {"qat_steps": int(qs), "qat_lr": float(ql), "lora_steps": int(ls), "lora_lr": float(ll)}
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected QAT_STEPS:QAT_LR:LORA_STEPS:LORA_LR (10:1e-4:10:1e-3)")
    if point["qat_steps"] < 1 or point["lora_steps"] < 0 or point["qat_lr"] <= 0 or point["lora_lr"] < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: QAT needs at least 1 step and a positive rate")
    return point


def point_text(p: dict) -> str:
    """A point -> its QAT_STEPS:QAT_LR:LORA_STEPS:LORA_LR text (a LoRA rate with no LoRA steps is 0)."""
    return f"{p['qat_steps']}:{p['qat_lr']:g}:{p['lora_steps']}:{p['lora_lr'] if p['lora_steps'] else 0:g}"


def point_row(p: dict) -> tuple:
    """A point -> a row of the real-model table's shape (key, label, config, export overrides, fine-tune overrides)."""
    key = f"sweep_q{p['qat_steps']}_{p['qat_lr']:g}_l{p['lora_steps']}_{p['lora_lr']:g}"
    label = f"QAT {p['qat_steps']} steps at {p['qat_lr']:g}"
    if p["lora_steps"]:
        label += f", LoRA {p['lora_steps']} steps at {p['lora_lr']:g}"
    ft = {
        "qat": {"steps": p["qat_steps"], "learning_rate": p["qat_lr"]},
        "lora": {"steps": p["lora_steps"]} | ({"learning_rate": p["lora_lr"]} if p["lora_steps"] else {}),
    }
    return (key, label, CONFIG, {}, ft)


def recipe_rows(ptq: dict, ns) -> list[dict]:
    """The real-model table's QAT and QAT + LoRA rows (at the table's rates), when it was measured on the same PTQ
    baseline and windows as this sweep -> those rows with their points; else []."""
    path = RESULTS / "real_model_quality.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    s = table.get("settings", {})
    rows = {r["key"]: r for r in table.get("models", {}).get("grid", [])}
    if (s.get("windows"), s.get("context")) != (ns.windows, ns.context) or rows.get("ptq", {}).get("mean_kl") != ptq[
        "mean_kl"
    ]:
        return []
    shipped = table["shipped_rates"]  # the table records the shipped config's rates it ran beside its flags
    steps, out = s["finetune_steps"], []
    for key, lora in (("qat", 0), ("qat_lora", steps)):
        if key in rows:
            point = {"qat_steps": steps, "qat_lr": s.get("qat_lr") or shipped["qat"], "lora_steps": lora}
            point["lora_lr"] = s.get("lora_lr") or shipped["lora"]
            out.append(rows[key] | {"point": point})
    return out


def render(results: dict) -> str:
    """The results JSON -> the markdown page; every number comes from `results`."""
    s = results["settings"]
    lines = [
        "# QAT and LoRA rates and steps on the real model (SmolLM2-135M-Instruct, grid)",
        "",
        f"Measured {results['measured']} on {results['machine']}; {results['tokens']} predicted tokens per row "
        f"({s['windows']} windows of {s['context']} from the fixture's heldout.txt), scored eagerly against the fp32 "
        f"model. Each fine-tune: loss `distill` on the fixture's calibration.txt, batches of 4 x {s['context']} "
        "tokens, the shipped `llama3_2_1b_qat_lora` config otherwise (warm-up over the first 10% of steps, cosine "
        "decay to 10%). Baseline: plain 8da4w PTQ, as in real_model_quality.md.",
        "",
        *([s["note"], ""] if s.get("note") else []),
        "| QAT steps | QAT lr | LoRA steps | LoRA lr | tokens | perplexity | top-1 | mean KL "
        "| PTQ gap recovered (KL / top-1 / ppl) | fine-tune CPU s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    ptq = results["ptq"]
    lines.append(
        f"| PTQ | — | — | — | 0 | {ptq['pte_perplexity']:.2f} | {ptq['top1_agreement']:.1%} | {ptq['mean_kl']:.3f} "
        "| — | — |"
    )
    # the sweep's points, in order, with the table's own fine-tune rows among them (marked) or first when not one
    table = {point_text(r["point"]) for r in results["recipe_rows"]}
    rows = [r for r in results["recipe_rows"] if point_text(r["point"]) not in s["points"]] + results["points"]
    for r in rows:
        whose = " (the table's)" if point_text(r["point"]) in table else ""
        p = r["point"]
        lora = (str(p["lora_steps"]), f"{p['lora_lr']:.0e}") if p["lora_steps"] else ("0", "—")
        tokens = (p["qat_steps"] + p["lora_steps"]) * 4 * s["context"]
        lines.append(
            f"| {p['qat_steps']} | {p['qat_lr']:.0e} | {lora[0]} | {lora[1]} | {tokens:,} | {r['pte_perplexity']:.2f} "
            f"| {r['top1_agreement']:.1%} | {r['mean_kl']:.3f} | {r['kl_gap_recovered']:.0%} / "
            f"{r['top1_gap_recovered']:.0%} / {r['ppl_gap_recovered']:.0%} | {r['finetune_s']:.0f}{whose} |"
        )
    points = " ".join(f"--point {p}" for p in s["points"])
    lines += [
        "",
        "Targets for QAT + LoRA (real_model_quality.md): 90% of the perplexity gap, 67% of the KL gap.",
        "",
        f"Reproduce: `python benchmarks/studies/real_model_qat_sweep.py --windows {s['windows']} {points}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()  # before torchao's import prints what it could not load
    from edge.checkpoint import FIXTURE_CHECKPOINT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--point", dest="points", action="append", type=parse_point, help="QAT_STEPS:QAT_LR:LORA_STEPS:LR")
    ap.add_argument("--windows", type=int, default=32, help="held-out windows scored per point")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--note", default="", help="a sentence about this run for the page (e.g. what shared the CPU)")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "real_model")
    ap.add_argument("--results", type=Path, default=RESULTS / "real_model_qat_sweep")
    ns = ap.parse_args()
    ns.points = ns.points or [parse_point(p) for p in DEFAULT_POINTS]

    from edge.core.machine import cpu_name
    from edge.core.progress import Progress

    table, progress = table_module(), Progress()
    ns.work.mkdir(parents=True, exist_ok=True)
    checkpoint = table.prepare_models(ns.work, progress, ["grid"])["grid"]
    # The table's own settings for its cache keys: the PTQ row is the table's row, reused when already measured.
    tns = argparse.Namespace(
        windows=ns.windows, context=ns.context, calibration_seq_len=256, spinquant_steps=0, spinquant_batch=0,
        finetune_steps=0, pte_rows=["ptq"], reference=checkpoint, calibration=FIXTURE_CHECKPOINT / "calibration.txt",
        heldout=FIXTURE_CHECKPOINT / "heldout.txt",
    )  # fmt: skip
    work = ns.work / "grid"
    rows = [table.cached_row(next(r for r in table.ROWS if r[0] == "ptq"), checkpoint, work, tns, progress)]
    for p in ns.points:
        rows.append(table.cached_row(point_row(p), checkpoint, work, tns, progress) | {"point": p})
    table.add_gaps(rows)
    results = {
        "recipe_rows": recipe_rows(rows[0], ns),
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()} ({os.cpu_count()} cores)",
        "tokens": rows[0]["predicted_tokens"],
        "settings": {
            "windows": ns.windows,
            "context": ns.context,
            "note": ns.note,
            "points": [point_text(p) for p in ns.points],
        },
        "ptq": rows[0],
        "points": rows[1:],
    }
    sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py, as the product benchmarks import it
    from common import write_table

    write_table(ns.results.parent, ns.results.name, results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
