"""Optimized rotations: SpinQuant's Cayley SGD on the Stiefel manifold.

In:  a float32 `Transformer` already prepared for rotation (norms fused, untied, R4 folded;
     `prepare_for_optimization`), calibration windows [N, S], start `Rotations` (random
     Hadamard), steps, learning rate, device.
Out: `Rotations` of kind OPTIMIZED, with the loss curve in their provenance.

Only R1 and each layer's R2 train; every model weight is frozen. Each step applies the
rotations to the weights on the fly (float64, `edge.spinquant.fold.rotated_block_weights`,
the same function the fold uses), fake-quantizes every linear's input to 8 bits per token,
asymmetric, with a straight-through estimator (torchao's `IntxFakeQuantizer`: the runtime's
dynamic activation quantization), and minimises the causal-LM cross-entropy (SpinQuant) or, with
`loss=KL`, the KL divergence from the float model's next-token distribution (OSTQuant's choice,
Hu et al., ICLR 2025: it targets what the quantized model should reproduce, not the text). The
float model is the same forward with nothing fake-quantized: rotations do not change it. Weights
stay 16/32-bit during the optimization, as in SpinQuant's ExecuTorch recipe (W16A8), or are
fake-quantized to int4 (`weight_bits=4`).

The optimizer (`CayleySGD`) is SpinQuant's `SGDG(stiefel=True)` (train_utils/optimizer.py,
after Li et al. 2020): written here because neither torch nor torchao ships a Stiefel
optimizer. Cosine learning-rate decay, as in SpinQuant's recipe.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from edge.config import RotationKind, RotationLoss
from edge.model import AttentionPath, Transformer
from edge.spinquant.fold import head_transforms, prepare_block, rotated_block_weights, untie_and_reset_norm
from edge.spinquant.rotations import Rotations


class CayleySGD(torch.optim.Optimizer):
    """SGD on orthogonal matrices: Cayley retraction with a 5-step fixed-point loop, step min(lr, 1/||W||_1)."""

    def __init__(self, params, *, lr: float, momentum: float = 0.0, eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                # X: the point, re-orthonormalised (QR with positive diagonal); rows of p are its columns.
                q, r = torch.linalg.qr(p.data.T)
                X = q * torch.sign(torch.diagonal(r))[None, :]  # [n, n]
                state = self.state[p]
                v = state.get("momentum", torch.zeros_like(p.data))
                V = group["momentum"] * v - p.grad.T  # [n, n] tangent direction
                MX = V @ X.T
                W_hat = MX - 0.5 * X @ (X.T @ MX)
                W = W_hat - W_hat.T  # skew-symmetric
                alpha = min(group["lr"], 1.0 / (W.abs().sum(dim=0).max().item() + group["eps"]))
                Y = X + alpha * V
                for _ in range(5):  # Y = (I - a/2 W)^-1 (I + a/2 W) X, by fixed-point iteration
                    Y = X + alpha * W @ (0.5 * (X + Y))
                p.data.copy_(Y.T)
                state["momentum"] = W @ X if group["momentum"] else v
        return None


def prepare_for_optimization(model: Transformer, *, online_hadamard: bool) -> None:
    """Float model -> fused norms, R4 folded, untied, SEQUENCE path, weights frozen (in place)."""
    model.float()
    for block in model.layers:
        prepare_block(block, online_hadamard=online_hadamard)
    _, head = head_transforms(model, torch.eye(model.args.dim, dtype=torch.float64))  # fuse the final norm only
    lm = head(model.lm_head.weight.detach()).float()
    untie_and_reset_norm(model)
    model.lm_head.weight = nn.Parameter(lm, requires_grad=False)
    model.set_attention_path(AttentionPath.SEQUENCE)
    model.full_logits = True
    model.requires_grad_(False)


def _sig(x: float) -> float:
    """x to 6 significant digits (a KL can be 1e-5: fixed decimals would lose it)."""
    return float(f"{x:.6g}")


def activation_fake_quantizer():
    """-> torchao's fake quantizer for the scheme's activations: int8 per token, asymmetric, straight-through."""
    from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

    return IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int8, "per_token", is_symmetric=False))


def _weight_fake_quant(group_size: int):
    from torchao.quantization.qat import IntxFakeQuantizeConfig, IntxFakeQuantizer

    return IntxFakeQuantizer(IntxFakeQuantizeConfig(torch.int4, group_size=group_size, is_symmetric=True))


@dataclass
class _Objective:
    """What the rotations are trained on: the model's forward with the current R1/R2, fake-quantized while
    `quantizing` (off: the float model, the teacher of the KL loss), and the loss on a batch."""

    model: Transformer
    r1: nn.Parameter  # [D, D] float64
    r2: nn.ParameterList  # one [head_dim, head_dim] float64 per layer
    act_fq: Callable[[torch.Tensor], torch.Tensor]
    wq: Callable[[torch.Tensor], torch.Tensor] | None  # int4 weight fake-quantizer, or None: 16/32-bit weights
    loss: RotationLoss
    quantizing: bool = True

    def fq(self, x: torch.Tensor) -> torch.Tensor:
        """Activation x -> x fake-quantized to 8 bits per token while `quantizing`, else x itself."""
        return self.act_fq(x) if self.quantizing else x

    def logits_of(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, S] -> [B, S, V]: the model with the current rotations, fake-quantized unless `quantizing` is off."""
        model, wq = self.model, self.wq
        weights = {}
        for i, block in enumerate(model.layers):
            for name, w in rotated_block_weights(block, r1=self.r1, r2=self.r2[i]).items():
                weights[f"layers.{i}.{name}.weight"] = wq(w.float()) if wq and self.quantizing else w.float()
        return torch.func.functional_call(model, weights, (batch,), strict=False)

    def loss_of(self, batch: torch.Tensor) -> torch.Tensor:
        """[B, S] tokens -> scalar loss: next-token cross-entropy, or the KL divergence from the float model."""
        vocab = self.model.args.vocab_size
        logits = self.logits_of(batch)[:, :-1].reshape(-1, vocab)  # [B*(S-1), V]
        if self.loss is RotationLoss.CROSS_ENTROPY:
            return F.cross_entropy(logits, batch[:, 1:].reshape(-1))
        self.quantizing = False
        try:
            with torch.no_grad():
                teacher = self.logits_of(batch)[:, :-1].reshape(-1, vocab)
        finally:
            self.quantizing = True
        return F.kl_div(
            F.log_softmax(logits, dim=-1), F.log_softmax(teacher, dim=-1), log_target=True, reduction="batchmean"
        )

    def fixed_loss(self, tokens: torch.Tensor, *, n_eval: int, device: str) -> float:
        """Windows [N, S], how many to use -> the mean loss on the first n_eval, one at a time (no gradients)."""
        with torch.no_grad():
            return float(sum(self.loss_of(tokens[i : i + 1].to(device)) for i in range(n_eval)) / n_eval)


def _install_hooks(obj: _Objective) -> list[torch.utils.hooks.RemovableHandle]:
    """Objective -> hooks on its model: linear inputs fake-quantized, R1 applied at embedding out and lm_head in."""
    model, r1 = obj.model, obj.r1
    handles = [
        m.register_forward_pre_hook(lambda _m, a: (obj.fq(a[0]),))
        for n, m in model.layers.named_modules()
        if isinstance(m, nn.Linear)
    ]
    # The embedding output and lm_head input carry R1; applying it to the activations is the same
    # function as rotating the [V, D] weights, without a V x D x D product every step.
    handles.append(model.embed_tokens.register_forward_hook(lambda _m, _a, out: (out.double() @ r1).float()))
    handles.append(model.lm_head.register_forward_pre_hook(lambda _m, a: ((obj.fq(a[0]).double() @ r1.T).float(),)))
    return handles


def _run_steps(
    obj: _Objective,
    opt: CayleySGD,
    sched,
    tokens: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    micro: int,
    device: str,
    on_step: Callable[[int, int, float, float], None] | None,
) -> list[float]:
    """Objective, optimizer, schedule, windows [N, S] -> the loss of each of `steps` Cayley steps (R1/R2 updated)."""
    losses: list[float] = []
    for step in range(steps):
        t0 = time.monotonic()
        idx = torch.arange(step * batch_size, (step + 1) * batch_size) % tokens.shape[0]
        batch = tokens[idx].to(device)
        opt.zero_grad(set_to_none=True)
        step_loss = 0.0
        for m0 in range(0, batch_size, micro):  # one pass per micro-batch; gradients accumulate in r1/r2
            part = obj.loss_of(batch[m0 : m0 + micro]) * (micro / batch_size)
            part.backward()
            step_loss += float(part.detach())
        opt.step()
        sched.step()
        losses.append(step_loss)
        if on_step:
            on_step(step + 1, steps, losses[-1], batch.numel() / (time.monotonic() - t0))
    return losses


def optimize_rotations(
    model: Transformer,
    tokens: torch.Tensor,
    *,
    init: Rotations,
    steps: int,
    learning_rate: float,
    batch_size: int = 1,
    micro_batch: int | None = None,
    weight_bits: int = 16,
    loss: RotationLoss = RotationLoss.CROSS_ENTROPY,
    group_size: int = 32,
    eval_windows: int = 8,
    device: str = "cpu",
    on_step: Callable[[int, int, float, float], None] | None = None,
) -> Rotations:
    """Prepared model, calibration tokens [N, S] -> OPTIMIZED Rotations (see module docstring).

    `on_step(step, steps, loss, tokens_per_s)` after each step. The provenance records the
    loss (8-bit activations) on the first `eval_windows` windows before and after.
    micro_batch (None: batch_size): windows per forward/backward; each step sums the gradients of
    batch_size / micro_batch passes (each loss a mean over equally many tokens, so the step is the same).
    """
    micro = micro_batch or batch_size
    if batch_size % micro:
        raise ValueError(f"micro_batch {micro} does not divide batch_size {batch_size}")
    model.to(device)
    r1 = nn.Parameter(init.r1.to(device=device, dtype=torch.float64))
    r2 = nn.ParameterList(nn.Parameter(r.to(device=device, dtype=torch.float64)) for r in init.r2)
    opt = CayleySGD([r1, *r2], lr=learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * s / max(steps, 1))))

    obj = _Objective(
        model=model,
        r1=r1,
        r2=r2,
        act_fq=activation_fake_quantizer(),
        wq=_weight_fake_quant(group_size) if weight_bits == 4 else None,
        loss=loss,
    )
    handles = _install_hooks(obj)
    n_eval = min(eval_windows, tokens.shape[0])
    try:
        before = obj.fixed_loss(tokens, n_eval=n_eval, device=device)
        losses = _run_steps(
            obj, opt, sched, tokens, steps=steps, batch_size=batch_size, micro=micro, device=device, on_step=on_step
        )
        after = obj.fixed_loss(tokens, n_eval=n_eval, device=device)
    finally:
        for h in handles:
            h.remove()
    provenance = dict(init.provenance) | {
        "steps": steps,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "micro_batch": micro,
        "weight_bits": weight_bits,
        "loss": loss.value,
        "loss_before": _sig(before),
        "loss_after": _sig(after),
        "loss_windows": n_eval,
        "losses": [_sig(x) for x in losses],
    }
    return Rotations(
        kind=RotationKind.OPTIMIZED, r1=r1.detach().cpu(), r2=tuple(r.detach().cpu() for r in r2), provenance=provenance
    )
