"""The export stages for a checkpoint that `edge.finetune` wrote: checks, adapters, manifest record.

In:  `ExportConfig`, the opened `Checkpoint`.
Out: `check_finetuned` -> `Finetuned` (the training record and the adapters, every shape checked
     against the model) or None; EdgeError before any long work when the checkpoint does not
     fit the config: no training record where the config needs one, adapters that do not fit,
     adapters where the config has no `finetune:` section, or a record trained with another scheme.
     `attach` puts the adapters on the model (merged before quantizing, or kept in float after).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import torch

from edge.checkpoint import Checkpoint
from edge.config import ExportConfig
from edge.core.errors import EdgeError
from edge.core.fields import to_plain
from edge.core.io import sha256_file
from edge.finetune.lora import ADAPTERS_NAME, LoraSpec, adapter_bytes, load_adapters, merge_lora, read_adapters
from edge.finetune.output import RECORD_NAME
from edge.model import Transformer


@dataclass(frozen=True)
class Finetuned:
    record: dict
    record_sha256: str
    adapters: dict[str, torch.Tensor] | None
    spec: LoraSpec | None
    merge: bool


def check_finetuned(config: ExportConfig, ckpt: Checkpoint) -> Finetuned | None:
    """Raise EdgeError unless the checkpoint and the config agree about fine-tuning; -> what to attach."""
    from edge.config.finetune import AdapterMode

    adapters_file = ckpt.path / ADAPTERS_NAME
    if config.finetune is None:
        if adapters_file.is_file():
            raise EdgeError(
                f"{ckpt.path} holds LoRA adapters ({ADAPTERS_NAME}) but this config has no finetune: section; "
                "export it with a qat_lora config so they are not dropped"
            )
        return None
    record_path = ckpt.path / RECORD_NAME
    if not record_path.is_file():
        raise EdgeError(
            f"{ckpt.path} has no {RECORD_NAME}: this config exports a model trained by python -m edge.finetune "
            "(run it first, then pass its output as --checkpoint)"
        )
    try:
        record = json.loads(record_path.read_text())
        trained_scheme = record["quantization"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise EdgeError(f"{record_path} is not an edge training record ({type(e).__name__})") from None
    scheme = to_plain(dataclasses.asdict(config.quantization))
    if record.get("fake_quant") and trained_scheme != scheme:
        raise EdgeError(
            f"{ckpt.path} was trained against the scheme {trained_scheme}, but this export quantizes with {scheme}; "
            "export with the config it was trained with"
        )
    tensors = spec = None
    if adapters_file.is_file():
        tensors, spec = read_adapters(adapters_file)
        with torch.device("meta"):
            probe = Transformer(ckpt.args, max_context=2)
        load_adapters(probe, tensors, spec, source=str(adapters_file))  # shapes checked here, before any long work
    return Finetuned(
        record=record,
        record_sha256=sha256_file(record_path),
        adapters=tensors,
        spec=spec,
        merge=config.finetune.adapters is AdapterMode.MERGE,
    )


def attach(model: Transformer, ft: Finetuned | None, *, quantized: bool) -> int:
    """Merge the adapters into the float weights (before quantizing) or attach them in float (after); -> linears
    touched."""
    if ft is None or ft.adapters is None or ft.spec is None or ft.merge != (not quantized):
        return 0
    count = load_adapters(model, ft.adapters, ft.spec, source=ADAPTERS_NAME)
    if ft.merge:
        merge_lora(model)
    return count


def finetune_record(ft: Finetuned | None, model: Transformer | None = None) -> dict | None:
    """What the manifest says about the fine-tune: record hash, steps, adapters (mode, rank, size)."""
    if ft is None:
        return None
    out = {
        "training_record_sha256": ft.record_sha256,
        "steps": ft.record.get("steps"),
        "fake_quant": ft.record.get("fake_quant"),
        "data_sha256": ft.record.get("data", {}).get("sha256"),
    }
    if ft.spec is not None:
        out["adapters"] = {
            "mode": "merge" if ft.merge else "keep",
            "rank": ft.spec.rank,
            "alpha": ft.spec.alpha,
            "scale": ft.spec.scale,
            "targets": list(ft.spec.targets),
            "bytes": adapter_bytes(model) if (model is not None and not ft.merge) else 0,
        }
    return out
