"""Why Hadamard rotations with round-to-nearest hurt SmolLM2-135M while rotations with GPTQ help: the weights' side.

In:  the two checkpoints `benchmarks/real_model_quality.py` converts (out/real_model/smollm2_grid, the GGUF's
     dequantized weights, and smollm2_grid-free, the control with one Q4_1 step of noise added back).
Out: benchmarks/results/real_model_rotation.{md,json}: per linear kind, averaged over the 30 layers, the int4
     round-to-nearest error of its weight (symmetric, groups of 32, scale max|w|/7.5 as torchao rounds it) as
       weight SQNR   10 log10(|W|^2 / |W - Q(W)|^2)
       output SQNR   10 log10(E|W x|^2 / E|(W - Q(W)) x|^2), x the linear's input on 8 windows of calibration.txt
                     (transformers' float model): the error the next layer sees, which GPTQ minimises and RTN ignores
     for the weight as the checkpoint has it (orig), after RMSNorm's weight is folded into its columns (fused: what
     SpinQuant does before it rotates), and fused then rotated (random Hadamard R1 for q/k/v/gate/up, R4 for
     down_proj); and how unequal a row's 32-wide groups are (coefficient of variation of their RMS).

    python benchmarks/studies/real_model_rotation.py   # about 3 minutes on 2 cores
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results" / "real_model_rotation"
KINDS = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj")


def int4_rtn(w: torch.Tensor, group: int = 32) -> torch.Tensor:
    """Symmetric int4 round-to-nearest per group of `group` inputs, as torchao's 8da4w weights (max|w| / 7.5)."""
    g = w.reshape(w.shape[0], -1, group)
    scale = (g.abs().amax(dim=-1, keepdim=True) / 7.5).clamp(min=1e-12)
    return ((g / scale).round().clamp(-8, 7) * scale).reshape(w.shape)


def sqnr(w: torch.Tensor) -> float:
    return float(10 * torch.log10(w.pow(2).sum() / (w - int4_rtn(w)).pow(2).sum()))


def group_cv(w: torch.Tensor, group: int = 32) -> float:
    rms = w.reshape(w.shape[0], -1, group).pow(2).mean(-1).sqrt()
    return float((rms.std(-1) / rms.mean(-1)).mean())


def input_moments(checkpoint: Path, *, windows: int = 8, context: int = 256) -> dict[str, torch.Tensor]:
    """-> {"layers.i.q_proj" | ".gate_proj" | ".down_proj": E[x x^T] of that linear's input} over calibration text,
    float64, from transformers' own model (the input of q_proj is also k's and v's, gate's is also up's)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from edge.checkpoint import FIXTURE_CHECKPOINT

    tok = AutoTokenizer.from_pretrained(checkpoint)
    ids = tok((FIXTURE_CHECKPOINT / "calibration.txt").read_text())["input_ids"][: windows * context]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=torch.float32).eval()
    moments: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).double()
            moments[name] = moments.get(name, 0) + x.T @ x / x.shape[0] / windows

        return record

    for i, layer in enumerate(model.model.layers):
        layer.self_attn.q_proj.register_forward_pre_hook(hook(f"{i}.q_proj"))
        layer.mlp.gate_proj.register_forward_pre_hook(hook(f"{i}.gate_proj"))
        layer.mlp.down_proj.register_forward_pre_hook(hook(f"{i}.down_proj"))
    with torch.no_grad():
        for w in range(windows):
            model(torch.tensor([ids[w * context : (w + 1) * context]]))
    return moments


def output_sqnr(w: torch.Tensor, sigma: torch.Tensor) -> float:
    """A weight and its input's second moment -> 10 log10(E|W x|^2 / E|(W - Q(W)) x|^2), Q int4 RTN."""
    err = w - int4_rtn(w.float()).double()
    return float(10 * torch.log10(torch.trace(w @ sigma @ w.T) / torch.trace(err @ sigma @ err.T)))


def measure(checkpoint: Path) -> dict:
    """One checkpoint -> per kind, mean over layers of weight SQNR, activation-weighted (output) SQNR and group CV
    for the weight as it is, norm-fused, and fused + rotated."""
    from safetensors.torch import load_file

    from edge.model import hadamard_transform
    from edge.spinquant.hadamard import online_mix, random_hadamard

    state = {k: v.double() for k, v in load_file(str(checkpoint / "model.safetensors")).items()}
    moments = input_moments(checkpoint)
    n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("model.layers."))
    r1 = random_hadamard(state["model.embed_tokens.weight"].shape[1], seed=0).double()
    ffn = state["model.layers.0.mlp.down_proj.weight"].shape[1]
    r4 = hadamard_transform(torch.eye(ffn, dtype=torch.float64), online_mix(ffn))  # x -> x @ r4, orthogonal here
    keys = ("orig", "fused", "rotated", "out_orig", "out_fused", "out_rotated", "cv_fused", "cv_rotated")
    out = {k: {m: [] for m in keys} for k in KINDS}
    for i in range(n_layers):
        p = f"model.layers.{i}."
        for kind in KINDS:
            mod = "self_attn" if kind in ("q_proj", "k_proj", "v_proj") else "mlp"
            w = state[f"{p}{mod}.{kind}.weight"]
            sigma = moments[
                f"{i}.{'q_proj' if mod == 'self_attn' else 'down_proj' if kind == 'down_proj' else 'gate_proj'}"
            ]
            if kind == "down_proj":  # no norm before it; R4 on its input: x -> x r4, W -> W r4
                fused, sigma_f, rot = w, sigma, r4
            else:  # the norm's weight g moves into W's columns: W x = (W diag g)(x / g)
                g = state[f"{p}{'input_layernorm' if mod == 'self_attn' else 'post_attention_layernorm'}.weight"]
                fused, sigma_f, rot = w * g[None, :], sigma / g[:, None] / g[None, :], r1
            rotated, sigma_r = fused @ rot, rot.T @ sigma_f @ rot
            for name, x, sig in (("orig", w, sigma), ("fused", fused, sigma_f), ("rotated", rotated, sigma_r)):
                out[kind][name].append(sqnr(x.float()))
                out[kind][f"out_{name}"].append(output_sqnr(x, sig))
            out[kind]["cv_fused"].append(group_cv(fused))
            out[kind]["cv_rotated"].append(group_cv(rotated))
    return {k: {m: sum(v) / len(v) for m, v in d.items()} for k, d in out.items()}


def main() -> int:
    from edge.core.machine import cpu_name
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    torch.manual_seed(0)
    models = {name: ROOT / "out" / "real_model" / f"smollm2_{name}" for name in ("grid", "grid-free")}
    missing = [str(p) for p in models.values() if not (p / "model.safetensors").is_file()]
    if missing:
        print(f"error: run benchmarks/real_model_quality.py first (it converts {', '.join(missing)})", file=sys.stderr)
        return 2
    results = {name: measure(path) for name, path in models.items()}
    lines = [
        "# Int4 weight error on SmolLM2-135M before and after rotation",
        "",
        f"Measured {datetime.now(timezone.utc).isoformat(timespec='seconds')} on {cpu_name()}; "
        "`python benchmarks/studies/real_model_rotation.py`. Int4 round-to-nearest SQNR of each weight (dB, mean over"
        " the 30 layers; symmetric, groups of 32), and the coefficient of variation of a row's group RMS.",
        "",
        "| model | linear | weight SQNR: orig / fused / rotated (dB) | output SQNR: orig / fused / rotated (dB) "
        "| group CV fused / rotated |",
        "|---|---|---|---|---|",
    ]
    for name, kinds in results.items():
        for kind, m in kinds.items():
            lines.append(
                f"| {name} | {kind} | {m['orig']:.2f} / {m['fused']:.2f} / {m['rotated']:.2f} "
                f"| {m['out_orig']:.2f} / {m['out_fused']:.2f} / {m['out_rotated']:.2f} "
                f"| {m['cv_fused']:.3f} / {m['cv_rotated']:.3f} |"
            )
    RESULTS.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    RESULTS.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
