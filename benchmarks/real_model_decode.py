"""What R4 and float LoRA adapters cost per token on the real model: size, decode and prefill of its programs.

In:  the .pte files that benchmarks/real_model_quality.py lowered (`--pte-rows ptq had_gptq qat_lora`, in
     --work/grid/<row>/model.pte, each with its tokenizer beside it).
Out: benchmarks/results/real_model_decode.{md,json}: per program, its size and its host decode and prefill speed
     (`python -m android_bench --host`, the runner the phone tables use), and per round
     the share of decode and prefill time each addition takes, against plain PTQ's program of the same model:
     1 - speed(row) / speed(PTQ). Each round runs every program in a rotated order, so drift on a shared machine
     falls on each alike; a round's ratio is measured within that round.

    python benchmarks/real_model_decode.py [--rounds 3] [--repetitions 3]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
# (row of real_model_quality.py, label, what it adds to PTQ's program or None for the baseline)
PROGRAMS = [
    ("ptq", "8da4w PTQ", None),
    ("had_gptq", "Hadamard R1/R2/R4 + GPTQ", "R4: an online Hadamard on each down_proj input"),
    ("qat_lora", "QAT + LoRA, adapters kept float", "rank-16 fp32 adapters on q, k, v, o, gate, up and down"),
]
METRICS = {"decode": "decode_tok_s_median", "prefill": "prefill_tok_s_median"}


def bench_round(paths: dict[str, Path], order: list[str], ns) -> dict[str, dict]:
    """One android_bench run of the programs in `order` -> {row: {phase: the repetitions' median tok/s}}."""
    cmd = [sys.executable, "-m", "android_bench", "--host", "--format", "csv", "--quiet", "--baseline", "ptq"]
    for flag in ("prompt_tokens", "max_new_tokens", "threads", "repetitions", "warmup"):
        cmd += [f"--{flag.replace('_', '-')}", str(getattr(ns, flag))]
    for key in order:
        cmd += ["--pte", str(paths[key]), "--label", key]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"error: android_bench failed: {(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    speeds = {r["label"]: {ph: r[col] for ph, col in METRICS.items()} for r in csv.DictReader(io.StringIO(proc.stdout))}
    if any(v == "" for row in speeds.values() for v in row.values()):  # a phase shorter than the runner's 1 ms clock
        raise SystemExit("error: a phase ran under the runner's 1 ms clock: give more --prompt-tokens/--max-new-tokens")
    return {label: {ph: float(v) for ph, v in row.items()} for label, row in speeds.items()}


def shares(rounds: list[dict[str, dict]]) -> dict[str, dict[str, list[float]]]:
    """Rounds of {row: {phase: tok/s}} -> {row: {phase: per round, 1 - speed(row) / speed(ptq)}}: the share of that
    phase's time the row's addition takes, each ratio from one round."""
    out = {}
    for key, _, adds in PROGRAMS:
        if adds is not None:
            out[key] = {phase: [1 - r[key][phase] / r["ptq"][phase] for r in rounds] for phase in METRICS}
    return out


def render(results: dict) -> str:
    """The results JSON -> the markdown page; every number comes from `results`."""
    s = results["settings"]
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in s.items())
    lines = [
        "# What R4 and float adapters cost per token on the real model (SmolLM2-135M-Instruct, grid)",
        "",
        f"Measured {results['measured']} on {results['machine']} with `python -m android_bench --host` (ExecuTorch's "
        f"runner through the pip wheel, XNNPACK, {s['threads']} threads): prompt {s['prompt_tokens']} tokens, "
        f"{s['max_new_tokens']} new, "
        f"{s['rounds']} rounds of {s['repetitions']} runs per program (after {s['warmup']} warm-up), the programs' "
        "order rotated from round to round. Speeds: the median over the rounds of each round's median.",
        "",
        "| program | .pte MiB | decode tok/s | prefill tok/s | adds to PTQ's program | share of decode time "
        "| share of prefill time |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, label, adds in PROGRAMS:
        p = results["programs"][key]
        cells = ["—", "—"]
        if adds is not None:
            cells = [_share(results["shares"][key][phase]) for phase in ("decode", "prefill")]
        lines.append(
            f"| {label} | {p['pte_mib']:.2f} | {p['decode_tok_s']:.1f} | {p['prefill_tok_s']:.1f} | {adds or '—'} "
            f"| {cells[0]} | {cells[1]} |"
        )
    lines += [
        "",
        "Share of time: 1 - speed(program) / speed(PTQ's program), one ratio per round; the median, with the rounds' "
        "range. A negative share means the program ran faster than PTQ's in that round: the machine's noise is larger "
        "than the addition there.",
        "",
        f"Reproduce: `python benchmarks/real_model_quality.py --pte-rows ptq had_gptq qat_lora ...` (the page's own "
        f"command), then `python benchmarks/real_model_decode.py {flags}`",
    ]
    return "\n".join(lines) + "\n"


def _share(values: list[float]) -> str:
    return f"{statistics.median(values):.1%} [{min(values):.1%} to {max(values):.1%}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="android_bench runs, each program in a rotated order")
    ap.add_argument("--repetitions", type=int, default=3, help="measured runs per program and round")
    ap.add_argument("--warmup", type=int, default=1, help="unmeasured runs per program and round, first")
    ap.add_argument("--prompt-tokens", type=int, default=64)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="the runner's --cpu_threads")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "real_model", help="real_model_quality.py's --work")
    ap.add_argument("--results", type=Path, default=RESULTS / "real_model_decode")
    ns = ap.parse_args()
    paths = {key: ns.work / "grid" / key / "model.pte" for key, _, _ in PROGRAMS}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing or ns.rounds < 1 or ns.repetitions < 1:
        print(
            f"error: {'missing ' + ', '.join(missing) if missing else '--rounds and --repetitions must be positive'}"
            " (lower them with: python benchmarks/real_model_quality.py --pte-rows ptq had_gptq qat_lora ...)",
            file=sys.stderr,
        )
        return 2
    sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/common.py, as the product benchmarks import it
    from common import write_table

    from edge.core.machine import cpu_name

    keys, rounds = [k for k, _, _ in PROGRAMS], []
    for i in range(ns.rounds):
        order = keys[i % len(keys) :] + keys[: i % len(keys)]
        print(f"round {i + 1}/{ns.rounds}: {' '.join(order)}", file=sys.stderr, flush=True)
        rounds.append(bench_round(paths, order, ns))
    programs = {
        k: {
            "pte_mib": round(paths[k].stat().st_size / 2**20, 2),
            **{f"{ph}_tok_s": statistics.median(r[k][ph] for r in rounds) for ph in METRICS},
            "rounds": [r[k] for r in rounds],
        }
        for k in keys
    }
    results = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()} ({os.cpu_count()} cores)",
        "settings": {
            k: getattr(ns, k) for k in ("rounds", "repetitions", "warmup", "threads", "prompt_tokens", "max_new_tokens")
        },
        "programs": programs,
        "shares": shares(rounds),
    }
    write_table(ns.results.parent, ns.results.name, results, render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
