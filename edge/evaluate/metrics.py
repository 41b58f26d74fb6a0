"""How far one model's next-token predictions are from a reference's (torch only, no ExecuTorch).

Shared by `edge.evaluate` (a .pte against its checkpoint) and the fixture recipe sweep
(simulated quantization on a GPU machine without ExecuTorch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LogitComparison:
    """Sums over the compared positions: NLL of the targets under each model, KL(ref || got), top-1 agreements."""

    nll_ref: float
    nll_got: float
    kl: float
    agree: int


def compare_logits(ref: torch.Tensor, got: torch.Tensor, targets: torch.Tensor) -> LogitComparison:
    """Reference and candidate logits [N, V] (float), target ids [N] -> LogitComparison summed over the N positions."""
    ref_logp, got_logp = F.log_softmax(ref, -1), F.log_softmax(got, -1)
    return LogitComparison(
        nll_ref=-float(ref_logp.gather(1, targets[:, None]).sum()),
        nll_got=-float(got_logp.gather(1, targets[:, None]).sum()),
        kl=float(F.kl_div(got_logp, ref_logp, log_target=True, reduction="sum")),
        agree=int((ref.argmax(-1) == got.argmax(-1)).sum()),
    )


def gap_recovered(value: float, *, ptq: float, base: float) -> float:
    """Share of plain PTQ's distance from the baseline that `value` closes: 1.0 all of it, 0 none, < 0 worse.

    Works for any metric (KL, top-1 agreement, perplexity): (ptq - value) / (ptq - base).
    """
    return (ptq - value) / (ptq - base) if ptq != base else float("nan")
