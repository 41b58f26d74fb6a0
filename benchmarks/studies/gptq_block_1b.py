"""GPTQ on one Llama 3.2 1B-shaped transformer block on this CPU: wall time, and where it goes.

In:  nothing (a random block: dim 2048, FFN 8192, 32/8 heads, weights N(0, 0.02), inputs N(0, 1)).
Out: stdout: `edge.quant.gptq.gptq_block`'s wall time for --windows x --seq-len calibration tokens (the 1B
     SpinQuant benchmark's 8 x 512 by default), then cProfile's top entries (--profile).

    python benchmarks/studies/gptq_block_1b.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=512)
    ap.add_argument("--profile", action="store_true")
    ns = ap.parse_args()
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    import torch

    import edge.quant.gptq as G
    from edge.checkpoint import FIXTURE_CHECKPOINT, open_checkpoint
    from edge.model import AttentionPath, TransformerBlock, rope_tables

    torch.manual_seed(0)
    args = dataclasses.replace(
        open_checkpoint(FIXTURE_CHECKPOINT).args,
        dim=2048,
        hidden_dim=8192,
        n_heads=32,
        n_kv_heads=8,
        head_dim=64,
        n_layers=1,
    )
    block = TransformerBlock(args, ns.seq_len)
    block.self_attn.path = AttentionPath.SEQUENCE
    for m in block.modules():
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.02)
    x = torch.randn(ns.windows, ns.seq_len, args.dim)
    cos, sin = rope_tables(args, ns.seq_len)
    prof = cProfile.Profile() if ns.profile else None
    t0 = time.monotonic()
    if prof:
        prof.enable()
    G.gptq_block(block, x, cos=cos, sin=sin, group_size=32, damp=0.01, batch=1)
    if prof:
        prof.disable()
    print(
        f"GPTQ, one 1B-shaped block, {ns.windows} x {ns.seq_len} tokens, {torch.get_num_threads()} threads: "
        f"{time.monotonic() - t0:.1f} s",
        flush=True,
    )
    if prof:
        pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
