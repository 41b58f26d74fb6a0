"""Study: how x86 XNNPACK and Arm KleidiAI round int8 dynamic activations, and where rotated programs meet ties.

In:  the fixture checkpoint; the emulated aarch64 runtime of `arm_check.py` (`arm_emulation.sysroot`, cached).
Out: benchmarks/results/arm_rounding.md. A probe program (an RMSNorm with unit weight, as SpinQuant folds it, then
     an 8da4w linear with identity int4 weights, so each output is the kernel's own dequantize(quantize(input)))
     runs on x86 and under qemu-aarch64 (-cpu max and neoverse-n1) on two inputs: the fixture's int8 embedding rows
     of the held-out text's first tokens (what layer 0 of a rotated program quantizes) and Gaussian rows. From each
     side's outputs the int8 integers are recovered and compared with two rounding rules applied in numpy to the
     side's own RMSNorm output (the float input its quantizer saw): round-half-even(x * scale) and
     round-half-away(x * scale).

    python benchmarks/arm_rounding.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
TOKENS, DIM_GAUSS = 64, 128
F = np.float32


def run_probe(pte: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probe .pte, {name: rows [N, D]} -> {name.normed: RMSNorm output, name.quantized: dequantize(quantize(it))};
    ExecuTorch runtime only (this runs under emulation)."""
    import torch
    from executorch.runtime import Runtime

    method = Runtime.get().load_program(pte).load_method("forward")
    out = {}
    for k, v in inputs.items():
        normed, quantized = method.execute([torch.from_numpy(v[None])])
        out[f"{k}.normed"], out[f"{k}.quantized"] = normed[0].numpy(), quantized[0].numpy()
    return out


def build_probe(dim: int, path: Path) -> None:
    """A probe program for width `dim`: x [1, N, dim] -> identity 8da4w linear of RMSNorm(x) (unit weight)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import EdgeCompileConfig, to_edge_transform_and_lower
    from torch import nn

    from edge.config import WeightBits
    from edge.model import RMSNorm
    from edge.quant.scheme import intx_tensor_from_integers

    class Probe(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.norm = RMSNorm(dim, 1e-5)
            self.linear = nn.Linear(dim, dim, bias=False)
            eye = intx_tensor_from_integers(
                torch.eye(dim, dtype=torch.int8), torch.ones(dim, dim // 32), bits=WeightBits.INT4
            )
            self.linear.weight = nn.Parameter(eye, requires_grad=False)

        def forward(self, x):
            n = self.norm(x)
            return n, self.linear(n)

    probe = Probe().eval()
    with torch.no_grad():
        ep = torch.export.export(probe, (torch.randn(1, TOKENS, dim),), strict=False)
    lowered = to_edge_transform_and_lower(
        ep, partitioner=[XnnpackPartitioner()], compile_config=EdgeCompileConfig(_check_ir_validity=False)
    )
    path.write_bytes(lowered.to_executorch().buffer)


def inputs() -> dict[str, np.ndarray]:
    """-> {"embedding rows": the fixture's dequantized int8 embedding rows of the held-out text's first tokens,
    "gaussian rows": a seeded control}, each [TOKENS, D]."""
    import torch

    from edge.checkpoint import FIXTURE_CHECKPOINT, load_model, open_checkpoint
    from edge.checkpoint.tokenizer import load_tokenizer
    from edge.config import QuantizationConfig, WeightBits
    from edge.quant.ptq import quantize_model

    ckpt = open_checkpoint(FIXTURE_CHECKPOINT)
    model = load_model(ckpt, max_context=TOKENS, dtype=torch.float32)
    quantize_model(model, QuantizationConfig(embedding=WeightBits.INT8), dtype=torch.float32)
    text = (FIXTURE_CHECKPOINT / "heldout.txt").read_text(encoding="utf-8")
    ids = [ckpt.bos_id] + load_tokenizer(ckpt.tokenizer).encode(text[:4000], bos=False, eos=False)[: TOKENS - 1]
    with torch.no_grad():
        rows = model.embed_tokens(torch.tensor(ids)).float().numpy()
    gauss = np.random.default_rng(0).standard_normal((TOKENS, rows.shape[1])).astype(F)
    return {"embedding rows": rows.astype(F), "gaussian rows": gauss}


def quant_params(row: np.ndarray) -> tuple[np.float32, int]:
    """XNNPACK/KleidiAI's per-token asymmetric int8 parameters for one row: (scale as 255 / range, zero point)."""
    lo, hi = F(min(row.min(), 0)), F(max(row.max(), 0))
    scale = F(255) / F(hi - lo)
    dmin, dmax = F(lo * scale), F(hi * scale)
    zp = (F(-128) - dmin) if F(F(-128 + dmin) + F(127 + dmax)) > 0 else (F(127) - dmax)
    return scale, int(np.rint(np.clip(zp, -128, 127)))


def compare(normed: np.ndarray, outputs: np.ndarray) -> dict:
    """One side's RMSNorm outputs (the float input its quantizer saw) and its dequantized outputs -> exact ties and
    mismatches of each rounding rule."""
    counts = {"elements": 0, "exact ties": 0, "half-even mismatches": 0, "half-away mismatches": 0}
    for row_in, y in zip(normed, outputs):
        scale, zp = quant_params(row_in)
        v = (row_in * scale).astype(F)
        got = np.rint(y.astype(np.float64) * scale) + zp  # identity weights: y = (q - zp) / scale
        counts["elements"] += v.size
        counts["exact ties"] += int((np.abs(v - np.floor(v)) == 0.5).sum())
        counts["half-even mismatches"] += int((np.clip(np.rint(v) + zp, -128, 127) != got).sum())
        away = np.sign(v) * np.floor(np.abs(v) + F(0.5))
        counts["half-away mismatches"] += int((np.clip(away + zp, -128, 127) != got).sum())
    return counts


def main() -> int:
    from arm_emulation import sysroot

    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    emulator = sysroot.ensure(sysroot.default_cache())
    data = inputs()
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, x in data.items():
            pte = Path(tmp) / f"probe{x.shape[1]}.pte"
            if not pte.exists():
                build_probe(x.shape[1], pte)
        np.savez(Path(tmp) / "in.npz", **{k: v for k, v in data.items()})
        sides = {"x86": probe_all(tmp, data)}
        for cpu in ("max", "neoverse-n1"):
            out = Path(tmp) / f"{cpu}.npz"
            cmd = emulator.command(cpu, [__file__, "--guest", tmp, str(out)])
            subprocess.run(cmd, env=emulator.env([ROOT, ROOT / "benchmarks"]), check=True, capture_output=True)
            sides[f"Arm {cpu}"] = dict(np.load(out))
        for side, outs in sides.items():
            results[side] = {k: compare(outs[f"{k}.normed"], outs[f"{k}.quantized"]) for k in data}
    write(results)
    return 0


def guest(tmp: str, out: str) -> int:
    """Under emulation: every probe input through its probe -> OUT.npz."""
    np.savez(out, **probe_all(tmp, dict(np.load(Path(tmp) / "in.npz"))))
    return 0


def probe_all(tmp: str, data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every input through the probe of its width -> the probe's outputs, keyed name.normed / name.quantized."""
    out: dict[str, np.ndarray] = {}
    for k, v in data.items():
        out |= run_probe(str(Path(tmp) / f"probe{v.shape[1]}.pte"), {k: v})
    return out


def write(results: dict) -> None:
    lines = [
        "# Study: int8 activation rounding on x86 XNNPACK and Arm KleidiAI",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/arm_rounding.py`: a unit-weight RMSNorm "
        "then an identity 8da4w linear, on x86 and under qemu-aarch64; each side's int8 integers recovered from "
        "its outputs and compared with two rounding rules applied to that side's own RMSNorm output.",
        "",
        "| side | input | elements | exact .5 ties | round-half-even mismatches | round-half-away mismatches |",
        "|---|---|---|---|---|---|",
    ]
    for side, per_input in results.items():
        for name, c in per_input.items():
            lines.append(
                f"| {side} | {name} | {c['elements']} | {c['exact ties']} | {c['half-even mismatches']} | "
                f"{c['half-away mismatches']} |"
            )
    (ROOT / "benchmarks" / "results" / "arm_rounding.md").write_text("\n".join(lines) + "\n")
    (ROOT / "benchmarks" / "results" / "arm_rounding.json").write_text(json.dumps(results, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(guest(sys.argv[2], sys.argv[3]) if sys.argv[1:2] == ["--guest"] else main())
