"""The fine-tune's output folder: what `edge.export` reads back.

In:  the trained model's full state dict (edge names, fake quantizers and LoRA wrappers included),
     the input checkpoint, the config, data and training state.
Out: a folder, written atomically (built beside it, then renamed):
       model.safetensors          the backbone in Hugging Face layout and names, float32
       config.json                the input's (or, for a Meta checkpoint, one written from its shape)
       tokenizer.json             the input's tokenizer
       adapter_model.safetensors  LoRA A/B per target linear (rank, alpha, targets in its header)
       training.json              the record: config, scheme, data hash and report, steps, losses, time
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import torch

from edge.checkpoint import Checkpoint, CheckpointFormat
from edge.config import ExportConfig
from edge.core.fields import to_plain
from edge.core.io import building_folder
from edge.finetune.data import TrainingData
from edge.finetune.lora import ADAPTERS_NAME, LoraSpec, save_adapters
from edge.finetune.train import TrainState

RECORD_NAME = "training.json"
RECORD_VERSION = 1


def split_state(
    state: dict[str, torch.Tensor], *, tied: bool
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Trained model state -> (backbone in HF names, adapters in edge names)."""
    backbone, adapters = {}, {}
    for name, t in state.items():
        t = t.detach().float().cpu().contiguous()
        if ".adaptor." in name:
            adapters[name] = t
            continue
        name = name.replace(".base.", ".")
        if name == "lm_head.weight":
            if not tied:
                backbone["lm_head.weight"] = t
            continue
        backbone["model." + name] = t
    if tied and "lm_head.weight" in state and "embed_tokens.weight" in state:
        assert torch.equal(state["lm_head.weight"], state["embed_tokens.weight"]), "tied weights diverged"
    return backbone, adapters


def hf_config(ckpt: Checkpoint) -> dict:
    """The input's config.json, or one written from a Meta checkpoint's shape."""
    if ckpt.format is CheckpointFormat.HF:
        return json.loads((ckpt.path / "config.json").read_text())
    a = ckpt.args
    rope = None if a.rope_scaling is None else {"rope_type": "llama3", **dataclasses.asdict(a.rope_scaling)}
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": a.dim,
        "num_hidden_layers": a.n_layers,
        "num_attention_heads": a.n_heads,
        "num_key_value_heads": a.n_kv_heads,
        "head_dim": a.head_dim,
        "intermediate_size": a.hidden_dim,
        "vocab_size": a.vocab_size,
        "rms_norm_eps": a.norm_eps,
        "rope_theta": a.rope_theta,
        "rope_scaling": rope,
        "max_position_embeddings": a.max_position_embeddings,
        "tie_word_embeddings": a.tie_word_embeddings,
        "bos_token_id": ckpt.bos_id,
        "eos_token_id": list(ckpt.eos_ids),
        "torch_dtype": "float32",
    }


def write_output(
    out: Path,
    *,
    state: dict[str, torch.Tensor],
    config: ExportConfig,
    ckpt: Checkpoint,
    data: TrainingData,
    train: TrainState,
    spec: LoraSpec | None,
    world: int,
    force: bool,
    data_path: Path,
) -> None:
    """Everything above -> the output folder, all or nothing."""
    from safetensors.torch import save_file

    from edge.core.machine import versions

    backbone, adapters = split_state(state, tied=ckpt.args.tie_word_embeddings)
    out.parent.mkdir(parents=True, exist_ok=True)
    with building_folder(out, force=force) as tmp:
        save_file(backbone, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        cfg = hf_config(ckpt) | {"torch_dtype": "float32"}
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        assert ckpt.tokenizer is not None
        shutil.copyfile(ckpt.tokenizer, tmp / ckpt.tokenizer.name)
        for extra in ("generation_config.json", "tokenizer_config.json", "special_tokens_map.json"):
            if (ckpt.path / extra).is_file():
                shutil.copyfile(ckpt.path / extra, tmp / extra)
        if spec is not None:
            save_adapters(tmp / ADAPTERS_NAME, adapters, spec)
        ft = config.finetune
        record = {
            "record_version": RECORD_VERSION,
            "finetune": to_plain(dataclasses.asdict(ft)),
            "quantization": to_plain(dataclasses.asdict(config.quantization)),
            "fake_quant": ft.fake_quant,
            "source_checkpoint": str(ckpt.path),
            "data": {
                "path": str(data_path),
                "sha256": data.sha256,
                "windows": int(data.tokens.shape[0]),
                "tokens": data.report.tokens,
                "trained_tokens": data.report.trained_tokens,
                "samples": data.report.samples,
                "used": data.report.used,
                "skipped": dict(data.report.skipped),
            },
            "steps": {s: len(v) for s, v in train.losses.items()},
            "losses": train.losses,
            "grad_norms": train.grad_norms,
            "train_seconds": round(train.seconds, 1),
            "world_size": world,
            "device": config.device.value,
            "lora": None
            if spec is None
            else {"rank": spec.rank, "alpha": spec.alpha, "scale": spec.scale, "targets": list(spec.targets)},
            "versions": versions(),
        }
        (tmp / RECORD_NAME).write_text(json.dumps(record, indent=1) + "\n")
