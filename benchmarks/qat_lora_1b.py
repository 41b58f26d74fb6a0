"""A QAT step and a LoRA step at the full Llama 3.2 1B shape on this machine: time and peak memory.

In:  --work DIR (a random-weight 1B checkpoint in Meta's layout is written there, as for the other
     full-shape benchmarks), --seq-len, --steps, --device.
Out: benchmarks/results/qat_lora_1b.{md,json}. The model is built by `edge.finetune.run.build_model`
     (float32, torchao fake quantizers from the export's scheme table, rank-16 LoRA on every block
     linear) and trained by `edge.finetune.train.run_stage`, the code `python -m edge.finetune` runs,
     on random token windows (batch 1). The LoRA stage runs first so that its peak RSS is its own;
     the QAT stage (whole backbone, AdamW) follows. Random weights: costs, not quality.

    python benchmarks/qat_lora_1b.py [--seq-len 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, machine, write_random_meta_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--stages",
        nargs="+",
        default=["lora", "qat"],
        choices=["lora", "qat"],
        help="stages to time (QAT of the whole 1B backbone in float32 with AdamW needs more than 24 GB)",
    )
    ns = ap.parse_args()

    import torch

    from edge.checkpoint import open_checkpoint
    from edge.config import load_config
    from edge.core.machine import peak_rss_mb
    from edge.core.quiet import quiet_libraries
    from edge.finetune.data import DataReport, TrainingData
    from edge.finetune.run import build_model
    from edge.finetune.train import Dist, TrainState, run_stage

    quiet_libraries()
    ckpt_dir = ns.work / "llama3_2_1b_random"
    print(f"writing random 1b checkpoint to {ckpt_dir}", file=sys.stderr, flush=True)
    write_random_meta_checkpoint(ckpt_dir, PARAMS["1b"])
    ckpt = open_checkpoint(ckpt_dir)
    steps = {"steps": ns.steps, "batch_size": 1}
    config = load_config(
        config="llama3_2_1b_qat_lora",
        overrides={
            "device": ns.device,
            "finetune": {"max_length": ns.seq_len, "checkpoint_every": 0, "qat": steps, "lora": steps},
        },
    )
    device = torch.device(ns.device)
    t0 = time.monotonic()
    model = build_model(config, ckpt, device=device)
    build_s = time.monotonic() - t0
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, ckpt.args.vocab_size, (8, ns.seq_len), generator=gen)
    data = TrainingData(
        tokens=tokens, mask=torch.ones_like(tokens, dtype=torch.bool), report=DataReport(), sha256="random"
    )
    rows = {}
    for stage in ns.stages:
        state = TrainState(stage=stage)
        times: list[float] = []

        def report(_line: str, times=times) -> None:
            times.append(time.monotonic())

        start = time.monotonic()
        run_stage(
            model,
            data,
            config,
            state,
            dist=Dist(),
            device=device,
            load_optimizer=None,
            save=lambda *_: None,
            report=report,
        )
        per_step = [b - a for a, b in zip([start, *times[:-1]], times)]
        peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
        rows[stage] = {
            "step_s": [round(s, 2) for s in per_step],
            "steady_step_s": round(min(per_step), 2),
            "tokens_per_s": round(ns.seq_len / min(per_step), 1),
            "peak_mib": round(peak),
            "losses": [round(x, 4) for x in state.losses[stage]],
        }
        print(stage, rows[stage], file=sys.stderr, flush=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "device": ns.device,
        "seq_len": ns.seq_len,
        "batch": 1,
        "steps": ns.steps,
        "build_s": round(build_s, 1),
        "stages": rows,
        "params": ckpt.args.n_params,
    }
    mem = "peak GPU memory allocated" if ns.device == "cuda" else "peak RSS of the process so far"
    lines = [
        f"# QAT + LoRA at the Llama 3.2 1B shape (random weights), one window of {ns.seq_len} tokens per step",
        "",
        f"Measured {result['date']} on {result['machine'].get('cpu', '?')} ({ns.device}); "
        f"model built in {build_s:.0f} s "
        "(float32, fake quantizers, rank-16 LoRA on q/k/v/o/gate/up/down).",
        "",
        f"| stage | what trains | steady step | tokens/s | {mem} |",
        "|---|---|---|---|---|",
    ]
    what = {"lora": "adapters only (backbone frozen, fake-quantized)", "qat": "whole backbone, AdamW"}
    for stage in ns.stages:
        r = rows[stage]
        lines.append(
            f"| {stage} | {what[stage]} | {r['steady_step_s']} s | {r['tokens_per_s']} | {r['peak_mib']} MiB |"
        )
    lines += [
        "",
        f"Reproduce: `python benchmarks/qat_lora_1b.py --seq-len {ns.seq_len} --steps {ns.steps} "
        f"--stages {' '.join(ns.stages)}" + (f" --device {ns.device}" if ns.device != "cpu" else "") + "`",
    ]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "qat_lora_1b.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "qat_lora_1b.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
