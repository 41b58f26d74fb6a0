"""The `finetune:` section of an export config: QAT and LoRA, read by both entry points; data only.

In:  the YAML mapping under `finetune:` (and `--...` flags with the same names).
Out: `FinetuneConfig`, validated with the rest of `ExportConfig` (one error lists every problem).

    finetune:
      data: null               # training data file (--data): .txt, Alpaca .json, messages/ShareGPT .jsonl
      data_format: auto        # auto (from the extension) | text | alpaca | messages
      output: null             # fine-tune output folder (--output of edge.finetune)
      max_length: 512          # tokens per training window
      packing: true            # concatenate samples into full windows (false: one sample per window, padded)
      bad_samples: skip        # skip (counted and reported) | error (stop at the first)
      loss: lm                 # lm: cross-entropy on the data | distill: KL to the unquantized checkpoint
      fake_quant: true         # false: the same fine-tune in float (the control run)
      seed: 0
      checkpoint_every: 100    # steps between resumable checkpoints (0: only at the end)
      adapters: keep           # keep: float adapters in the .pte | merge: folded in before quantizing
      qat:                     # stage 1: the whole backbone trains, fake-quantized
        steps: 200             # 0 skips the stage
        learning_rate: 2.0e-5
        batch_size: 8
        weight_decay: 0.0
      lora:                    # stage 2: backbone frozen (still fake-quantized), adapters train
        steps: 200
        rank: 16
        alpha: 32.0
        targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]
        learning_rate: 2.0e-4
        batch_size: 8
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.core.fields import option

# The linears LoRA may adapt, in edge.model's names (the fine-tune's and QLoRA checkpoints' targets).
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class DataFormat(enum.Enum):
    AUTO = "auto"
    TEXT = "text"  # plain text, LM loss on every token
    ALPACA = "alpaca"  # JSON list (or JSONL) of {instruction, input, output}
    MESSAGES = "messages"  # JSONL of {"messages": [{role, content}]} or ShareGPT {"conversations": [{from, value}]}


class BadSamples(enum.Enum):
    SKIP = "skip"
    ERROR = "error"


class Loss(enum.Enum):
    LM = "lm"  # cross-entropy on the data's next tokens (SFT, continued pretraining)
    DISTILL = "distill"  # KL from the unquantized checkpoint's own next-token distribution (self-distillation)


class AdapterMode(enum.Enum):
    KEEP = "keep"  # adapters stay float beside the quantized backbone: 8da4w(x) + scale * B(A(x))
    MERGE = "merge"  # W + scale * B @ A, then quantized like any weight


def _targets(value: Any, key: str, problems: list[str]) -> tuple[str, ...]:
    """[q_proj, v_proj] or "q_proj,v_proj" -> a tuple drawn from LORA_TARGETS (all of them, with a problem,
    otherwise)."""
    targets = [t.strip() for t in value.split(",") if t.strip()] if isinstance(value, str) else value
    if not isinstance(targets, (list, tuple)) or not targets or any(t not in LORA_TARGETS for t in targets):
        problems.append(f"{key}: {targets!r} is not a non-empty list drawn from {', '.join(LORA_TARGETS)}")
        return LORA_TARGETS
    return tuple(targets)


@dataclass(frozen=True)
class QatStage:
    steps: int = option(200, help="stage 1: the whole backbone trains, fake-quantized (0 skips the stage)", min=0)
    learning_rate: float = option(2.0e-5, help="AdamW learning rate", min=0.0)
    batch_size: int = option(8, help="windows per step", min=1)
    weight_decay: float = option(0.0, help="AdamW weight decay", min=0.0)


@dataclass(frozen=True)
class LoraStage:
    steps: int = option(200, help="stage 2: backbone frozen (still fake-quantized), adapters train (0 skips it)", min=0)
    rank: int = option(16, help="adapter rank", min=1)
    alpha: float = option(32.0, help="adapter scale is alpha / rank", min=0.0)
    targets: tuple[str, ...] = option(LORA_TARGETS, help="linears that get adapters", check=_targets)
    learning_rate: float = option(2.0e-4, help="AdamW learning rate", min=0.0)
    batch_size: int = option(8, help="windows per step", min=1)


@dataclass(frozen=True)
class FinetuneConfig:
    data: Path | None = option(None, help="training data file: .txt, Alpaca .json, messages/ShareGPT .jsonl")
    data_format: DataFormat = option(DataFormat.AUTO, help="auto (from the extension), text, alpaca or messages")
    output: Path | None = option(None, help="fine-tune output folder (--output of edge.finetune)")
    max_length: int = option(512, help="tokens per training window", min=8)
    packing: bool = option(True, help="concatenate samples into full windows (false: one sample per window, padded)")
    bad_samples: BadSamples = option(BadSamples.SKIP, help="skip (counted and reported) or error (stop at the first)")
    loss: Loss = option(Loss.LM, help="lm: cross-entropy on the data; distill: KL to the unquantized checkpoint")
    fake_quant: bool = option(True, help="false: the same fine-tune in float (the control run)")
    seed: int = option(0, help="seed of data order and adapter initialisation", min=0)
    checkpoint_every: int = option(100, help="steps between resumable checkpoints (0: only at the end)", min=0)
    adapters: AdapterMode = option(
        AdapterMode.KEEP, help="keep: float adapters in the .pte; merge: folded in before quantizing"
    )
    qat: QatStage = option(help="stage 1: QAT", factory=QatStage)
    lora: LoraStage = option(help="stage 2: LoRA", factory=LoraStage)


STAGES = {"qat": QatStage, "lora": LoraStage}


def check_finetune(config: FinetuneConfig, problems: list[str]) -> None:
    """Rules across the fine-tune's fields (each field's own type and range are checked by the parser)."""
    if config.qat is not None and config.lora is not None and config.qat.steps == 0 and config.lora.steps == 0:
        problems.append("finetune: qat.steps and lora.steps are both 0, so nothing would train")
