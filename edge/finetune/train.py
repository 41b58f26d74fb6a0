"""The training loop: stage 1 QAT on the whole backbone, stage 2 LoRA on a frozen fake-quantized one.

In:  a float `Transformer` on the SEQUENCE attention path, `TrainingData`, the `ExportConfig`
     (its `quantization` is the scheme fake-quantized; its `finetune` the recipe), and optionally
     a `TrainState` to resume from.
Out: the trained model (fake quantizers still in place, LoRA wrappers attached) and the
     `TrainState` (losses per step, stage, step), checkpointed every `checkpoint_every` steps.

Determinism: the batch of every step is a function of (seed, stage, step) only, and nothing
random happens inside a step (no dropout), so a resumed run replays the uninterrupted one
exactly. Data parallelism: launched by `torchrun`, each rank takes its slice of every batch
and the model is sharded with FSDP2's `fully_shard` (gloo on CPU, NCCL on GPUs); the loss is
normalised by the global count of trained tokens, so any world size computes the same loss.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.nn import functional as F

from edge.config import ExportConfig
from edge.core.errors import EdgeError
from edge.finetune.data import TrainingData
from edge.model import Transformer

STAGES = ("qat", "lora")


@dataclass
class TrainState:
    """Where a fine-tune is: finished stages' and the current stage's losses, and the step within it."""

    stage: str = "qat"
    step: int = 0  # steps done in `stage`
    losses: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})
    grad_norms: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in STAGES})  # before clipping
    seconds: float = 0.0
    tokens_seen: int = 0


@dataclass(frozen=True)
class Dist:
    """This process's place in a torchrun launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def batch_indices(n: int, *, batch: int, step: int, seed: int, stage: str) -> list[int]:
    """Window indices of one step's global batch: epochs of seeded permutations, a pure function of its inputs."""
    salt = STAGES.index(stage) * 1_000_003
    perms: dict[int, torch.Tensor] = {}  # epoch -> its permutation (a batch spans at most a few epochs)
    out = []
    for p in range(step * batch, (step + 1) * batch):
        epoch, i = divmod(p, n)
        if epoch not in perms:
            perms[epoch] = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + salt + epoch))
        out.append(int(perms[epoch][i]))
    return out


def lr_at(step: int, *, steps: int, peak: float) -> float:
    """Linear warm-up over the first 10% of steps (at least 1), then cosine decay to 10% of peak."""
    warm = max(1, steps // 10)
    if step < warm:
        return peak * (step + 1) / warm
    t = (step - warm) / max(1, steps - warm)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def masked_loss(
    model: Transformer,
    tokens: torch.Tensor,
    mask: torch.Tensor,
    *,
    denominator: int,
    teacher: Transformer | None = None,
) -> tuple[torch.Tensor, float]:
    """Windows [B, L] -> (summed loss over the masked targets / denominator, that sum as a float).

    The loss per position is the cross-entropy of the next token, or with a `teacher` (the unquantized
    checkpoint, frozen) KL(teacher || model) of the next-token distributions.
    """
    logits = model(tokens[:, :-1]).float()  # [B, L-1, V]
    keep = mask[:, 1:].reshape(-1)  # [B*(L-1)]
    logits = logits.reshape(-1, logits.shape[-1])
    if teacher is None:
        per_position = F.cross_entropy(logits, tokens[:, 1:].reshape(-1), reduction="none")
    else:
        with torch.no_grad():
            target = F.log_softmax(teacher(tokens[:, :-1]).float().reshape(-1, logits.shape[-1]), dim=-1)
        per_position = F.kl_div(F.log_softmax(logits, dim=-1), target, log_target=True, reduction="none").sum(-1)
    total = (per_position * keep).sum()
    return total / denominator, float(total.detach())


def trainable_for(model: Transformer, stage: str) -> list[torch.nn.Parameter]:
    """Stage -> the parameters it trains (everything for QAT; only the adapters for LoRA), others frozen."""
    params = []
    for name, p in model.named_parameters():
        train = ".adaptor." in name if stage == "lora" else ".adaptor." not in name
        p.requires_grad_(train)
        if train:
            params.append(p)
    return params


def run_stage(
    model: Transformer,
    data: TrainingData,
    config: ExportConfig,
    state: TrainState,
    *,
    dist: Dist,
    device: torch.device,
    load_optimizer: Callable[[torch.optim.Optimizer], None] | None,
    teacher: Transformer | None = None,
    save: Callable[[TrainState, torch.optim.Optimizer], None],
    report: Callable[[str], None],
) -> None:
    """Train `state.stage` from `state.step` to its step count; checkpoints via `save(state, optimizer)`."""
    ft = config.finetune
    spec = ft.qat if state.stage == "qat" else ft.lora
    params = trainable_for(model, state.stage)
    opt = torch.optim.AdamW(
        params,
        lr=spec.learning_rate,
        betas=(0.9, 0.95),
        eps=1e-8,
        weight_decay=getattr(spec, "weight_decay", 0.0),
        foreach=False,
    )
    if load_optimizer is not None:
        load_optimizer(opt)
    if spec.batch_size % dist.world:
        raise EdgeError(
            f"finetune.{state.stage}.batch_size {spec.batch_size} does not split over {dist.world} processes"
        )
    n = data.tokens.shape[0]
    started, start_step = time.monotonic(), state.step
    while state.step < spec.steps:
        idx = batch_indices(n, batch=spec.batch_size, step=state.step, seed=ft.seed, stage=state.stage)
        tokens, mask = data.tokens[idx], data.mask[idx]
        denominator = max(1, int(mask[:, 1:].sum()))  # the global batch's trained tokens, the same on every rank
        share = slice(dist.rank * spec.batch_size // dist.world, (dist.rank + 1) * spec.batch_size // dist.world)
        for group in opt.param_groups:
            group["lr"] = lr_at(state.step, steps=spec.steps, peak=spec.learning_rate)
        # FSDP averages gradients over ranks, so each rank's share of the sum is scaled by the world size.
        loss, total = masked_loss(
            model, tokens[share].to(device), mask[share].to(device), denominator=denominator, teacher=teacher
        )
        (loss * dist.world).backward()
        norm = torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=False)
        state.grad_norms[state.stage].append(float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm))
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dist.world > 1:
            t = torch.tensor([total], dtype=torch.float64, device=device)
            torch.distributed.all_reduce(t)
            total = float(t)
        state.losses[state.stage].append(total / denominator)
        state.step += 1
        state.tokens_seen += int(tokens.numel())
        elapsed = time.monotonic() - started
        done = state.step - start_step
        if dist.main and (state.step % max(1, spec.steps // 50) == 0 or state.step == spec.steps):
            tok_s = done * tokens.numel() / max(elapsed, 1e-9)
            eta = (spec.steps - state.step) * elapsed / max(done, 1)
            bar = "#" * int(30 * state.step / spec.steps)
            report(
                f"{state.stage:<4} [{bar:<30}] {state.step}/{spec.steps} loss {state.losses[state.stage][-1]:.4f} "
                f"lr {opt.param_groups[0]['lr']:.2e} {tok_s:,.0f} tok/s ETA {eta:.0f}s"
            )
        if ft.checkpoint_every and state.step % ft.checkpoint_every == 0 and state.step < spec.steps:
            state.seconds += time.monotonic() - started
            started, start_step = time.monotonic(), state.step
            save(state, opt)
    state.seconds += time.monotonic() - started
