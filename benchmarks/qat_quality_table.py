"""QAT + LoRA on the shipped fixture model: what each part buys, against plain PTQ and bf16.

In:  the fixture (edge/assets/fixture), its held-in calibration.txt (the fine-tune's data) and
     held-out heldout.txt (never trained on), the shipped configs fixture_bf16, fixture_8da4w and
     fixture_qat_lora.
Out: <--results>/quality_qat_fixture.{md,json} (default benchmarks/results): one row per .pte (bf16, plain 8da4w PTQ,
     QAT only, QAT + LoRA, QAT + LoRA merged, and the control: the same fine-tune without fake
     quantization, exported with 8da4w), each run in ExecuTorch's runtime on held-out windows:
     perplexity, top-1 agreement and mean KL against the original float model, the share of PTQ's
     gap recovered, .pte size, and the fine-tune's CPU time on this machine.

    python benchmarks/qat_quality_table.py [--windows 40]

--steps overrides the QAT and LoRA steps of every fine-tune (for a smoke run: the numbers are then not the
model card's).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import RESULTS, ROOT, add_gap_shares, write_table  # noqa: E402

# (label, fine-tune overrides or None for a plain export, export config, export overrides)
ROWS = [
    ("bf16", None, "fixture_bf16", {}),
    ("8da4w PTQ (vanilla)", None, "fixture_8da4w", {}),
    ("QAT only (stage 1)", {"lora": {"steps": 0}}, "fixture_qat_lora", {}),
    ("QAT + LoRA (`fixture_qat_lora`)", {}, "fixture_qat_lora", {}),
    ("QAT + LoRA, adapters merged", {}, "fixture_qat_lora", {"finetune": {"adapters": "merge"}}),
    (
        "control: the same fine-tune without fake quantization, then 8da4w",
        {"fake_quant": False},
        "fixture_qat_lora",
        {},
    ),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--windows", type=int, default=40)
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "quality_qat")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument("--rows", type=int, help="only the first N rows (a smoke run; default: all)")
    ap.add_argument("--steps", type=int, help="QAT and LoRA steps of every fine-tune (default: the config's)")
    ns = ap.parse_args()

    from edge.checkpoint import FIXTURE_CHECKPOINT
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.core.quiet import quiet_libraries
    from edge.evaluate import evaluate
    from edge.export.pipeline import run_export
    from edge.finetune.run import run_finetune

    quiet_libraries()
    progress = Progress()
    results, tuned = [], {}
    for i, (label, ft_over, config_name, ex_over) in enumerate(ROWS[: ns.rows]):
        checkpoint, ft_s = FIXTURE_CHECKPOINT, None
        if ft_over is not None and ns.steps is not None:
            ft_over = ft_over | {k: {"steps": ns.steps} | ft_over.get(k, {}) for k in ("qat", "lora")}
        if ft_over is not None:
            key = json.dumps(ft_over, sort_keys=True)
            if key not in tuned:
                out = ns.work / f"finetune{len(tuned)}"
                cfg = load_config(config="fixture_qat_lora", overrides={"finetune": {"output": str(out)} | ft_over})
                t0 = time.monotonic()
                run_finetune(cfg, checkpoint=None, resume=False, force=True, progress=progress)
                tuned[key] = (out, time.monotonic() - t0)
            checkpoint, ft_s = tuned[key]
        out = ns.work / f"row{i}"
        overrides = {
            "output": str(out),
            "force": True,
            "full_logits": True,
            "max_context": 2 * ns.context,
            "checkpoint": str(checkpoint),
        } | ex_over
        if "finetune" in ex_over or ft_over is not None:
            overrides["finetune"] = (ft_over or {}) | ex_over.get("finetune", {})
        t0 = time.monotonic()
        run_export(load_config(config=config_name, overrides=overrides), progress=progress)
        export_s = time.monotonic() - t0
        with progress.stage("evaluate", label):
            r = evaluate(
                pte_path=out / "model.pte",
                reference=FIXTURE_CHECKPOINT,
                text_path=FIXTURE_CHECKPOINT / "heldout.txt",
                context=ns.context,
                max_windows=ns.windows,
                on_window=lambda d, t: progress.step(d, t, label="windows"),
            )
        manifest = json.loads((out / "manifest.json").read_text())
        results.append(
            {
                "row": label,
                "finetune_overrides": ft_over,
                "export_config": config_name,
                "export_overrides": ex_over,
                "finetune_s": None if ft_s is None else round(ft_s, 1),
                "export_s": round(export_s, 1),
                "pte_mib": round((out / "model.pte").stat().st_size / 2**20, 2),
                "adapter_mib": round(
                    manifest["size_bytes"]["by_tensor_kind"].get("lora_adapters (float)", 0) / 2**20, 2
                ),
            }
            | r.to_dict()
        )
    add_gap_shares(results)
    write_table(ns.results, "quality_qat_fixture", results, render(results, ns))
    return 0


def render(results: list[dict], ns: argparse.Namespace) -> str:
    """The rows (as saved in the JSON) -> the committed markdown."""
    from edge.core.machine import cpu_name

    base = results[0]
    lines = [
        "# QAT + LoRA on the fixture model (held-out text; each .pte run in ExecuTorch's runtime)",
        "",
        f"Measured {datetime.now(timezone.utc).isoformat(timespec='seconds')} on {cpu_name()} "
        f"({os.cpu_count()} cores), "
        f"{results[0]['predicted_tokens']} predicted tokens per row in windows of {ns.context}. "
        "Fine-tune data: the fixture's "
        "held-in calibration.txt (41k tokens); loss: KL to the unquantized fixture (`finetune.loss: distill`).",
        "",
        "| export | perplexity | Δ vs bf16 | top-1 agreement | mean KL | PTQ gap recovered (ppl / KL / top-1) "
        "| .pte MiB (adapters) | fine-tune s (CPU) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results):
        gap = (
            "—"
            if i < 2
            else f"{r['ppl_gap_recovered']:.0%} / {r['kl_gap_recovered']:.0%} / {r['top1_gap_recovered']:.0%}"
        )
        lines.append(
            f"| {r['row']} | {r['pte_perplexity']:.3f} | {r['pte_perplexity'] - base['pte_perplexity']:+.3f} | "
            f"{r['top1_agreement']:.2%} | {r['mean_kl']:.4f} | {gap} | {r['pte_mib']} ({r['adapter_mib']}) | "
            f"{r['finetune_s'] if r['finetune_s'] is not None else '—'} |"
        )
    lines += [
        "",
        f"Eager float32 reference perplexity: {base['reference_perplexity']:.3f}.",
        "",
        f"Reproduce: `python benchmarks/qat_quality_table.py --windows {ns.windows}"
        + (f" --steps {ns.steps}" if ns.steps is not None else "")
        + (f" --rows {ns.rows}" if ns.rows is not None else "")
        + "`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
