"""Arm check: every shipped fixture export run on ExecuTorch's aarch64 kernels (emulated) against x86, in one run.

In:  the fixture exports `benchmarks/host_tables.py` writes (--exports, default out/host_tables: bf16, 8da4w,
     SpinQuant with and without R4, QAT + LoRA); the emulated runtime (`arm_emulation.sysroot`, cached in
     --cache, default $EDGE_ARM_CACHE or ~/.cache/edge-arm); the fixture's held-out text.
Out: artifacts/arm_check.md and .json: per export and emulated core (--cores, default neoverse-n1: dotprod only,
     as Cortex-A76/A78; max: i8mm, as Cortex-X and A7xx since Armv8.6), against the same program on x86:
       * SQNR of the logits at 32 teacher-forced positions, argmax agreement there, mean KL(x86 || Arm);
       * 16 greedy tokens identical or not;
       * edge.evaluate's scoring (perplexity, top-1, KL against the float model) on --windows held-out windows,
         the x86 and Arm programs side by side.
     Exit 1 when an export breaks a rule (the failure names export, core and numbers), 2 for bad input or setup:
       * no dynamic int8 activations (bf16): SQNR >= 100 dB (measured: bit-identical);
       * 8-bit dynamic activations (8da4w, SpinQuant, QAT + LoRA): SQNR >= 30 dB, at most 1 argmax miss in 32, and
         KL(x86 || Arm) under a tenth of the export's KL to the float model. x86 XNNPACK rounds an activation that
         lands exactly on .5 to even and Arm's KleidiAI away from zero, and both machines' float results differ in
         the last bit, so every such program takes one activation a step apart at some position, and from there
         on the logits differ at the 35 dB level (first run, 2026-12-06: 34.7-35.9 dB over 32 positions, rotated
         or not); docs/arm.md has the measurements.
Both sides run `arm_emulation/guest.py`, the same code; under emulation one process per core runs every program.

    python benchmarks/host_tables.py && python benchmarks/arm_check.py
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from arm_emulation import sysroot

ROOT = Path(__file__).resolve().parent.parent
PROGRAMS = ("fixture_bf16", "fixture_8da4w", "fixture_spinquant", "fixture_spinquant_no_r4", "fixture_qat_lora")
PROMPT, GREEDY = 32, 16
RULES = {
    "float_min_sqnr_db": 100.0,
    "dynamic_min_sqnr_db": 30.0,
    "dynamic_max_argmax_misses": 1,
    "dynamic_max_kl_share": 0.1,
}


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, err = ref.astype(np.float64), ref.astype(np.float64) - got.astype(np.float64)
    noise = float((err**2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((ref**2).sum()) / noise)


def make_job(exports: Path, windows: int, context: int) -> dict:
    """The token ids both sides run: the held-out text's first 32 tokens, and `windows` windows of `context`."""
    import torch  # noqa: F401  (edge's tokenizer loader needs it loaded first)

    from edge.checkpoint import FIXTURE_CHECKPOINT, open_checkpoint
    from edge.checkpoint.tokenizer import load_tokenizer
    from edge.core.quiet import native_stderr_filtered
    from edge.evaluate.core import tokenize_windows

    ckpt = open_checkpoint(FIXTURE_CHECKPOINT)
    text = (FIXTURE_CHECKPOINT / "heldout.txt").read_text(encoding="utf-8")
    with native_stderr_filtered():  # the runner's tokenizer library logs from C++ as it compiles its regex
        tokenizer = load_tokenizer(ckpt.tokenizer)
    prompt = [ckpt.bos_id] + tokenizer.encode(text[:4000], bos=False, eos=False)[: PROMPT - 1]
    return {
        "programs": {name: str(exports / name / "model.pte") for name in PROGRAMS},
        "prompt": prompt,
        "greedy": GREEDY,
        "windows": tokenize_windows(text, tokenizer=tokenizer, bos_id=ckpt.bos_id, context=context)[:windows],
        "threads": 1,
    }


def run_side(cmd: list[str], env: dict | None, log: Path) -> float:
    """One guest process -> its wall time; RuntimeError with the log's tail if it fails."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-3:]
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {code}: " + " | ".join(tail))
    return time.monotonic() - t0


def reference_logits(job: dict, context: int):
    """The float fixture's logits for each window (what edge.evaluate compares a program with)."""
    import torch

    from edge.checkpoint import FIXTURE_CHECKPOINT, load_model, open_checkpoint
    from edge.model import AttentionPath

    model = load_model(open_checkpoint(FIXTURE_CHECKPOINT), max_context=context, dtype=torch.float32, full_logits=True)
    model.set_attention_path(AttentionPath.SEQUENCE)
    with torch.no_grad():
        return [model(torch.tensor([w]), torch.tensor([0]))[0].float() for w in job["windows"]]


def scores(windows: np.ndarray, ref: list, job: dict) -> dict:
    """A program's window logits -> perplexity, top-1 agreement and mean KL against the float model."""
    import torch

    from edge.evaluate.metrics import compare_logits

    nll = kl = agree = count = 0.0
    for i, window in enumerate(job["windows"]):
        targets = torch.tensor(window[1:])
        s = compare_logits(ref[i][:-1], torch.from_numpy(windows[i][:-1]), targets)
        nll, kl, agree, count = nll + s.nll_got, kl + s.kl, agree + s.agree, count + len(targets)
    return {"perplexity": math.exp(nll / count), "top1": agree / count, "mean_kl": kl / count}


def compare(x86: np.lib.npyio.NpzFile, arm: np.lib.npyio.NpzFile, name: str) -> dict:
    """Two sides' arrays for one program -> SQNR, argmax agreement, mean KL (teacher-forced), greedy agreement."""
    import torch

    from edge.evaluate.metrics import compare_logits

    a, b = x86[f"{name}.prompt"], arm[f"{name}.prompt"]
    s = compare_logits(torch.from_numpy(a), torch.from_numpy(b), torch.from_numpy(a.argmax(-1)))
    same = x86[f"{name}.greedy"] == arm[f"{name}.greedy"]
    return {
        "sqnr_db": sqnr_db(a, b),
        "argmax_agree": int((a.argmax(-1) == b.argmax(-1)).sum()),
        "positions": len(a),
        "mean_kl": s.kl / len(a),
        "greedy_identical": bool(same.all()),
        "greedy_first_diff": int(np.argmin(same)) if not same.all() else None,
    }


def manifest_facts(exports: Path, name: str) -> dict:
    """An export's manifest -> {"rotated": SpinQuant rotations, "dynamic": 8-bit dynamic activations}."""
    config = json.loads((exports / name / "manifest.json").read_text())["config"]
    return {"rotated": config["rotation"]["kind"] != "none", "dynamic": config["quantization"]["linear"] != "none"}


def check(row: dict, *, dynamic: bool, kl_to_float: float) -> list[str]:
    """One export on one core -> the rules it breaks, each naming the numbers."""
    where = f"{row['program']} on {row['core']}"
    if not dynamic:
        floor = RULES["float_min_sqnr_db"]
        ok = row["sqnr_db"] >= floor
        return [] if ok else [f"{where}: SQNR {row['sqnr_db']:.1f} dB against x86 is under {floor:.0f} dB"]
    bad = []
    if row["sqnr_db"] < RULES["dynamic_min_sqnr_db"]:
        bad.append(f"{where}: SQNR {row['sqnr_db']:.1f} dB against x86 is under {RULES['dynamic_min_sqnr_db']:.0f} dB")
    if row["positions"] - row["argmax_agree"] > RULES["dynamic_max_argmax_misses"]:
        bad.append(f"{where}: {row['positions'] - row['argmax_agree']} argmax misses in {row['positions']} positions")
    if row["mean_kl"] >= RULES["dynamic_max_kl_share"] * kl_to_float:
        bad.append(
            f"{where}: KL(x86 || Arm) {row['mean_kl']:.2e} is not under a tenth of its KL to the float model "
            f"({kl_to_float:.2e})"
        )
    return bad


def render(result: dict) -> str:
    """The result -> artifacts/arm_check.md."""
    lines = [
        "# Arm check: fixture exports on ExecuTorch's aarch64 kernels (qemu-user) against x86",
        "",
        f"Measured {result['date']} on {result['machine']} (x86 side) and qemu-aarch64 "
        f"{', '.join(result['cores'])} (Arm side), executorch {result['executorch']}. Setup {result['setup_s']:.0f} s, "
        f"x86 run {result['x86_s']:.0f} s, emulated runs {result['arm_s']:.0f} s.",
        "",
        "| export | core | rotated | SQNR vs x86 | argmax (32 teacher-forced) | mean KL(x86‖Arm) | 16 greedy tokens |"
        " pass |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        greedy = "identical" if r["greedy_identical"] else f"differ from token {r['greedy_first_diff'] + 1}"
        lines.append(
            f"| {r['program']} | {r['core']} | {'yes' if r['rotated'] else 'no'} | {r['sqnr_db']:.1f} dB | "
            f"{r['argmax_agree']}/{r['positions']} | {r['mean_kl']:.2e} | {greedy} | "
            f"{'yes' if not r['failures'] else 'NO'} |"
        )
    lines += [
        "",
        f"## edge.evaluate's scoring on Arm ({result['windows']} held-out windows of {result['context']} "
        "tokens, against the float fixture)",
        "",
        "| export | side | perplexity | top-1 | mean KL |",
        "|---|---|---|---|---|",
    ]
    for name, sides in result["quality"].items():
        for side, q in sides.items():
            lines.append(f"| {name} | {side} | {q['perplexity']:.3f} | {q['top1']:.2%} | {q['mean_kl']:.5f} |")
    rules = result["rules"]
    lines += [
        "",
        f"Rules: no dynamic int8 activations (bf16), SQNR >= {rules['float_min_sqnr_db']:.0f} dB; 8-bit dynamic "
        f"activations, SQNR >= {rules['dynamic_min_sqnr_db']:.0f} dB, at most {rules['dynamic_max_argmax_misses']} "
        f"argmax miss in 32, KL(x86‖Arm) < {rules['dynamic_max_kl_share']} x the export's KL to the float model "
        "(why: docs/arm.md).",
        "",
        "Reproduce: `python benchmarks/host_tables.py && python benchmarks/arm_check.py`",
    ]
    if result["failures"]:
        lines += ["", "## Failures", ""] + [f"- {f}" for f in result["failures"]]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--exports", type=Path, default=ROOT / "out" / "host_tables", help="default out/host_tables")
    p.add_argument("--cache", type=Path, default=sysroot.default_cache(), help="emulated runtime cache")
    p.add_argument("--cores", default="neoverse-n1,max", help="qemu CPU models (default neoverse-n1,max)")
    p.add_argument("--windows", type=int, default=8, help="held-out windows scored on each side (default 8)")
    p.add_argument("--context", type=int, default=64, help="tokens per window (default 64)")
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    return p.parse_args(argv)


def run_all(ns: argparse.Namespace, emulator: sysroot.Emulator, work: Path) -> tuple[dict, dict]:
    """-> (the job, {side: (npz, seconds)}) after the x86 run and one emulated run per core (run side by side)."""
    job = make_job(ns.exports, ns.windows, ns.context)
    (work / "job.json").write_text(json.dumps(job))
    guest = str(Path(__file__).resolve().parent / "arm_emulation" / "guest.py")
    x86 = [sys.executable, guest, str(work / "job.json"), str(work / "x86.npz")]
    sides = {"x86": (x86, None)} | {
        core: (emulator.command(core, [guest, str(work / "job.json"), str(work / f"{core}.npz")]), emulator.env([ROOT]))
        for core in ns.cores.split(",")
    }
    print(f"running {len(PROGRAMS)} programs on x86 and under qemu-aarch64 ({ns.cores})", file=sys.stderr, flush=True)
    with ThreadPoolExecutor(max_workers=len(sides)) as pool:
        futures = {s: pool.submit(run_side, cmd, env, work / f"{s}.log") for s, (cmd, env) in sides.items()}
        seconds = {s: f.result() for s, f in futures.items()}
    return job, {s: (np.load(work / f"{s}.npz"), seconds[s]) for s in sides}


def main(argv: list[str] | None = None) -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ns = parse_args(argv)
    missing = [n for n in PROGRAMS if not (ns.exports / n / "model.pte").is_file()]
    if missing:
        print(
            f"error: {ns.exports} lacks {', '.join(missing)}: run python benchmarks/host_tables.py first",
            file=sys.stderr,
        )
        return 2
    t0 = time.monotonic()
    try:
        emulator = sysroot.ensure(ns.cache)
    except sysroot.SetupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    setup_s = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="arm_check_") as tmp:
        job, sides = run_all(ns, emulator, Path(tmp))
        result = summarize(ns, job, sides, setup_s=setup_s)
    ns.artifacts.mkdir(parents=True, exist_ok=True)
    (ns.artifacts / "arm_check.json").write_text(json.dumps(result, indent=2) + "\n")
    (ns.artifacts / "arm_check.md").write_text(render(result))
    print(render(result))
    for failure in result["failures"]:
        print(f"error: Arm check: {failure}", file=sys.stderr)
    return 1 if result["failures"] else 0


def summarize(ns: argparse.Namespace, job: dict, sides: dict, *, setup_s: float) -> dict:
    """Job and both sides' arrays -> the result: rows per export and core, quality side by side, failures."""
    from importlib import metadata

    from edge.core.machine import cpu_name

    ref = reference_logits(job, ns.context)
    x86 = sides["x86"][0]
    cores = [c for c in sides if c != "x86"]
    quality = {
        n: {"x86": scores(x86[f"{n}.windows"], ref, job)}
        | {f"Arm {c}": scores(sides[c][0][f"{n}.windows"], ref, job) for c in cores}
        for n in PROGRAMS
    }
    rows, failures = [], []
    for name in PROGRAMS:
        for core in cores:
            row = (
                {"program": name, "core": core} | manifest_facts(ns.exports, name) | compare(x86, sides[core][0], name)
            )
            row["failures"] = check(row, dynamic=row["dynamic"], kl_to_float=quality[name]["x86"]["mean_kl"])
            failures += row["failures"]
            rows.append(row)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": cpu_name(),
        "cores": cores,
        "executorch": metadata.version("executorch"),
        "setup_s": setup_s,
        "x86_s": sides["x86"][1],
        "arm_s": max(sides[c][1] for c in cores),
        "windows": len(job["windows"]),
        "context": ns.context,
        "rules": RULES,
        "rows": rows,
        "quality": quality,
        "failures": failures,
    }


if __name__ == "__main__":
    sys.exit(main())
