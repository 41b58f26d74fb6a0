"""The `finetune:` section of an export config: QAT and LoRA, read by both entry points.

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

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.lora import LORA_TARGETS
from edge.validate import bool_field, enum_field, float_field, int_field


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


@dataclass(frozen=True)
class QatStage:
    steps: int = 200
    learning_rate: float = 2.0e-5
    batch_size: int = 8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class LoraStage:
    steps: int = 200
    rank: int = 16
    alpha: float = 32.0
    targets: tuple[str, ...] = LORA_TARGETS
    learning_rate: float = 2.0e-4
    batch_size: int = 8


@dataclass(frozen=True)
class FinetuneConfig:
    data: Path | None = None
    data_format: DataFormat = DataFormat.AUTO
    output: Path | None = None
    max_length: int = 512
    packing: bool = True
    bad_samples: BadSamples = BadSamples.SKIP
    loss: Loss = Loss.LM
    fake_quant: bool = True
    seed: int = 0
    checkpoint_every: int = 100
    adapters: AdapterMode = AdapterMode.KEEP
    qat: QatStage = field(default_factory=QatStage)
    lora: LoraStage = field(default_factory=LoraStage)


STAGES = {"qat": QatStage, "lora": LoraStage}


def _fields(cls, part: dict, prefix: str, problems: list[str]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    for key in sorted(set(part) - names):
        problems.append(f"unknown key '{prefix}.{key}'")
    default = cls()
    return {n: part.get(n, getattr(default, n)) for n in names}


def parse_finetune(raw: Any, problems: list[str]) -> FinetuneConfig | None:
    """The `finetune:` mapping -> FinetuneConfig (None when absent); problems are appended, not raised."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        problems.append("finetune: expected a mapping")
        return None
    top = _fields(FinetuneConfig, {k: v for k, v in raw.items() if k not in STAGES}, "finetune", problems)
    stages = {}
    for name, cls in STAGES.items():
        part = raw.get(name) or {}
        if not isinstance(part, dict):
            problems.append(f"finetune.{name}: expected a mapping")
            part = {}
        stages[name] = _fields(cls, part, f"finetune.{name}", problems)
    k = "finetune."
    q, lo = stages["qat"], stages["lora"]
    qat = QatStage(
        steps=int_field(q["steps"], k + "qat.steps", problems, minimum=0),
        learning_rate=float_field(q["learning_rate"], k + "qat.learning_rate", problems, minimum=0.0),
        batch_size=int_field(q["batch_size"], k + "qat.batch_size", problems, minimum=1),
        weight_decay=float_field(q["weight_decay"], k + "qat.weight_decay", problems, minimum=0.0),
    )
    targets = lo["targets"]
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    if not isinstance(targets, (list, tuple)) or not targets or any(t not in LORA_TARGETS for t in targets):
        problems.append(f"finetune.lora.targets: {targets!r} is not a non-empty list drawn from {', '.join(LORA_TARGETS)}")
        targets = LORA_TARGETS
    lora = LoraStage(
        steps=int_field(lo["steps"], k + "lora.steps", problems, minimum=0),
        rank=int_field(lo["rank"], k + "lora.rank", problems, minimum=1),
        alpha=float_field(lo["alpha"], k + "lora.alpha", problems, minimum=0.0),
        targets=tuple(targets),
        learning_rate=float_field(lo["learning_rate"], k + "lora.learning_rate", problems, minimum=0.0),
        batch_size=int_field(lo["batch_size"], k + "lora.batch_size", problems, minimum=1),
    )
    paths = {}
    for key in ("data", "output"):
        value = top[key]
        if value is not None and (not isinstance(value, (str, Path)) or not str(value)):
            problems.append(f"finetune.{key}: {value!r} is not a path")
            value = None
        paths[key] = None if value is None else Path(value)
    config = FinetuneConfig(
        data=paths["data"],
        data_format=enum_field(DataFormat, top["data_format"], k + "data_format", problems),
        output=paths["output"],
        max_length=int_field(top["max_length"], k + "max_length", problems, minimum=8),
        packing=bool_field(top["packing"], k + "packing", problems),
        bad_samples=enum_field(BadSamples, top["bad_samples"], k + "bad_samples", problems),
        loss=enum_field(Loss, top["loss"], k + "loss", problems),
        fake_quant=bool_field(top["fake_quant"], k + "fake_quant", problems),
        seed=int_field(top["seed"], k + "seed", problems, minimum=0),
        checkpoint_every=int_field(top["checkpoint_every"], k + "checkpoint_every", problems, minimum=0),
        adapters=enum_field(AdapterMode, top["adapters"], k + "adapters", problems),
        qat=qat,
        lora=lora,
    )
    if qat.steps == 0 and lora.steps == 0:
        problems.append("finetune: qat.steps and lora.steps are both 0, so nothing would train")
    return config
