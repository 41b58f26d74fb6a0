"""Why top-1 agreement recovers less of plain PTQ's gap than KL does, on every held-out window of the fixture.

In:  the shipped fixture and configs (fixture_bf16, fixture_8da4w, fixture_spinquant, and fixture_spinquant
     without rotations), run eagerly through `edge.model` after `quantize_model` (the .pte computes the same:
     on the README's 40 windows eager and .pte top-1 agreed to 0.02 points and mean KL to 0.3%).
Out: benchmarks/results/top1_vs_kl_fixture.{md,json}: per export, mean KL, top-1 agreement, the tokens whose
     top-1 flips, and the spread (std) of the error in the reference's top-1 minus top-2 logit margin.

A token flips when the quantization error in its top-1/top-2 margin exceeds the margin. Near-ties are common
(9% of positions have a margin under 0.1), so flips grow in proportion to the error's amplitude, while KL
grows with its square: halving the error amplitude recovers about half of the top-1 gap but three quarters
of the KL gap.

    python benchmarks/studies/top1_vs_kl.py   # about 7 minutes on 2 cores (mostly the rotation optimizations)
"""

from __future__ import annotations

import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "top1_vs_kl_fixture"
ROWS = [
    ("bf16", "fixture_bf16", {}),
    ("8da4w PTQ (vanilla)", "fixture_8da4w", {}),
    ("GPTQ with float targets, no rotation", "fixture_spinquant", {"rotation": {"kind": "none"}}),
    ("SpinQuant, shipped config", "fixture_spinquant", {}),
    # Diagnostics, not shippable schemes: how much of each row's error the 8-bit embedding and output layer make.
    (
        "8da4w PTQ, embedding and output layer left float",
        "fixture_8da4w",
        {"quantization": {"embedding": "none", "output": "none"}},
    ),
    (
        "SpinQuant, embedding and output layer left float",
        "fixture_spinquant",
        {"quantization": {"embedding": "none", "output": "none"}},
    ),
]


def quantized_logits(config: str, extra: dict, windows: list[list[int]]):
    """A shipped config (+ overrides) -> the fixture as that export quantizes it, logits [N, V] over `windows`."""
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import prepare, quantized_model

    cfg = load_config(
        config=config,
        overrides={"output": "/tmp/top1_vs_kl", "force": True, "full_logits": True, "max_context": 512} | extra,
    )
    model, _, _ = quantized_model(cfg, prepare(cfg), progress=Progress(quiet=True))
    return eager_logits(model, windows)


def eager_logits(model, windows: list[list[int]]):
    """An `edge.model.Transformer` with full logits -> its float logits [N, V] predicting each window's next tokens."""
    import torch

    from edge.model import AttentionPath

    model.set_attention_path(AttentionPath.SEQUENCE)
    with torch.no_grad():
        return torch.cat([model(torch.tensor([w]))[0, :-1].float() for w in windows])


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    import torch
    import torch.nn.functional as F

    from edge.checkpoint import FIXTURE_CHECKPOINT, load_model, open_checkpoint
    from edge.checkpoint.tokenizer import load_tokenizer
    from edge.evaluate.core import tokenize_windows
    from edge.evaluate.metrics import compare_logits, gap_recovered

    ckpt = open_checkpoint(FIXTURE_CHECKPOINT)
    windows = tokenize_windows(
        (FIXTURE_CHECKPOINT / "heldout.txt").read_text(encoding="utf-8"),
        tokenizer=load_tokenizer(ckpt.tokenizer),
        bos_id=ckpt.bos_id,
        context=256,
    )
    ref = eager_logits(load_model(ckpt, max_context=512, dtype=torch.float32, full_logits=True), windows)  # [N, V]
    targets = torch.cat([torch.tensor(w[1:]) for w in windows])  # [N]
    top2 = ref.topk(2, dim=-1)
    margin = top2.values[:, 0] - top2.values[:, 1]
    ref_logp = F.log_softmax(ref, -1)
    rows = []
    for name, config, extra in ROWS:
        t0 = time.monotonic()
        got = quantized_logits(config, extra, windows)
        got_logp = F.log_softmax(got, -1)
        err = (got_logp - ref_logp).gather(1, top2.indices)  # [N, 2]: error at the reference's top-1 and top-2
        c = compare_logits(ref, got, targets)
        rows.append(
            {
                "row": name,
                "config": config,
                "overrides": extra,
                "mean_kl": c.kl / len(ref),
                "top1_agreement": c.agree / len(ref),
                "flips": len(ref) - c.agree,
                "margin_error_std": float((err[:, 0] - err[:, 1]).std()),
                "seconds": round(time.monotonic() - t0, 1),
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    b, p = rows[0], rows[1]
    for r in rows[2:]:
        r["kl_gap_recovered"] = gap_recovered(r["mean_kl"], ptq=p["mean_kl"], base=b["mean_kl"])
        r["top1_gap_recovered"] = gap_recovered(r["top1_agreement"], ptq=p["top1_agreement"], base=b["top1_agreement"])
        r["amplitude_gap_recovered"] = gap_recovered(
            r["margin_error_std"], ptq=p["margin_error_std"], base=b["margin_error_std"]
        )
    meta = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "windows": len(windows),
        "tokens": len(ref),
        "near_ties": float((margin < 0.1).float().mean()),
    }
    RESULTS.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    RESULTS.with_suffix(".md").write_text(render(meta, rows))
    print(render(meta, rows))
    return 0


def machine() -> str:
    import os

    from edge.core.machine import cpu_name

    return f"{cpu_name()} ({os.cpu_count()} cores)"


def render(meta: dict, rows: list[dict]) -> str:
    def rec(r: dict, key: str) -> str:
        return f"{r[key]:.0%}" if key in r else "—"

    lines = [
        "# Top-1 agreement against KL on every held-out window of the fixture",
        "",
        f"Measured {meta['measured']} on {meta['machine']}: {meta['windows']} windows of 256 tokens, "
        f"{meta['tokens']} predicted tokens, each export run eagerly after edge's own quantization, against the "
        f"float32 reference. {meta['near_ties']:.1%} of positions have a top-1/top-2 logit margin under 0.1.",
        "",
        "| export | mean KL | top-1 agreement | tokens flipped | std of the margin's error "
        "| PTQ gap recovered: KL / top-1 / error amplitude |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        gap = f"{rec(r, 'kl_gap_recovered')} / {rec(r, 'top1_gap_recovered')} / {rec(r, 'amplitude_gap_recovered')}"
        lines.append(
            f"| {r['row']} | {r['mean_kl']:.5f} | {r['top1_agreement']:.2%} | {r['flips']} | "
            f"{r['margin_error_std']:.3f} | {gap} |"
        )
    lines += [
        "",
        "Flips grow roughly in proportion to the error's amplitude (its std), KL with its square: top-1 recovers "
        "about what the amplitude does, not what KL does. Two thirds of the top-1 gap then asks for the amplitude "
        "cut to a third of PTQ's distance, about 1 - (1/3)^2 = 89% of the KL gap.",
        "",
        "Reproduce: `python benchmarks/studies/top1_vs_kl.py`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
