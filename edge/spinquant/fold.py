"""Fold SpinQuant's rotations into a float model, in float64, one block at a time.

In:  an `edge.model.Transformer` with float weights (any dtype), `Rotations` (R1, R2 per layer).
Out: the same model, changed in place, computing the same function:
       * RMSNorm scales fused into the linears that follow them (norm weights set to 1),
         so that the rotations commute with the norms;
       * the tied embedding untied (SpinQuant#13) -- lm_head gets its own weight;
       * R1 [D, D] on the embedding output, the inputs of q/k/v/gate/up/lm_head and the
         outputs of o_proj/down_proj: the residual stream is x @ R1;
       * R2 [Dh, Dh] (one per layer) on each head of v_proj's output and o_proj's input;
       * R4 (optional): a Hadamard M on down_proj's input, run online (`OnlineHadamard`:
         ExecuTorch's op, and for F = m * 2^k an m x m mix), with M^-T folded into down_proj's weight.
     No mean-centring of the embedding: it does not preserve an RMSNorm model's function
     (SpinQuant#14).

Weights are stored as row vectors' maps y = x @ W^T, so for a linear W [out, in]:
  rotate its input by R:   W' = W @ R          (x R) W'^T = x W^T ... with W' = W R
  rotate its output by R:  W' = R^T @ W        x W'^T = (x W^T) R
The same functions serve the optimizer (`edge.spinquant.optimize`), which applies
them on the fly to trainable R1/R2, so folding and training share one definition.
"""

from __future__ import annotations

import torch
from torch import nn

from edge.model import BLOCK_LINEARS, OnlineHadamard, Transformer, TransformerBlock, hadamard_transform
from edge.spinquant.hadamard import online_mix


def rotate_input(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # w: [out, in], r: [in, in] -> [out, in] acting on x @ r
    return w @ r


def rotate_output(w: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # w: [out, in], r: [out, out] -> [out, in] whose output is (x w^T) @ r
    return r.T @ w


def rotate_head_outputs(w: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    # w: [Hkv * Dh, in] (v_proj), r2: [Dh, Dh]: each head's output v_h -> v_h @ r2
    dh = r2.shape[0]
    return (r2.T @ w.reshape(-1, dh, w.shape[1])).reshape(w.shape)


def rotate_head_inputs(w: torch.Tensor, r2: torch.Tensor) -> torch.Tensor:
    # w: [out, H * Dh] (o_proj), r2: [Dh, Dh]: reads each head's y_h @ r2
    dh = r2.shape[0]
    return (w.reshape(w.shape[0], -1, dh) @ r2).reshape(w.shape)


def hadamard_fold(w: torch.Tensor, mix: torch.Tensor | None = None) -> torch.Tensor:
    """down_proj weight [D, F], R4's mix -> W M^-T, so that down'(h @ M) = down(h), M R4's matrix."""
    # M M^T = c I with c = 28 (F = 28 * 2^k, the op alone), else 1: M^-T = M / c, and W M = rows of W transformed.
    c = float(hadamard_transform(torch.eye(1, w.shape[1], dtype=torch.float64), mix).pow(2).sum())
    return hadamard_transform(w, mix) / c


def _set(linear: nn.Linear, w64: torch.Tensor, dtype: torch.dtype) -> None:
    linear.weight = nn.Parameter(w64.to(dtype), requires_grad=False)


def fuse_block_norms(block: TransformerBlock, *, dtype: torch.dtype = torch.float32) -> None:
    """Scale the columns of q/k/v by input_layernorm's weight and gate/up by post_attention_layernorm's; norms -> 1."""
    attn, mlp = block.self_attn, block.mlp
    for norm, linears in (
        (block.input_layernorm, (attn.q_proj, attn.k_proj, attn.v_proj)),
        (block.post_attention_layernorm, (mlp.gate_proj, mlp.up_proj)),
    ):
        scale = norm.weight.detach().double()
        for lin in linears:
            _set(lin, lin.weight.detach().double() * scale[None, :], dtype)
        norm.weight = nn.Parameter(torch.ones_like(norm.weight, dtype=dtype), requires_grad=False)


# The largest relative change break_embedding_ties makes to a norm weight: far below int4's steps (2^-3 of a
# group's range) and int8's (2^-8), far above float32's rounding (2^-24).
TIE_JITTER = 2.0**-12


def break_embedding_ties(block: TransformerBlock, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> None:
    """Layer 0 after R1/R2: input_layernorm's weight -> d = 1 + TIE_JITTER * u (u uniform in [-1, 1], seeded) and
    q/k/v's columns divided by d, in float64: the block computes what it did.

    With the norm folded to exactly 1, layer 0 quantizes RMSNorm(int8 embedding row), a scaled integer lattice on
    which x * scale often lands exactly on .5; x86 XNNPACK rounds such ties to even, Arm's KleidiAI away from zero,
    so the two disagree within the first tokens (docs/arm.md). A non-lattice per-channel scale removes the ties.
    """
    norm, attn = block.input_layernorm, block.self_attn
    u = torch.rand(norm.weight.shape[0], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    d = 1 + TIE_JITTER * (2 * u - 1)
    for lin in (attn.q_proj, attn.k_proj, attn.v_proj):
        _set(lin, lin.weight.detach().double() / d[None, :], dtype)
    norm.weight = nn.Parameter((norm.weight.detach().double() * d).to(dtype), requires_grad=False)


def fold_online_hadamard(block: TransformerBlock, *, dtype: torch.dtype = torch.float32) -> None:
    """Insert R4: down_proj_input runs the Hadamard online, its inverse folds into down_proj (in float64)."""
    mix = online_mix(block.mlp.down_proj.in_features)
    _set(block.mlp.down_proj, hadamard_fold(block.mlp.down_proj.weight.detach().double(), mix), dtype)
    insert_online_hadamard(block, dtype=dtype)


def insert_online_hadamard(block: TransformerBlock, *, dtype: torch.dtype = torch.float32) -> None:
    """Run R4 on down_proj's input (the weight is left as it is), on the block's attention path.

    Its m x m mix (F = m * 2^k, `online_mix`; none for 2^k and 28 * 2^k) is kept in `dtype`.
    """
    mix = online_mix(block.mlp.down_proj.in_features)
    block.mlp.down_proj_input = OnlineHadamard(None if mix is None else mix.to(dtype))
    block.mlp.down_proj_input.path = block.self_attn.path


def rotated_block_weights(block: TransformerBlock, *, r1: torch.Tensor, r2: torch.Tensor) -> dict[str, torch.Tensor]:
    """A block with fused norms, R1, this layer's R2 -> {linear name: rotated weight} (r1's dtype).

    Differentiable in r1 and r2: the optimizer calls it every step, the fold once.
    """
    w = {n: block.get_submodule(n).weight.detach().to(r1.dtype) for n in LINEARS}
    out = {n: rotate_input(w[n], r1) for n in ("self_attn.q_proj", "self_attn.k_proj", "mlp.gate_proj", "mlp.up_proj")}
    out["self_attn.v_proj"] = rotate_head_outputs(rotate_input(w["self_attn.v_proj"], r1), r2)
    out["self_attn.o_proj"] = rotate_output(rotate_head_inputs(w["self_attn.o_proj"], r2), r1)
    out["mlp.down_proj"] = rotate_output(w["mlp.down_proj"], r1)
    return out


LINEARS = BLOCK_LINEARS


def rotate_block(
    block: TransformerBlock, *, r1: torch.Tensor, r2: torch.Tensor, dtype: torch.dtype = torch.float32
) -> None:
    """Apply R1 and this layer's R2 (in float64) to a block whose norms are already fused."""
    for name, w in rotated_block_weights(block, r1=r1.double(), r2=r2.double()).items():
        _set(block.get_submodule(name), w, dtype)


def prepare_block(block: TransformerBlock, *, online_hadamard: bool, dtype: torch.dtype = torch.float32) -> None:
    """What every block gets before R1/R2: fused norms and (optionally) the online R4."""
    fuse_block_norms(block, dtype=dtype)
    if online_hadamard:
        fold_online_hadamard(block, dtype=dtype)


def head_transforms(model: Transformer, r1: torch.Tensor):
    """-> (embedding rows transform, lm_head rows transform), each [rows, D] -> float64 [rows, D].

    The final norm's scale is fused into lm_head; both get R1. Applied a chunk of rows at a
    time by the caller (the 128k-row output layer is never copied whole in float64).
    """
    r1 = r1.double()
    norm = model.norm.weight.detach().double()
    return (lambda rows: rows.double() @ r1), (lambda rows: (rows.double() * norm[None, :]) @ r1)


def untie_and_reset_norm(model: Transformer) -> None:
    """Give lm_head its own Parameter (same values) and set the final norm to 1 (call after head_transforms)."""
    if model.lm_head.weight is model.embed_tokens.weight:
        model.lm_head.weight = nn.Parameter(model.embed_tokens.weight.detach(), requires_grad=False)
    model.norm.weight = nn.Parameter(torch.ones_like(model.norm.weight), requires_grad=False)
