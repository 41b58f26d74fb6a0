"""Model shape from a checkpoint's own description: Hugging Face `config.json` or Meta's `params.json`.

In:  the parsed JSON (and its path, for messages). Out: `edge.model.ModelArgs`, or one `EdgeError` naming the
     file and the missing or bad key.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from edge.core.errors import EdgeError
from edge.model import ModelArgs, RopeScaling


def read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EdgeError(f"cannot read {path}: {e}") from None
    if not isinstance(data, dict):
        raise EdgeError(f"{path} does not hold a JSON object")
    return data


def as_ids(value: object) -> tuple[int, ...]:
    if value is None:
        return ()
    if isinstance(value, int):
        return (value,)
    return tuple(int(v) for v in value)  # type: ignore[union-attr]


def hf_args(config: dict, path: Path) -> ModelArgs:
    model_type = config.get("model_type")
    architectures = config.get("architectures") or []
    if model_type != "llama" or any(a != "LlamaForCausalLM" for a in architectures):
        arch = ", ".join(architectures) or model_type or "unknown"
        raise EdgeError(f"{path}: architecture {arch} is not Llama (edge exports LlamaForCausalLM checkpoints)")
    try:
        dim, n_heads = int(config["hidden_size"]), int(config["num_attention_heads"])
        # transformers 5 nests rope settings in `rope_parameters`; 4.x configs use rope_scaling + rope_theta.
        rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
        rope_type = rope.get("rope_type", rope.get("type", "default"))
        if rope_type not in ("default", "llama3"):
            raise EdgeError(f"{path}: rope type {rope_type!r} is not supported (llama3 or default)")
        scaling = None
        if rope_type == "llama3":
            scaling = RopeScaling(
                factor=float(rope["factor"]),
                low_freq_factor=float(rope["low_freq_factor"]),
                high_freq_factor=float(rope["high_freq_factor"]),
                original_max_position_embeddings=int(rope["original_max_position_embeddings"]),
            )
        return ModelArgs(
            dim=dim,
            n_layers=int(config["num_hidden_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(config.get("num_key_value_heads") or n_heads),
            head_dim=int(config.get("head_dim") or dim // n_heads),
            hidden_dim=int(config["intermediate_size"]),
            vocab_size=int(config["vocab_size"]),
            norm_eps=float(config.get("rms_norm_eps", 1e-5)),
            rope_theta=float(rope.get("rope_theta", config.get("rope_theta", 10000.0))),
            rope_scaling=scaling,
            max_position_embeddings=int(config.get("max_position_embeddings", 2048)),
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeError(f"{path}: config.json is missing or has a bad value for {e}") from None


def meta_args(params: dict, path: Path) -> ModelArgs:
    try:
        dim, n_heads = int(params["dim"]), int(params["n_heads"])
        # Meta's FFN width rule (llama-models' FeedForward).
        hidden = int(2 * 4 * dim / 3)
        if params.get("ffn_dim_multiplier") is not None:
            hidden = int(float(params["ffn_dim_multiplier"]) * hidden)
        multiple_of = int(params.get("multiple_of", 256))
        hidden = multiple_of * math.ceil(hidden / multiple_of)
        scaling = None
        if params.get("use_scaled_rope"):
            # Llama 3.2's params.json says only `use_scaled_rope`; its factor is 32 (HF config of the same model).
            scaling = RopeScaling(
                factor=float(params.get("rope_scale_factor", 32.0)),
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=8192,
            )
        return ModelArgs(
            dim=dim,
            n_layers=int(params["n_layers"]),
            n_heads=n_heads,
            n_kv_heads=int(params.get("n_kv_heads") or n_heads),
            head_dim=dim // n_heads,
            hidden_dim=hidden,
            vocab_size=int(params["vocab_size"]),
            norm_eps=float(params.get("norm_eps", 1e-5)),
            rope_theta=float(params.get("rope_theta", 500000.0)),
            rope_scaling=scaling,
            max_position_embeddings=int(params.get("max_seq_len", 131072)),
            # Meta's checkpoints store `output.weight` even when the HF release ties it.
            tie_word_embeddings=False,
        )
    except (KeyError, TypeError, ValueError) as e:
        raise EdgeError(f"{path}: params.json is missing or has a bad value for {e}") from None
