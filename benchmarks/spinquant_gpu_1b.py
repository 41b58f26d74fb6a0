"""SpinQuant's GPU work at the full Llama 3.2 1B shape: GPTQ and rotation optimization, time and memory.

In:  --device (cuda; cpu runs the same code, for a smoke run with --size tiny), --work DIR (a
     random-weight checkpoint in Meta's layout is written there, without a tokenizer: the
     calibration windows are random token ids, so no tokenizer is read), and the shipped
     `llama3_2_1b_spinquant` config, whose settings are used as they are unless overridden:
     GPTQ on 128 windows of 2048 tokens, Cayley SGD for 100 steps of 8 windows of 2048, one
     window per forward/backward (`rotation.micro_batch: 1`).
Out: <--results>/spinquant_gpu_1b.{md,json} (default benchmarks/results), rewritten after each
     stage, so a run cut short keeps what it finished:
       gptq       `edge.quant.ptq.quantize_model` with GPTQ rounding after random-Hadamard R1/R2
                  and the online R4 folded in, as `python -m edge.export` runs it: blocks moved to the
                  device one at a time, the output layer and embedding rounded on the host;
       rotations  `edge.spinquant.optimize.optimize_rotations` on the float32 model, as
                  `make_rotations` runs it (8-bit activations, straight-through, cross-entropy).
     GPTQ runs first and on Hadamard rotations: its cost does not depend on the rotations' values,
     and a cut run then still has the larger stage. Random weights and tokens: costs, not quality.
     Lowering to a .pte is not part of this: it runs on the CPU (ExecuTorch), as in spinquant_1b.py.

    python benchmarks/spinquant_gpu_1b.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, write_random_meta_checkpoint  # noqa: E402


def where(device: str) -> str:
    import torch

    from edge.core.machine import cpu_name

    if device == "cuda":
        p = torch.cuda.get_device_properties(0)
        return f"{p.name} ({p.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, host {cpu_name()}"
    return f"{cpu_name()}, torch {torch.__version__}"


def where_mib() -> int:
    import torch

    return round(torch.cuda.get_device_properties(0).total_memory / 2**20)


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_device_mib(device: str) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None


class _Stop(Exception):
    """Raised from a progress callback when a stage reaches its time limit."""


def run_gptq(ckpt, config, tokens, *, device: str, limit_s: float) -> dict:
    """Random-Hadamard rotations + GPTQ on the bf16 checkpoint -> timings, peak memory, min SQNR."""
    import torch

    from edge.checkpoint import load_model
    from edge.core.machine import peak_rss_mb
    from edge.quant.ptq import GPTQInputs, quantize_model
    from edge.spinquant.rotations import hadamard_rotations

    model = load_model(ckpt, max_context=config.max_context, dtype=None)
    rot = hadamard_rotations(ckpt.args, seed=config.rotation.seed)
    gptq = GPTQInputs(
        tokens=tokens,
        damp=config.gptq.damp,
        act_order=config.gptq.act_order,
        float_targets=config.gptq.float_targets,
        device=device,
    )
    marks: list[float] = []
    reset_peak(device)
    t0 = time.monotonic()

    def show(done: int, total: int) -> None:
        marks.append(time.monotonic())
        print(f"  gptq {done}/{total} blocks {marks[-1] - t0:.1f}s", file=sys.stderr, flush=True)
        if marks[-1] - t0 > limit_s and done < total:
            raise _Stop

    report = None
    try:
        report = quantize_model(
            model,
            config.quantization,
            dtype=torch.float32,
            rotations=rot,
            online_hadamard=True,
            gptq=gptq,
            on_step=show,
        )
    except _Stop:
        pass
    wall = time.monotonic() - t0
    n = ckpt.args.n_layers
    return gptq_row(marks_s=[round(m - t0, 1) for m in marks], n_layers=n, finished=report is not None) | {
        "wall_s": round(wall, 1),
        "samples": int(tokens.shape[0]),
        "seq_len": int(tokens.shape[1]),
        "float_targets": config.gptq.float_targets,
        "peak_device_mib": peak_device_mib(device),
        "peak_host_rss_mib": round(peak_rss_mb()),
        "min_sqnr_db": {k: round(report.min_sqnr(k), 2) for k in ("self_attn", "mlp")} if report is not None else None,
    }


def gptq_row(*, marks_s: list[float], n_layers: int, finished: bool) -> dict:
    """Seconds from the start at each progress step (blocks, then output layer, then embedding) -> the row's times."""
    n = n_layers
    block_s = [b - a for a, b in zip([0.0, *marks_s[: n - 1]], marks_s[:n])]
    return {
        "marks_s": marks_s,
        "blocks_done": min(len(marks_s), n),
        "blocks": n,
        "finished": finished,
        "blocks_s": marks_s[n - 1] if len(marks_s) >= n else None,
        "block_s_median": round(statistics.median(block_s), 2),
        "first_block_s": round(block_s[0], 2),
        "output_layer_s": round(marks_s[n] - marks_s[n - 1], 1) if len(marks_s) > n else None,
        "embedding_s": round(marks_s[n + 1] - marks_s[n], 1) if len(marks_s) > n + 1 else None,
    }


def run_rotations(ckpt, config, tokens, *, device: str, steps: int, batch: int, limit_s: float) -> dict:
    """Cayley SGD on the float32 model -> timings, peak memory, loss before and after."""
    import torch

    from edge.checkpoint import load_model
    from edge.core.machine import peak_rss_mb
    from edge.spinquant.optimize import optimize_rotations, prepare_for_optimization
    from edge.spinquant.rotations import hadamard_rotations

    rot = config.rotation
    micro = (
        rot.micro_batch if rot.micro_batch and batch % rot.micro_batch == 0 else batch
    )  # the config's, when it divides
    model = load_model(ckpt, max_context=tokens.shape[1], dtype=torch.float32)
    prepare_for_optimization(model, online_hadamard=rot.online_hadamard)
    marks: list[float] = []

    def show(step: int, total: int, loss: float, tps: float) -> None:
        marks.append(time.monotonic())
        print(f"  rotations step {step}/{total} loss {loss:.4f} {tps:,.0f} tok/s", file=sys.stderr, flush=True)
        if marks[-1] - t0 > limit_s and step < total:
            raise _Stop

    reset_peak(device)
    t0 = time.monotonic()
    result = None
    try:
        result = optimize_rotations(
            model,
            tokens,
            init=hadamard_rotations(ckpt.args, seed=rot.seed),
            steps=steps,
            learning_rate=rot.learning_rate,
            batch_size=batch,
            micro_batch=micro,
            weight_bits=rot.weight_bits,
            loss=rot.loss,
            group_size=config.quantization.group_size,
            device=device,
            on_step=show,
        )
    except _Stop:
        pass
    wall = time.monotonic() - t0
    step_s = [b - a for a, b in zip(marks, marks[1:])]  # from the second step on (the first includes the warm-up)
    med = statistics.median(step_s) if step_s else wall
    p = result.provenance if result is not None else {}
    return {
        "wall_s": round(wall, 1),
        "steps": steps,
        "steps_done": len(marks),
        "finished": result is not None,
        "batch": batch,
        "micro_batch": micro,
        "seq_len": int(tokens.shape[1]),
        "step_s_median": round(med, 3),
        "tokens_per_s": round(batch * tokens.shape[1] / med),
        "peak_device_mib": peak_device_mib(device),
        "peak_host_rss_mib": round(peak_rss_mb()),
        "loss_before": p.get("loss_before"),
        "loss_after": p.get("loss_after"),
        "loss_windows": p.get("loss_windows"),
        "losses": p.get("losses"),
    }


def render(result: dict) -> str:
    mem = "peak GPU memory allocated" if result["device"] == "cuda" else "peak GPU memory"
    lines = [
        f"# SpinQuant's GPU stages at the Llama 3.2 {result['size'].upper()} shape (random weights)",
        "",
        f"Measured {result['date']} on {result['where']}; one run of each stage, one after the other in one process.",
        "",
        f"| stage | settings | wall time | per unit | {mem} | host peak RSS so far |",
        "|---|---|---|---|---|---|",
    ]
    if g := result["stages"].get("gptq"):
        parts = [
            f"{g['blocks_s']} s for all {g['blocks']} blocks"
            if g["blocks_s"] is not None
            else f"{g['blocks_done']} of {g['blocks']} blocks"
        ]
        parts += [f"output layer {g['output_layer_s']} s"] if g["output_layer_s"] is not None else []
        parts += [f"embedding {g['embedding_s']} s" if g["embedding_s"] is not None else "stopped before the embedding"]
        lines.append(
            f"| GPTQ (after Hadamard R1/R2 + R4) | {g['samples']} x {g['seq_len']} tokens, float targets "
            f"{'on' if g['float_targets'] else 'off'} | {'; '.join(parts)} | {g['block_s_median']} s per block "
            f"(first {g['first_block_s']} s) | {g['peak_device_mib']} MiB | {g['peak_host_rss_mib']} MiB |"
        )
    if r := result["stages"].get("rotations"):
        done = "" if r["finished"] else f" (stopped at the time limit after {r['steps_done']} of {r['steps']} steps)"
        lines.append(
            f"| rotation optimization (Cayley SGD, R1 + R2) | {r['steps']} steps x {r['batch']} x {r['seq_len']} tokens"
            f"{', one window per pass' if r.get('micro_batch', r['batch']) < r['batch'] else ''} | "
            f"{r['wall_s']} s{done} | {r['step_s_median']} s per step, {r['tokens_per_s']:,} tok/s | "
            f"{r['peak_device_mib']} MiB | {r['peak_host_rss_mib']} MiB |"
        )
    if oom := result.get("rotations_out_of_memory"):
        lines += [
            "",
            f"Rotation optimization with {oom['batch']} windows of {oom['seq_len']} tokens in one pass "
            "ran out of the GPU's "
            f"{oom['gpu_mib']} MiB; the row above is one window per step, the per-GPU batch of Meta's 8-GPU recipe "
            "(the shipped configs now pass one window at a time and sum the gradients: `rotation.micro_batch: 1`).",
        ]
    if g and g["min_sqnr_db"]:
        lines += [
            "",
            f"GPTQ's lowest weight SQNR: attention {g['min_sqnr_db']['self_attn']} dB, "
            f"FFN {g['min_sqnr_db']['mlp']} dB.",
        ]
    if r and r["finished"]:
        lines += [
            "",
            f"Rotation loss (cross-entropy with 8-bit activations, {r['loss_windows']} fixed windows "
            "of random tokens): "
            f"{r['loss_before']} before, {r['loss_after']} after. "
            "Random weights and tokens: this shows the optimizer ran, not quality.",
        ]
    lines += [
        "",
        "float32 matmuls as torch does them by default (no TF32). "
        "The wall times include the host-side work of each stage (folding rotations in float64 block by block, "
        "moving blocks to the GPU, rounding the output layer and embedding on the host) "
        "but not loading the checkpoint.",
        *(["", result["note"]] if result.get("note") else []),
        "",
        f"Reproduce: `{result['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    ap.add_argument("--size", default="1b", choices=["1b", "tiny"], help="tiny: a 2-layer shape for a smoke run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--results", type=Path, default=RESULTS)
    ap.add_argument("--stages", nargs="+", default=["gptq", "rotations"], choices=["gptq", "rotations"])
    ap.add_argument("--gptq-samples", type=int, help="default: the config's (128)")
    ap.add_argument("--rotation-steps", type=int, help="default: the config's (100)")
    ap.add_argument("--rotation-batch", type=int, help="default: the config's (8)")
    ap.add_argument(
        "--rotation-micro-batch",
        type=int,
        default=1,
        help="windows per forward/backward (the config's: 1; 0: the whole batch)",
    )
    ap.add_argument("--seq-len", type=int, help="default: the config's calibration.seq_len (2048)")
    ap.add_argument(
        "--time-limit",
        type=float,
        default=240.0,
        help="seconds per stage: a stage past it stops after its current block or step and reports what it measured",
    )
    ns = ap.parse_args()

    import torch

    from edge.checkpoint import open_checkpoint
    from edge.config import load_config
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    if ns.device == "cuda" and not torch.cuda.is_available():
        sys.exit("error: --device cuda: no CUDA GPU is visible to torch here")
    config = load_config(
        config="llama3_2_1b_spinquant",
        overrides={"device": ns.device, "rotation": {"micro_batch": ns.rotation_micro_batch}},
    )
    seq = ns.seq_len or config.calibration.seq_len
    steps = ns.rotation_steps or config.rotation.steps
    batch = ns.rotation_batch or config.rotation.batch_size
    n_gptq = ns.gptq_samples or config.gptq.samples
    ckpt_dir = ns.work / f"llama3_2_{ns.size}_random_no_tokenizer"
    print(f"writing random {ns.size} checkpoint to {ckpt_dir}", file=sys.stderr, flush=True)
    write_random_meta_checkpoint(ckpt_dir, PARAMS[ns.size], tokenizer=False)
    ckpt = open_checkpoint(ckpt_dir)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, ckpt.args.vocab_size, (max(n_gptq, steps * batch), seq), generator=gen)

    argv = " ".join(sys.argv[1:])
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": ns.size,
        "device": ns.device,
        "where": where(ns.device),
        "python": platform.python_version(),
        "stages": {},
        "command": f"python benchmarks/spinquant_gpu_1b.py {argv}".strip(),
    }
    ns.results.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        (ns.results / "spinquant_gpu_1b.json").write_text(json.dumps(result, indent=2) + "\n")
        (ns.results / "spinquant_gpu_1b.md").write_text(render(result))

    for stage in ns.stages:
        print(f"stage {stage}", file=sys.stderr, flush=True)
        if stage == "gptq":
            result["stages"]["gptq"] = run_gptq(ckpt, config, tokens[:n_gptq], device=ns.device, limit_s=ns.time_limit)
        else:
            try:
                row = run_rotations(
                    ckpt,
                    config,
                    tokens[: steps * batch],
                    device=ns.device,
                    steps=steps,
                    batch=batch,
                    limit_s=ns.time_limit,
                )
            except (
                torch.cuda.OutOfMemoryError
            ):  # the GPU's own limit, recorded; then the per-GPU batch of Meta's 8-GPU recipe
                result["rotations_out_of_memory"] = {"batch": batch, "seq_len": seq, "gpu_mib": where_mib()}
                row = None
            if row is None:  # outside the except: the failed attempt's tensors are freed with its traceback
                print(f"  out of memory at batch {batch}: again with batch 1", file=sys.stderr, flush=True)
                torch.cuda.empty_cache()
                row = run_rotations(
                    ckpt, config, tokens[:steps], device=ns.device, steps=steps, batch=1, limit_s=ns.time_limit
                )
            result["stages"]["rotations"] = row
        print(json.dumps(result["stages"][stage]), file=sys.stderr, flush=True)
        save()
        if ns.device == "cuda":
            torch.cuda.empty_cache()
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
