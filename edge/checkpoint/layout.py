"""Where a checkpoint's tensors go: their names and shapes in `edge.model`'s terms.

In:  `ModelArgs`, a checkpoint's tensor names (HF or Meta's layout).
Out: `expected_shapes` (every weight a checkpoint must hold), `edge_name` (checkpoint name -> edge.model
     name), `meta_to_hf_rope_layout` (Meta's interleaved q/k rows -> HF's halves), `natural_key`.
"""

from __future__ import annotations

import re
from enum import Enum

import torch

from edge.model import ModelArgs


class CheckpointFormat(Enum):
    HF = "hf"
    META = "meta"


def expected_shapes(args: ModelArgs) -> dict[str, tuple[int, ...]]:
    """ModelArgs -> {edge.model parameter name: shape} for every weight a checkpoint must hold."""
    d, hd, f = args.dim, args.head_dim, args.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens.weight": (args.vocab_size, d), "norm.weight": (d,)}
    for i in range(args.n_layers):
        p = f"layers.{i}."
        shapes |= {
            p + "input_layernorm.weight": (d,),
            p + "post_attention_layernorm.weight": (d,),
            p + "self_attn.q_proj.weight": (args.n_heads * hd, d),
            p + "self_attn.k_proj.weight": (args.n_kv_heads * hd, d),
            p + "self_attn.v_proj.weight": (args.n_kv_heads * hd, d),
            p + "self_attn.o_proj.weight": (d, args.n_heads * hd),
            p + "mlp.gate_proj.weight": (f, d),
            p + "mlp.up_proj.weight": (f, d),
            p + "mlp.down_proj.weight": (d, f),
        }
    if not args.tie_word_embeddings:
        shapes["lm_head.weight"] = (args.vocab_size, d)
    return shapes


_META_NAMES = [
    (r"^tok_embeddings\.weight$", "embed_tokens.weight"),
    (r"^output\.weight$", "lm_head.weight"),
    (r"^norm\.weight$", "norm.weight"),
    (r"^layers\.(\d+)\.attention\.wq\.weight$", r"layers.\1.self_attn.q_proj.weight"),
    (r"^layers\.(\d+)\.attention\.wk\.weight$", r"layers.\1.self_attn.k_proj.weight"),
    (r"^layers\.(\d+)\.attention\.wv\.weight$", r"layers.\1.self_attn.v_proj.weight"),
    (r"^layers\.(\d+)\.attention\.wo\.weight$", r"layers.\1.self_attn.o_proj.weight"),
    (r"^layers\.(\d+)\.feed_forward\.w1\.weight$", r"layers.\1.mlp.gate_proj.weight"),
    (r"^layers\.(\d+)\.feed_forward\.w2\.weight$", r"layers.\1.mlp.down_proj.weight"),
    (r"^layers\.(\d+)\.feed_forward\.w3\.weight$", r"layers.\1.mlp.up_proj.weight"),
    (r"^layers\.(\d+)\.attention_norm\.weight$", r"layers.\1.input_layernorm.weight"),
    (r"^layers\.(\d+)\.ffn_norm\.weight$", r"layers.\1.post_attention_layernorm.weight"),
]


def edge_name(fmt: CheckpointFormat, name: str) -> str | None:
    """A checkpoint's tensor name -> the edge.model name, or None for tensors to skip."""
    if fmt is CheckpointFormat.HF:
        if name.endswith("rotary_emb.inv_freq"):
            return None
        return name.removeprefix("model.")
    if ".adaptor." in name:  # a QLoRA adapter follows its linear's name
        stem, _, rest = name.partition(".adaptor.")
        return edge_name(fmt, stem + ".weight").removesuffix(".weight") + ".adaptor." + rest  # type: ignore[union-attr]
    stem, _, suffix = name.rpartition(".")
    if suffix in ("scales", "zeros"):  # a pre-quantized weight's companions follow the weight's name
        return edge_name(fmt, stem + ".weight").removesuffix(".weight") + "." + suffix  # type: ignore[union-attr]
    for pattern, replacement in _META_NAMES:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return name


def meta_to_hf_rope_layout(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    # Meta's wq/wk interleave each head's rotary pairs; HF (and edge.model) keep them
    # in two halves. Same permutation as transformers' convert_llama_weights_to_hf.
    out_dim, in_dim = w.shape
    return w.view(n_heads, out_dim // n_heads // 2, 2, in_dim).transpose(1, 2).reshape(out_dim, in_dim)


def natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]
