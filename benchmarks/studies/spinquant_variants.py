"""SpinQuant's knobs on the shipped fixture: which combination recovers the most of plain PTQ's gap?

In:  the fixture and the shipped configs (fixture_bf16, fixture_8da4w, fixture_spinquant), 20 held-out
     windows of 256 tokens (the test suite's evaluation), variants of fixture_spinquant:
       sq_default   optimized rotations (W16A8) + R4 + GPTQ as SpinQuant runs it (128 windows, no float targets);
                    sq_w4, sq_actorder and had_gptq change one thing each from it
       sq_w4        rotations optimized against int4 fake-quantized weights (rotation.weight_bits: 4)
       sq_actorder  GPTQ visiting columns by decreasing Hessian diagonal (gptq.act_order)
       had_gptq     seeded random Hadamard rotations, not optimized, + R4 + GPTQ
       sq_float_targets    sq_default with GPTQ fitting each linear and the output layer to the float model's
                           outputs (gptq.float_targets)
       sqft_w4      sq_float_targets with rotations optimized against int4 weights
       sqft_160     sq_float_targets calibrated on 160 windows (the whole of calibration.txt) instead of 128:
                    the shipped fixture_spinquant
       sqft_damp    sq_float_targets with damping 0.001 instead of 0.01
       sqft_160_damp  both
       sqft_kl      the shipped config with rotations optimized against the KL divergence from the float model
                    (rotation.loss: kl) instead of the text's cross-entropy
       sqft_kl_w4   the same against int4 fake-quantized weights
Out: benchmarks/results/spinquant_variants_fixture.jsonl (one line per row as it finishes) and, with
     --table, spinquant_variants_fixture.md.

    python benchmarks/studies/spinquant_variants.py [ROW ...]      # ~3.5 min per SpinQuant row on 2 cores
    python benchmarks/studies/spinquant_variants.py --table
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "spinquant_variants_fixture.jsonl"
W = 20
SQ_GPTQ = {"float_targets": False, "samples": 128}  # GPTQ as SpinQuant's code runs it
ROWS = [
    ("bf16", "fixture_bf16", {}),
    ("ptq", "fixture_8da4w", {}),
    ("sq_default", "fixture_spinquant", {"gptq": SQ_GPTQ}),
    ("sq_w4", "fixture_spinquant", {"rotation": {"weight_bits": 4}, "gptq": SQ_GPTQ}),
    ("sq_actorder", "fixture_spinquant", {"gptq": SQ_GPTQ | {"act_order": True}}),
    ("had_gptq", "fixture_spinquant", {"rotation": {"kind": "hadamard"}, "gptq": SQ_GPTQ}),
    ("sq_float_targets", "fixture_spinquant", {"gptq": {"samples": 128}}),
    ("sqft_w4", "fixture_spinquant", {"rotation": {"weight_bits": 4}, "gptq": {"samples": 128}}),
    ("sqft_160", "fixture_spinquant", {}),  # the shipped config
    ("sqft_damp", "fixture_spinquant", {"gptq": {"samples": 128, "damp": 0.001}}),
    ("sqft_160_damp", "fixture_spinquant", {"gptq": {"damp": 0.001}}),
    ("sqft_kl", "fixture_spinquant", {"rotation": {"loss": "kl"}}),
    ("sqft_kl_w4", "fixture_spinquant", {"rotation": {"loss": "kl", "weight_bits": 4}}),
]


def table() -> str:
    order = [name for name, _, _ in ROWS]
    rows = sorted((json.loads(line) for line in RESULTS.read_text().splitlines()), key=lambda r: order.index(r["name"]))
    lines = [
        "# SpinQuant variants on the fixture (20 held-out windows of 256 tokens, .pte in ExecuTorch's runtime)",
        "",
        "| row | perplexity | top-1 agreement | mean KL | PTQ gap recovered (KL / top-1 / ppl) | export + eval s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = "—" if r.get("kl_rec") is None else f"{r['kl_rec']:.0%} / {r['top1_rec']:.0%} / {r['ppl_rec']:.0%}"
        lines.append(
            f"| {r['name']} | {r['pte_perplexity']:.3f} | {r['top1_agreement']:.2%} | {r['mean_kl']:.5f} | "
            f"{gap} | {r['export_s']:.0f} |"
        )
    return (
        "\n".join(
            lines
            + [
                "",
                "Each row's time includes whatever else ran on this 2-core machine; compare the quality columns.",
                "",
                "Reproduce: `python benchmarks/studies/spinquant_variants.py && "
                "python benchmarks/studies/spinquant_variants.py --table`",
            ]
        )
        + "\n"
    )


def main() -> int:
    if sys.argv[1:] == ["--table"]:
        text = table()
        RESULTS.with_suffix(".md").write_text(text)
        print(text)
        return 0
    from edge.checkpoint import FIXTURE_CHECKPOINT
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.evaluate import evaluate
    from edge.evaluate.metrics import gap_recovered
    from edge.export.pipeline import run_export

    only = sys.argv[1:]
    res: dict[str, dict] = {}
    # Rows not run this time are kept (in ROWS order when the table is written); the rows run are replaced.
    rerun = {name for name, _, _ in ROWS if not only or name in only or name in ("bf16", "ptq")}
    kept = [json.loads(line) for line in RESULTS.read_text().splitlines()] if RESULTS.exists() else []
    RESULTS.write_text("".join(json.dumps(r) + "\n" for r in kept if r["name"] not in rerun))
    for name, cfg, extra in ROWS:
        if only and name not in only and name not in ("bf16", "ptq"):
            continue
        out = ROOT / "out" / "spinquant_variants" / name
        t0 = time.monotonic()
        run_export(
            load_config(
                config=cfg,
                overrides={"output": str(out), "force": True, "full_logits": True, "max_context": 512} | extra,
            ),
            progress=Progress(),
        )
        r = evaluate(
            pte_path=out / "model.pte",
            reference=FIXTURE_CHECKPOINT,
            text_path=FIXTURE_CHECKPOINT / "heldout.txt",
            context=256,
            max_windows=W,
        )
        d = r.to_dict() | {"name": name, "export_s": time.monotonic() - t0}
        res[name] = d
        if name not in ("bf16", "ptq"):
            b, p = res["bf16"], res["ptq"]
            d["kl_rec"] = gap_recovered(d["mean_kl"], ptq=p["mean_kl"], base=b["mean_kl"])
            d["top1_rec"] = gap_recovered(d["top1_agreement"], ptq=p["top1_agreement"], base=b["top1_agreement"])
            d["ppl_rec"] = gap_recovered(d["pte_perplexity"], ptq=p["pte_perplexity"], base=b["pte_perplexity"])
        with RESULTS.open("a") as f:
            f.write(json.dumps({k: v for k, v in d.items() if not isinstance(v, list)}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
