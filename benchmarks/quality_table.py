"""The model card's quality comparison, reproduced on the shipped fixture model.

In:  the fixture in edge/assets/fixture (trained by `python -m edge.fixture.train`)
     and its held-out text (heldout.txt, never trained on).
Out: <--results>/quality_fixture.{md,json} (default benchmarks/results): one row per export (bf16 baseline,
     plain 8da4w PTQ, then SpinQuant and its parts: random Hadamard + RTN, optimized
     rotations + RTN, GPTQ without rotation, optimized + GPTQ), each with the .pte's
     perplexity measured in ExecuTorch's runtime, its difference from the bf16 row,
     (GPTQ rows twice: as SpinQuant's code runs it, and as fixture_spinquant ships it, with float
     targets and the whole calibration text),
     top-1 agreement / KL against the eager float32 reference, the share of plain PTQ's
     KL / top-1 gap that the row recovers, and the export's wall time on this machine.

    python benchmarks/quality_table.py [--windows 40] [--context 256]

--rotation-steps and --gptq-samples override every row's (for a smoke run: the numbers are then not the
model card's).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import RESULTS, ROOT, add_gap_shares, write_table  # noqa: E402

# (label, shipped config, overrides)
SPINQUANT_GPTQ = {
    "float_targets": False,
    "samples": 128,
    "damp": 0.01,
}  # SpinQuant's own GPTQ (eval_utils/gptq_utils.py)
ROWS = [
    ("bf16", "fixture_bf16", {}),
    ("8da4w PTQ (vanilla)", "fixture_8da4w", {}),
    (
        "SpinQuant parts: random Hadamard + RTN",
        "fixture_spinquant",
        {"rotation": {"kind": "hadamard"}, "quantization": {"rounding": "rtn"}},
    ),
    ("SpinQuant parts: optimized rotations + RTN", "fixture_spinquant", {"quantization": {"rounding": "rtn"}}),
    (
        "SpinQuant parts: GPTQ as SpinQuant runs it, no rotation",
        "fixture_spinquant",
        {"rotation": {"kind": "none"}, "gptq": SPINQUANT_GPTQ},
    ),
    ("SpinQuant parts: edge's GPTQ (float targets), no rotation", "fixture_spinquant", {"rotation": {"kind": "none"}}),
    ("SpinQuant, GPTQ as SpinQuant runs it", "fixture_spinquant", {"gptq": SPINQUANT_GPTQ}),
    ("SpinQuant (optimized rotations + edge's GPTQ), shipped config", "fixture_spinquant", {}),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--windows", type=int, default=40, help="evaluate the first N windows of heldout.txt (default 40)")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "quality")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument("--rows", type=int, help="only the first N rows (a smoke run; default: all)")
    ap.add_argument("--rotation-steps", type=int, help="Cayley SGD steps of every optimized row (default: 100)")
    ap.add_argument("--gptq-samples", type=int, help="calibration windows of every GPTQ row (default: the row's)")
    ns = ap.parse_args()

    from edge.checkpoint import FIXTURE_CHECKPOINT
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.evaluate import evaluate
    from edge.export.pipeline import run_export

    progress = Progress()
    text = FIXTURE_CHECKPOINT / "heldout.txt"
    results = []
    for row_i, (label, config_name, extra) in enumerate(ROWS[: ns.rows]):
        out = ns.work / f"row{row_i}_{config_name}"
        # full_logits: the same program but returning every position's logits, so a window is one
        # call (the default last-position program would be fed one token at a time: same numbers, slower).
        overrides = {"output": str(out), "force": True, "full_logits": True, "max_context": 2 * ns.context} | extra
        if ns.rotation_steps is not None:
            overrides["rotation"] = extra.get("rotation", {}) | {"steps": ns.rotation_steps}
        if ns.gptq_samples is not None:
            overrides["gptq"] = extra.get("gptq", {}) | {"samples": ns.gptq_samples}
        t0 = time.monotonic()
        run_export(load_config(config=config_name, overrides=overrides), progress=progress)
        export_s = time.monotonic() - t0
        with progress.stage("evaluate", label):
            r = evaluate(
                pte_path=out / "model.pte",
                reference=FIXTURE_CHECKPOINT,
                text_path=text,
                context=ns.context,
                max_windows=ns.windows,
                on_window=lambda d, t: progress.step(d, t, label="windows"),
            )
        size = (out / "model.pte").stat().st_size
        results.append(
            {
                "row": label,
                "config": config_name,
                "overrides": extra,
                "export_s": round(export_s, 1),
                "pte_mib": round(size / 2**20, 2),
            }
            | r.to_dict()
        )
    add_gap_shares(results)
    write_table(ns.results, "quality_fixture", results, render(results, ns))
    return 0


def render(results: list[dict], ns: argparse.Namespace) -> str:
    """The rows (as saved in the JSON) -> the committed markdown."""
    from edge.core.machine import cpu_name

    base = results[0]["pte_perplexity"]
    lines = [
        "# Quality on the fixture model (held-out text, perplexity of the .pte run in ExecuTorch's runtime)",
        "",
        f"Measured {datetime.now(timezone.utc).isoformat(timespec='seconds')} on {cpu_name()} "
        f"({os.cpu_count()} cores), "
        f"{results[0]['predicted_tokens']} predicted tokens per row in windows of {ns.context}.",
        "",
        "| export | perplexity | Δ vs bf16 | top-1 agreement with fp32 reference | mean KL "
        "| PTQ gap recovered (KL / top-1 / ppl) | .pte MiB | export s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for i, r in enumerate(results):
        gap = (
            "—"
            if i < 2
            else f"{r['kl_gap_recovered']:.0%} / {r['top1_gap_recovered']:.0%} / {r['ppl_gap_recovered']:.0%}"
        )
        lines.append(
            f"| {r['row']} | {r['pte_perplexity']:.3f} | {r['pte_perplexity'] - base:+.3f} | "
            f"{r['top1_agreement']:.2%} | "
            f"{r['mean_kl']:.4f} | {gap} | {r['pte_mib']} | {r['export_s']} |"
        )
    lines += [
        "",
        f"Eager float32 reference perplexity: {results[0]['reference_perplexity']:.3f}.",
        "",
        "Reproduce: `python benchmarks/quality_table.py"
        + (f" --windows {ns.windows}" if ns.windows else "")
        + (f" --rotation-steps {ns.rotation_steps}" if ns.rotation_steps is not None else "")
        + (f" --gptq-samples {ns.gptq_samples}" if ns.gptq_samples is not None else "")
        + (f" --rows {ns.rows}" if ns.rows is not None else "")
        + "`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
