"""How the fixture's training length moves plain PTQ's damage and the share of it that SpinQuant's parts recover.

In:  the shipped fixture (the recipe's 4400 steps) and the same recipe retrained here with its cosine schedule
     planned over 1100 and 2200 steps (`edge.fixture.train`'s `train_fixture`, same seed and corpus; needs
     `apt-get install -y python3.11-doc`). Each model is quantized by the shipped configs (fixture_8da4w,
     fixture_spinquant with and without rotations, and with a random Hadamard) and run eagerly through
     `edge.model` on every window of its own heldout.txt (the same text for all three), against its float32 self.
Out: benchmarks/results/fixture_training_length.{md,json}: per training length, held-out perplexity, PTQ's mean KL
     and top-1 agreement, and the share of PTQ's KL and top-1 gap each recipe recovers.

    python benchmarks/studies/fixture_training_length.py      # about 25 minutes on 2 cores (training is 14 of them)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "fixture_training_length"
RETRAINED_STEPS = (1100, 2200)
ROWS = [  # (name, config, overrides); the first two are the gap's ends
    ("bf16", "fixture_bf16", {}),
    ("8da4w PTQ (vanilla)", "fixture_8da4w", {}),
    ("GPTQ with float targets, no rotation", "fixture_spinquant", {"rotation": {"kind": "none"}}),
    ("random Hadamard + R4 + GPTQ", "fixture_spinquant", {"rotation": {"kind": "hadamard"}}),
    ("SpinQuant, shipped config", "fixture_spinquant", {}),
]


def measure(checkpoint: Path) -> dict:
    """A fixture folder -> held-out perplexity and, per row, mean KL and top-1 agreement against its float32 self."""
    import math

    import torch
    from top1_vs_kl import eager_logits, quantized_logits

    from edge.checkpoint import load_model, open_checkpoint
    from edge.checkpoint.tokenizer import load_tokenizer
    from edge.evaluate.core import tokenize_windows
    from edge.evaluate.metrics import compare_logits, gap_recovered

    ckpt = open_checkpoint(checkpoint)
    windows = tokenize_windows(
        (checkpoint / "heldout.txt").read_text(encoding="utf-8"),
        tokenizer=load_tokenizer(ckpt.tokenizer),
        bos_id=ckpt.bos_id,
        context=256,
    )
    ref = eager_logits(load_model(ckpt, max_context=512, dtype=torch.float32, full_logits=True), windows)  # [N, V]
    targets = torch.cat([torch.tensor(w[1:]) for w in windows])
    n = len(ref)
    out = {"windows": len(windows), "tokens": n, "rows": []}
    for name, config, extra in ROWS:
        t0 = time.monotonic()
        c = compare_logits(ref, quantized_logits(config, extra | {"checkpoint": str(checkpoint)}, windows), targets)
        out["float32_perplexity"] = math.exp(c.nll_ref / n)
        out["rows"].append(
            {
                "row": name,
                "mean_kl": c.kl / n,
                "top1_agreement": c.agree / n,
                "perplexity": math.exp(c.nll_got / n),
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        print(json.dumps(out["rows"][-1]), flush=True)
    b, p = out["rows"][0], out["rows"][1]
    for r in out["rows"][2:]:
        r["kl_gap_recovered"] = gap_recovered(r["mean_kl"], ptq=p["mean_kl"], base=b["mean_kl"])
        r["top1_gap_recovered"] = gap_recovered(r["top1_agreement"], ptq=p["top1_agreement"], base=b["top1_agreement"])
    return out


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    from top1_vs_kl import machine

    from edge.checkpoint import FIXTURE_CHECKPOINT
    from edge.fixture.recipe import TrainConfig
    from edge.fixture.train import train_fixture

    results = []
    with tempfile.TemporaryDirectory(prefix="fixture_length_") as tmp:
        for steps in RETRAINED_STEPS:
            config = TrainConfig(out_dir=Path(tmp) / f"steps{steps}", max_steps=steps, minutes=600.0)
            t0 = time.monotonic()
            train_fixture(config, command=f"benchmarks/studies/fixture_training_length.py ({steps} steps)")
            log = json.loads((config.out_dir / "train_log.json").read_text())
            results.append(
                {
                    "steps": steps,
                    "tokens_seen": log["tokens_seen"],
                    "parameters": log["parameters"],
                    "train_s": round(time.monotonic() - t0, 1),
                }
                | measure(config.out_dir)
            )
        log = json.loads((FIXTURE_CHECKPOINT / "train_log.json").read_text())
        results.append(
            {
                "steps": log["steps"],
                "tokens_seen": log["tokens_seen"],
                "parameters": log["parameters"],
                "train_s": None,
                "shipped": True,
            }
            | measure(FIXTURE_CHECKPOINT)
        )
    meta = {"measured": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine()}
    RESULTS.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(render(meta, results))
    print(render(meta, results))
    return 0


def render(meta: dict, results: list[dict]) -> str:
    names = [name for name, _, _ in ROWS[2:]]
    lines = [
        "# Plain PTQ's damage and what SpinQuant's parts recover, against the fixture's training length",
        "",
        f"Measured {meta['measured']} on {meta['machine']}. Each row is the fixture recipe with its cosine schedule "
        "planned over that many steps (the 4400-step row is the shipped fixture), evaluated eagerly after edge's own "
        "quantization on every window of heldout.txt (256 tokens each), against the same model in float32.",
        "",
        "| steps | tokens per parameter | float32 perplexity | PTQ mean KL | PTQ top-1 | "
        + " | ".join(f"{n}: gap recovered (KL / top-1)" for n in names)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(names),
    ]
    for r in results:
        ptq = r["rows"][1]
        cells = [f"{x['kl_gap_recovered']:.0%} / {x['top1_gap_recovered']:.0%}" for x in r["rows"][2:]]
        steps = f"{r['steps']} (shipped)" if r.get("shipped") else str(r["steps"])
        lines.append(
            f"| {steps} | {r['tokens_seen'] / r['parameters']:.1f} | {r['float32_perplexity']:.2f} | "
            f"{ptq['mean_kl']:.5f} | {ptq['top1_agreement']:.2%} | " + " | ".join(cells) + " |"
        )
    lines += ["", "Reproduce: `python benchmarks/studies/fixture_training_length.py`"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
