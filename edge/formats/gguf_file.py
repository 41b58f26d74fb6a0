"""The quantized model as a GGUF file for llama.cpp, with the .pte's integers and scales.

In:  a quantized `edge.model.Transformer`, its checkpoint folder (tokenizer.json), an output path.
Out: model.gguf (written with the `gguf` package):
       int4 groups of 32 -> Q4_0 blocks: fp16 scale d, 32 codes q + 8 (value = (code - 8) * d)
       per-channel int8  -> Q8_0 blocks: the row's scale repeated in each block of 32, rounded to
                            fp16 (the format's block scale; the .pte keeps it fp32): within 2^-11
       norms             -> F32; the llama3 rope scaling as rope_freqs.weight (llama.cpp's layout)
     q/k rows are permuted into llama.cpp's interleaved rope order, as convert_hf_to_gguf.py does.
     edge rounds every int4 group scale to bf16 (`edge.quant.scheme.bf16_exact`, as XNNPACK stores them),
     and fp16 holds any bf16 value between 2^-14 and 65504 exactly, so the Q4_0 weights are the .pte's
     bit for bit; a group scale outside that range is refused rather than rounded.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from edge.core.errors import EdgeError
from edge.formats.weights import Weight, check_mappable, weight_of
from edge.model import Transformer, rope_inverse_frequencies

GGUF_NAME = "model.gguf"
QK = 32  # llama.cpp's Q4_0 / Q8_0 block


def _fp16_exact(scales: np.ndarray, name: str) -> np.ndarray:
    half = scales.astype(np.float16)
    if not np.array_equal(half.astype(np.float32), scales):
        bad = scales[half.astype(np.float32) != scales]
        raise EdgeError(
            f"gguf: {name} has scales fp16 cannot hold exactly (e.g. {float(bad.flat[0]):.3g}); "
            "llama.cpp's Q4_0/Q8_0 blocks store fp16 scales"
        )
    return half


def q4_0_blocks(w: Weight) -> np.ndarray:
    """int4 [N, K] in groups of 32 -> Q4_0 bytes [N, K/32 * 18]."""
    n, k = w.values.shape
    d = _fp16_exact(w.scales, w.name).reshape(n, k // QK, 1).view(np.uint8)  # [N, B, 2]
    codes = (w.values.astype(np.int16) + 8).astype(np.uint8).reshape(n, k // QK, QK)
    qs = codes[..., : QK // 2] | (codes[..., QK // 2 :] << 4)  # element j low nibble, j + 16 high nibble
    return np.concatenate([d, qs], axis=-1).reshape(n, -1)


def _fp16_rounded(scales: np.ndarray, name: str) -> np.ndarray:
    half = scales.astype(np.float16)
    if not np.all(np.isfinite(half)) or np.any((half == 0) & (scales != 0)):
        raise EdgeError(f"gguf: {name} has scales outside fp16's range; llama.cpp's Q8_0 blocks store fp16 scales")
    return half


def q8_0_blocks(w: Weight) -> np.ndarray:
    """int8 [N, K], one scale per row -> Q8_0 bytes [N, K/32 * 34] (the row scale, in fp16, in every block)."""
    n, k = w.values.shape
    d = np.repeat(_fp16_rounded(w.scales, w.name), k // QK, axis=1).reshape(n, k // QK, 1).view(np.uint8)
    qs = w.values.reshape(n, k // QK, QK).view(np.uint8)
    return np.concatenate([d, qs], axis=-1).reshape(n, -1)


def _permute_rows(w: Weight, n_head: int) -> Weight:
    """HF's rotate_half q/k row order -> llama.cpp's interleaved pairs (LlamaModel.permute)."""

    def p(a: np.ndarray) -> np.ndarray:
        return a.reshape(n_head, 2, a.shape[0] // n_head // 2, *a.shape[1:]).swapaxes(1, 2).reshape(a.shape)

    return Weight(name=w.name, bits=w.bits, values=p(w.values), scales=None if w.scales is None else p(w.scales))


def _add(writer, name: str, w: Weight) -> None:
    from gguf import GGMLQuantizationType as Q

    if w.bits == 0:
        writer.add_tensor(name, w.values.astype(np.float32))
    elif w.bits == 4:
        if w.group != QK:
            raise EdgeError(f"gguf: {w.name} has int4 groups of {w.group}; Q4_0 blocks hold 32")
        writer.add_tensor(name, q4_0_blocks(w), raw_dtype=Q.Q4_0)
    else:
        if w.group != w.values.shape[1] or w.values.shape[1] % QK:
            raise EdgeError(f"gguf: {w.name} is not per-channel int8 over a multiple of 32 columns")
        writer.add_tensor(name, q8_0_blocks(w), raw_dtype=Q.Q8_0)


def _tokenizer(writer, checkpoint_dir: Path, *, vocab_size: int, bos_id: int, eos_ids: list[int]) -> None:
    """tokenizer.json (byte-level BPE, as Llama 3's) -> llama.cpp's gpt2-style vocabulary keys."""
    path = checkpoint_dir / "tokenizer.json"
    try:
        tok = json.loads(path.read_text(encoding="utf-8"))
        model = tok["model"]
        assert model["type"] == "BPE"
    except (OSError, ValueError, KeyError, AssertionError):
        raise EdgeError(
            f"gguf: {path} is missing or not a BPE tokenizer.json; llama.cpp's vocabulary is made from one"
        ) from None
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [5] * vocab_size  # UNUSED until named
    for text, i in model["vocab"].items():
        if i < vocab_size:
            tokens[i], types[i] = text, 1  # NORMAL
    for added in tok.get("added_tokens", []):
        if added["id"] < vocab_size:
            tokens[added["id"]], types[added["id"]] = (
                added["content"],
                3 if added.get("special") else 4,
            )  # CONTROL / USER_DEFINED
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(_pre_tokenizer(tok))
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    writer.add_bos_token_id(bos_id)
    writer.add_eos_token_id(eos_ids[0])
    writer.add_add_bos_token(True)


LLAMA3_SPLIT = (
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|"
    "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
)


def _pre_tokenizer(tok: dict) -> str:
    """tokenizer.json's pre-tokenizer -> llama.cpp's name for it: Llama 3's split regex ("llama-bpe"),
    or plain byte-level BPE with GPT-2's regex ("gpt-2")."""
    pre = tok.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre])
    if any(p.get("type") == "Split" and p.get("pattern", {}).get("Regex") == LLAMA3_SPLIT for p in parts):
        return "llama-bpe"
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in parts):
        return "gpt-2"
    raise EdgeError(
        "gguf: the tokenizer's pre-tokenizer is neither Llama 3's nor GPT-2's byte-level BPE; "
        "llama.cpp would split text differently"
    )


def write_gguf(
    model: Transformer, path: Path, *, checkpoint_dir: Path, context: int, bos_id: int, eos_ids: list[int]
) -> int:
    """Quantized Transformer -> GGUF file at `path`; bytes written."""
    import gguf

    check_mappable(model, target="gguf")
    a = model.args
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("edge export")
    writer.add_block_count(a.n_layers)
    writer.add_context_length(context)
    writer.add_embedding_length(a.dim)
    writer.add_feed_forward_length(a.hidden_dim)
    writer.add_head_count(a.n_heads)
    writer.add_head_count_kv(a.n_kv_heads)
    writer.add_key_length(a.head_dim)
    writer.add_value_length(a.head_dim)
    writer.add_rope_dimension_count(a.head_dim)
    writer.add_rope_freq_base(a.rope_theta)
    writer.add_layer_norm_rms_eps(a.norm_eps)
    writer.add_vocab_size(a.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q4_0)
    _tokenizer(writer, checkpoint_dir, vocab_size=a.vocab_size, bos_id=bos_id, eos_ids=eos_ids)

    if a.rope_scaling is not None:  # llama.cpp divides each frequency by its factor: base / scaled
        base = 1.0 / (a.rope_theta ** (np.arange(0, a.head_dim, 2, dtype=np.float32) / a.head_dim))
        writer.add_tensor("rope_freqs.weight", (base / rope_inverse_frequencies(a).numpy()).astype(np.float32))
    _add(writer, "token_embd.weight", weight_of(model.embed_tokens, "embed_tokens"))
    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    for i, layer in enumerate(model.layers):
        writer.add_tensor(f"blk.{i}.attn_norm.weight", layer.input_layernorm.weight.detach().float().numpy())
        writer.add_tensor(f"blk.{i}.ffn_norm.weight", layer.post_attention_layernorm.weight.detach().float().numpy())
        for ours, theirs in names.items():
            w = weight_of(layer.get_submodule(ours), f"layers.{i}.{ours}")
            if theirs in ("attn_q", "attn_k"):
                w = _permute_rows(w, a.n_heads if theirs == "attn_q" else a.n_kv_heads)
            _add(writer, f"blk.{i}.{theirs}.weight", w)
    writer.add_tensor("output_norm.weight", model.norm.weight.detach().float().numpy())
    _add(writer, "output.weight", weight_of(model.lm_head, "lm_head"))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path.stat().st_size
