"""Run .pte files through ExecuTorch's runtime on this machine's kernels: the same script natively (x86) and under
qemu-aarch64, so the two sides differ only in the kernels.

usage: python guest.py JOB.json OUT.npz
In:  JOB {"programs": {name: .pte path}, "prompt": [ids], "greedy": n, "windows": [[ids], ...], "threads": t}.
Out: OUT.npz with, per program name N:
       N.prompt   [P, V]    logits at each prompt position, teacher-forced one token per call (the decode path)
       N.greedy   [n]       greedy tokens after the prompt (one prefill, then decode)
       N.windows  [W, C, V] logits of each held-out window, as `edge.evaluate` computes them
     and "machine" (platform.machine()), "seconds" (per program).
Imports only torch, numpy, executorch and edge's runtime wrapper (pure Python), which the emulated root has.
"""

from __future__ import annotations

import json
import platform
import sys
import time

import numpy as np
import torch


def run_program(path: str, job: dict) -> dict[str, np.ndarray]:
    """One .pte and the job's token ids -> its prompt logits, greedy tokens and window logits."""
    from edge.evaluate.core import pte_window_logits, returns_full_logits
    from edge.evaluate.pte_model import load_pte

    pte = load_pte(path)
    prompt = job["prompt"]
    with torch.no_grad():
        teacher = pte_window_logits(pte, prompt, full_logits=False)  # [P, V]: one call per position
        greedy = pte.greedy(prompt, max_new_tokens=job["greedy"])
        full = returns_full_logits(pte, probe_token=prompt[0])
        windows = [pte_window_logits(pte, w, full_logits=full) for w in job["windows"]]
    return {
        "prompt": teacher.numpy().astype(np.float32),
        "greedy": np.array(greedy, dtype=np.int64),
        "windows": np.stack([w.numpy().astype(np.float32) for w in windows]) if windows else np.zeros((0,)),
    }


def main(job_path: str, out_path: str) -> int:
    """JOB.json, OUT.npz -> exit 0 after writing every program's arrays."""
    job = json.loads(open(job_path).read())
    torch.set_num_threads(job.get("threads", 1))
    arrays: dict[str, np.ndarray] = {"machine": np.array(platform.machine())}
    seconds = {}
    for name, path in job["programs"].items():
        t0 = time.perf_counter()
        for key, value in run_program(path, job).items():
            arrays[f"{name}.{key}"] = value
        seconds[name] = round(time.perf_counter() - t0, 2)
        print(f"{platform.machine()}: {name} in {seconds[name]} s", file=sys.stderr, flush=True)
    arrays["seconds"] = np.array(json.dumps(seconds))
    np.savez(out_path, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
