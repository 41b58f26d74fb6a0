"""A QAT step and a LoRA step at the full Llama 3.2 1B shape on this machine: time and peak memory.

In:  --size 1b|tiny (tiny: a 2-layer smoke-run shape), --work DIR (a random-weight checkpoint is written
     there, as for the other full-shape benchmarks), --seq-len, --steps, --device.
Out: <--results>/qat_lora_<size>.{md,json} (default benchmarks/results). The model is built by
     `edge.finetune.run.build_model` (float32, torchao fake quantizers from the export's scheme table,
     rank-16 LoRA on every block linear) and trained by `edge.finetune.train.run_stage`, the code
     `python -m edge.finetune` runs, on random token windows (batch 1). The LoRA stage runs first so
     that its peak RSS is its own; the QAT stage (whole backbone, AdamW) follows. Random weights: costs,
     not quality.

    python benchmarks/qat_lora_1b.py [--seq-len 512] [--steps 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, machine, write_random_checkpoint  # noqa: E402


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["1b", "tiny"], default="1b", help="tiny: a 2-layer shape for a smoke run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
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
    return ap.parse_args()


def time_stage(stage: str, model, data, config, device, seq_len: int) -> dict:
    """One fine-tune stage run as `python -m edge.finetune` runs it -> its step times, peak memory and losses."""
    import torch

    from edge.core.machine import peak_rss_mb
    from edge.finetune.train import Dist, TrainState, run_stage

    state = TrainState(stage=stage)
    times: list[float] = []
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
        report=lambda _line: times.append(time.monotonic()),
    )
    per_step = [b - a for a, b in zip([start, *times[:-1]], times)]
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mb()
    return {
        "step_s": [round(s, 2) for s in per_step],
        "steady_step_s": round(min(per_step), 2),
        "tokens_per_s": round(seq_len / min(per_step), 1),
        "peak_mib": round(peak),
        "losses": [round(x, 4) for x in state.losses[stage]],
    }


def main() -> int:
    ns = parse_args()

    import torch

    from edge.checkpoint import open_checkpoint
    from edge.config import load_config
    from edge.core.quiet import quiet_libraries
    from edge.finetune.data import DataReport, TrainingData
    from edge.finetune.run import build_model

    quiet_libraries()
    ckpt_dir = ns.work / f"llama3_2_{ns.size}_random"
    print(f"writing random {ns.size} checkpoint to {ckpt_dir}", file=sys.stderr, flush=True)
    write_random_checkpoint(ckpt_dir, PARAMS[ns.size])
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
        rows[stage] = time_stage(stage, model, data, config, device, ns.seq_len)
        print(stage, rows[stage], file=sys.stderr, flush=True)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": ns.size,
        "machine": machine(),
        "device": ns.device,
        "seq_len": ns.seq_len,
        "batch": 1,
        "steps": ns.steps,
        "build_s": round(build_s, 1),
        "stages": rows,
        "params": ckpt.args.n_params,
    }
    ns.results.mkdir(parents=True, exist_ok=True)
    name = f"qat_lora_{ns.size}"
    (ns.results / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    (ns.results / f"{name}.md").write_text(render(result, ns.stages))
    print(render(result, ns.stages))
    return 0


def render(result: dict, stages: list[str]) -> str:
    """The JSON result -> the committed markdown."""
    device, seq_len, rows = result["device"], result["seq_len"], result["stages"]
    size = result.get("size", "1b")
    mem = "peak GPU memory allocated" if device == "cuda" else "peak RSS of the process so far"
    lines = [
        f"# QAT + LoRA at the Llama 3.2 {size.upper()} shape (random weights), one window of {seq_len} tokens per step",
        "",
        f"Measured {result['date']} on {result['machine'].get('cpu', '?')} ({device}); "
        f"model built in {result['build_s']:.0f} s "
        "(float32, fake quantizers, rank-16 LoRA on q/k/v/o/gate/up/down).",
        "",
        f"| stage | what trains | steady step | tokens/s | {mem} |",
        "|---|---|---|---|---|",
    ]
    what = {"lora": "adapters only (backbone frozen, fake-quantized)", "qat": "whole backbone, AdamW"}
    for stage in stages:
        r = rows[stage]
        lines.append(
            f"| {stage} | {what[stage]} | {r['steady_step_s']} s | {r['tokens_per_s']} | {r['peak_mib']} MiB |"
        )
    size_flag = "" if size == "1b" else f" --size {size}"
    lines += [
        "",
        f"Reproduce: `python benchmarks/qat_lora_1b.py{size_flag} --seq-len {seq_len} --steps {result['steps']} "
        f"--stages {' '.join(stages)}" + (f" --device {device}" if device != "cpu" else "") + "`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
