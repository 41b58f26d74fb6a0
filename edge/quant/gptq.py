"""GPTQ for Meta's 8da4w scheme: int4 symmetric weights in groups along the input dimension.

Written here because no library provides it: torchao's `GPTQConfig` (prototype) covers
int4 weight-only, int8 and NVFP4 only, its older 8da4w GPTQ quantizer was removed before
0.16, and ExecuTorch lists `8da4w-gptq` but raises on it. The algorithm is GPTQ's
(Frantar et al. 2022) as SpinQuant runs it for ExecuTorch (eval_utils/gptq_utils.py):
Hessians from calibration activations, 1% damping, no act-order, column blocks of 128,
the sublayers of each block quantized in order [q, k, v] -> [o] -> [gate, up] -> [down],
each seeing the earlier ones already quantized, and each block fed the previous
quantized block's outputs.

Scale convention (stated, and what the integers mean): scale = c * max|w| / 7 per group of
32, integers round(w / scale) clamped to [-8, 7], zero point 0; the clip ratio c is chosen
per row and group by minimising sum |q - w|^2.4 over c in {1.00, 0.99, ..., 0.21}
(SpinQuant's MSE clipping search). torchao's round-to-nearest uses max/7.5 instead;
either way the result is handed to torchao as its own `IntxUnpackedToInt8Tensor`
(`edge.quant.scheme.intx_tensor_from_integers`), so lowering is unchanged.

Float targets (`gptq.float_targets`: the "asymmetric calibration" of GPTQv2/GPTAQ, Li et al., ICML
2025, github.com/Intelligent-Computing-Lab-Yale/GPTAQ; here as a closed-form least-squares step
before the usual GPTQ loop, which minimises the same objective): plain GPTQ makes each quantized
linear reproduce the *float* linear on the *quantized* model's inputs, so errors left by earlier
layers pass through. With float targets, each linear's weight is first moved to the least-squares
map from the quantized model's inputs to the float model's outputs, then rounded by GPTQ; the
output layer gets the same fit before its 8-bit rounding (`output_correction`). GPTQModel's `v2`
has it for its own int4 formats, not for this scheme's torchao tensors.

In:  a float `TransformerBlock` (SEQUENCE attention path), its calibration inputs [N, S, D]
     (and, with float targets, the float model's inputs to it for the same windows).
Out: the block with every linear replaced by torchao's int4 tensor holding GPTQ's integers,
     the block's outputs [N, S, D] (the next block's inputs), and each weight's SQNR.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from edge.config import WeightBits

SEQUENTIAL_GROUPS = (
    ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    ("self_attn.o_proj",),
    ("mlp.gate_proj", "mlp.up_proj"),
    ("mlp.down_proj",),
)
QMIN, QMAX = -8, 7


def choose_scales(w: torch.Tensor, *, grid: int = 100, max_shrink: float = 0.8, norm: float = 2.4) -> torch.Tensor:
    """w [out, g] (one group per row) -> scale [out]: c * max|w| / 7, c by the MSE clipping search.

    Candidates are rounded to bf16 before the search (`edge.quant.scheme.bf16_exact`: the value XNNPACK
    stores), so the integers are chosen against the scale the program computes with. One candidate at a
    time with a running minimum (the first of equal errors wins, as argmin's does): the [out, g] temporaries
    stay in cache, 3.5x faster at the 1B shape than all candidates in one [P, out, g] tensor.
    """
    amax = w.abs().amax(dim=1).clamp(min=1e-12)  # [out]
    ratios = 1.0 - torch.arange(int(max_shrink * grid), dtype=w.dtype, device=w.device) / grid  # [P]
    best = best_err = None
    for ratio in ratios:
        scale = (ratio * amax / QMAX).to(torch.bfloat16).to(w.dtype)  # [out]
        q = torch.clamp(torch.round(w / scale[:, None]), QMIN, QMAX)  # [out, g]
        err = (q * scale[:, None] - w).abs_().pow_(norm).sum(dim=-1)  # [out]
        if best is None:
            best, best_err = scale, err
        else:
            better = err < best_err
            best, best_err = torch.where(better, scale, best), torch.where(better, err, best_err)
    return best


def gptq_quantize(
    w: torch.Tensor,
    hessian: torch.Tensor,
    *,
    group_size: int,
    damp: float,
    block_size: int = 128,
    act_order: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """W [out, in] float, H [in, in] -> (integers [out, in] int8, scales [out, in/g] fp32, dequantized W [out, in]).

    act_order: columns are visited in decreasing Hessian diagonal, with static groups (each group's
    scale chosen up front from its contiguous columns), so the layout stays the one XNNPACK runs.
    """
    block_size = max(block_size, group_size)  # a group's scale is chosen from columns inside one block
    W = w.detach().clone().float()
    H = hessian.detach().clone().double()
    out_f, in_f = W.shape
    dead = torch.diag(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    static = None
    perm = torch.arange(in_f, device=W.device)
    if act_order:
        static = torch.stack([choose_scales(W[:, g : g + group_size]) for g in range(0, in_f, group_size)], dim=1)
        perm = torch.argsort(torch.diag(H), descending=True)
        W, H = W[:, perm], H[perm][:, perm]
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))  # H + damp * mean(diag H) * I, without an [in, in] eye
    try:
        # One [in, in] float64 temporary at a time beside H's input (512 MiB each for down_proj at 1B).
        hinv = torch.linalg.cholesky(H)
        del H
        hinv = torch.cholesky_inverse(hinv)
        hinv = torch.linalg.cholesky(hinv, upper=True).float()
    except torch.linalg.LinAlgError:
        from edge.core.errors import EdgeError

        raise EdgeError(
            f"GPTQ: the calibration Hessian of a {in_f}-input linear is not positive definite even with damping "
            f"{damp}: raise gptq.damp or calibrate on more tokens"
        ) from None

    Q = torch.zeros_like(W, dtype=torch.int8)
    scales = torch.zeros(out_f, in_f // group_size, dtype=torch.float32, device=W.device)
    for i1 in range(0, in_f, block_size):
        i2 = min(i1 + block_size, in_f)
        W1, Err1, Hinv1 = W[:, i1:i2].clone(), torch.zeros(out_f, i2 - i1, device=W.device), hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            col = i1 + i
            if static is not None:
                scale = static[:, int(perm[col]) // group_size]
            elif col % group_size == 0:  # this group's scale, from its columns as updated so far
                scale = choose_scales(W1[:, i : i + group_size])
                scales[:, col // group_size] = scale
            q = torch.clamp(torch.round(W1[:, i] / scale), QMIN, QMAX)
            Q[:, col] = q.to(torch.int8)
            err = (W1[:, i] - q * scale) / Hinv1[i, i]
            W1[:, i:] -= err[:, None] * Hinv1[i, i:][None, :]
            Err1[:, i] = err
        W[:, i2:] -= Err1 @ hinv[i1:i2, i2:]
    if static is not None:
        Q, scales = Q[:, torch.argsort(perm)], static
    deq = (Q.float().view(out_f, -1, group_size) * scales[..., None]).view(out_f, in_f)
    return Q, scales, deq


class HessianHook:
    """Forward pre-hook accumulating X^T X of a linear's inputs (float64) and the row count.

    With `cross`, also (X_ref - X)^T X, where X_ref is the float model's input to the same linear
    for the same tokens (set in `ref` by `RefHook` just before): GPTAQ's asymmetric term.
    """

    def __init__(self, in_features: int, device: torch.device, *, cross: bool = False) -> None:
        self.h = torch.zeros(in_features, in_features, dtype=torch.float64, device=device)
        self.c = torch.zeros_like(self.h) if cross else None
        self.ref: torch.Tensor | None = None
        self.rows = 0

    def __call__(self, _module: nn.Module, args: tuple) -> None:
        self.add(args[0])

    def add(self, x: torch.Tensor, *, ref: torch.Tensor | None = None) -> None:
        """x [..., in] (the quantized model's inputs); ref, or else `self.ref`: the float model's, same shape."""
        x = x.detach().reshape(-1, x.shape[-1]).double()
        self.h += x.T @ x
        if self.c is not None:
            ref = self.ref if ref is None else ref.detach().reshape(-1, ref.shape[-1]).double()
            self.c += (ref - x).T @ x
            self.ref = None
        self.rows += x.shape[0]

    def hessian(self) -> torch.Tensor:
        return 2.0 * self.h / max(self.rows, 1)

    def correction(self, *, damp: float) -> torch.Tensor:
        """-> M [in, in] float64, (X_ref - X)^T X (X^T X + damp)^-1: W (I + M) is the least-squares weight that
        maps the quantized model's inputs X to the float model's outputs W X_ref, pulled towards W by the damping."""
        h = self.h / max(self.rows, 1)
        h = h + damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype, device=h.device)
        return torch.linalg.solve(h, self.c.T / max(self.rows, 1)).T  # H symmetric

    def float_target(self, w: torch.Tensor, *, damp: float) -> torch.Tensor:
        """W [out, in] -> W (I + M) (see `correction`)."""
        return (w.double() + w.double() @ self.correction(damp=damp)).to(w.dtype)


class RefHook:
    """Forward pre-hook on the float block's linear: hands its input to the quantized block's `HessianHook`."""

    def __init__(self, target: HessianHook) -> None:
        self.target = target

    def __call__(self, _module: nn.Module, args: tuple) -> None:
        self.target.ref = args[0].detach().reshape(-1, args[0].shape[-1]).double()


class _Stop(Exception):
    """Raised by `_StopWhenSeen` to end a forward pass whose remaining layers nothing reads."""


class _StopWhenSeen:
    """Forward pre-hook on each linear of a sequential group: once every one of them has had its input in
    this forward pass, the rest of the block is not needed (its outputs are not read), so the pass stops.
    Registered after the Hessian hooks, so they have run. Saves three of the five MLP passes per block."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.seen = set(names), set()

    def hook(self, name: str) -> Callable:
        def fire(_module: nn.Module, _args: tuple) -> None:
            self.seen.add(name)
            if self.seen == self.names:
                self.seen = set()
                raise _Stop

        return fire

    @classmethod
    def register(cls, module: nn.Module, names: tuple[str, ...]) -> list:
        """Stop `module`'s forward once its linears `names` have all had their inputs. -> the hook handles."""
        stop = cls(names)
        return [module.get_submodule(n).register_forward_pre_hook(stop.hook(n)) for n in names]


def _forward_until_stop(block: nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor | None:
    """block(x) if it runs to the end, None if a `_StopWhenSeen` hook ended it."""
    try:
        return block(x, 0, cos, sin)
    except _Stop:
        return None


def run_block(
    block: nn.Module, inputs: torch.Tensor, *, cos: torch.Tensor, sin: torch.Tensor, batch: int
) -> torch.Tensor:
    """inputs [N, S, D] -> block outputs [N, S, D], `batch` windows at a time, no grad."""
    outs = []
    with torch.no_grad():
        for b0 in range(0, inputs.shape[0], batch):
            outs.append(block(inputs[b0 : b0 + batch], 0, cos, sin))
    return torch.cat(outs)


def gptq_block(
    block: nn.Module,
    inputs: torch.Tensor,
    *,
    cos: torch.Tensor,
    sin: torch.Tensor,
    group_size: int,
    damp: float,
    batch: int = 8,
    act_order: bool = False,
    float_inputs: torch.Tensor | None = None,
    on_linear: Callable[[str, torch.Tensor, torch.Tensor], None] | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """GPTQ every linear of `block` in place (torchao int4 tensors).

    -> (the quantized block's outputs [N, S, D], the float block's outputs or None).
    float_inputs [N, S, D] (the float model's inputs to this block, for the same windows): each linear
    is first moved to the least-squares fit of the float model's output from the quantized model's
    input (`HessianHook.float_target`), then rounded by GPTQ, so a linear also corrects the error
    the quantized layers before it left in its input (see the module docstring).
    `on_linear(name, float weight, torchao weight)` is called for each (for SQNR reports).
    """
    import copy

    from edge.quant.scheme import intx_tensor_from_integers

    reference = copy.deepcopy(block) if float_inputs is not None else None
    float_outputs: list[torch.Tensor] = []
    originals: dict[str, torch.Tensor] = {}
    results: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for names in SEQUENTIAL_GROUPS:
        linears = {n: block.get_submodule(n) for n in names}
        hooks = {n: HessianHook(m.in_features, inputs.device, cross=reference is not None) for n, m in linears.items()}
        handles = [m.register_forward_pre_hook(hooks[n]) for n, m in linears.items()]
        handles += _StopWhenSeen.register(block, names)  # after the Hessian hooks, so they have run
        first = names is SEQUENTIAL_GROUPS[0]
        if reference is not None:
            handles += [reference.get_submodule(n).register_forward_pre_hook(RefHook(hooks[n])) for n in names]
            if not first:  # in the first group the float block runs to the end: its outputs are kept
                handles += _StopWhenSeen.register(reference, names)
        try:
            with torch.no_grad():
                for b0 in range(0, inputs.shape[0], batch):
                    if reference is not None:  # the float inputs of these windows first, then the quantized ones
                        out = _forward_until_stop(reference, float_inputs[b0 : b0 + batch], cos, sin)
                        if first:  # the float block never changes: its outputs once
                            float_outputs.append(out)
                    _forward_until_stop(block, inputs[b0 : b0 + batch], cos, sin)
        finally:
            for h in handles:
                h.remove()
        for n, m in linears.items():
            originals[n] = m.weight.detach().float().cpu()
            hook = hooks.pop(n)  # its float64 sums are freed once the Hessian is taken
            w = hook.float_target(m.weight.detach().float(), damp=damp) if reference is not None else m.weight
            hessian = hook.hessian()
            del hook
            q, s, deq = gptq_quantize(w, hessian, group_size=group_size, damp=damp, act_order=act_order)
            del hessian
            results[n] = (q.cpu(), s.cpu())
            m.weight = nn.Parameter(deq.to(m.weight.dtype), requires_grad=False)  # later groups see it quantized
    outputs = run_block(block, inputs, cos=cos, sin=sin, batch=batch)
    for n, (q, s) in results.items():
        m = block.get_submodule(n)
        t = intx_tensor_from_integers(q, s, bits=WeightBits.INT4)
        m.weight = nn.Parameter(t, requires_grad=False)
        if on_linear:
            on_linear(n, originals[n], t)
    return outputs, torch.cat(float_outputs) if reference is not None else None


def output_correction(
    norm: nn.Module, x: torch.Tensor, x_float: torch.Tensor, *, damp: float, batch: int = 8
) -> torch.Tensor:
    """The last block's outputs in the quantized and the float model [N, S, D] -> M [D, D] float64.

    The output layer's rows times (I + M) map the quantized model's final hidden states (through
    `norm`) to the float model's logits as closely as a linear map can (`HessianHook.correction`);
    they are then rounded as usual. This is the same fit `gptq_block` makes with float targets.
    """
    fit = HessianHook(x.shape[-1], x.device, cross=True)
    with torch.no_grad():
        for b0 in range(0, x.shape[0], batch):
            fit.add(norm(x[b0 : b0 + batch]), ref=norm(x_float[b0 : b0 + batch]))
    return fit.correction(damp=damp)
