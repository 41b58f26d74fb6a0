"""The quantized model as an ONNX graph that onnxruntime-genai runs.

In:  a quantized `edge.model.Transformer`, its `Checkpoint` (tokenizer, special ids), an output folder.
Out: `model.onnx` + `model.onnx.data` (external weights), `genai_config.json` and the tokenizer files.

Built node by node with `onnx.helper` rather than through onnxruntime-genai's model builder: the
builder quantizes again from float weights (its rounding, its float embedding), and moving our
integers into its graph would depend on its internal tensor names. The graph is small:

  input_ids [B, S] -> int8 Gather * row scale          (embedding, 8-bit: ~1/4 of a float one)
  per layer:  SimplifiedLayerNormalization -> MatMulNBits q, k, v (int4, block 32, symmetric)
              -> GroupQueryAttention (rotary inside, KV cache past/present [B, Hkv, T, Dh])
              -> MatMulNBits o -> Add
              SimplifiedLayerNormalization -> MatMulNBits gate, up -> SiLU * up -> MatMulNBits down -> Add
  SimplifiedLayerNormalization -> MatMulNBits lm_head (8-bit) -> logits [B, S, V]

Logits cover every position, as in onnxruntime-genai's own models: its generator hands the model an
output buffer of [B, S, V] during the prompt (a last-position-only output is rejected), so prefill
pays for the output layer at every prompt position, which the .pte does not.

MatMulNBits takes unsigned codes with an implied zero point of 2^(bits-1), so an int4 value q is
stored as q + 8 and an int8 value as q + 128: the same integers and scales as the .pte, no zero
points, and `accuracy_level` 4 (8-bit activations, ONNX Runtime's int8 kernels on Arm). A per-channel
int8 weight repeats its row scale in every block of 32.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np

from edge.formats.weights import Weight, check_mappable, weight_of
from edge.model import ModelArgs, Transformer, TransformerBlock, rope_inverse_frequencies

ONNX_NAME = "model.onnx"
IR_VERSION = 10  # onnx 1.23 would write 14, which ONNX Runtime 1.31/1.32 refuse
OPSET = 21
BLOCK = 32  # MatMulNBits block for per-channel int8 (its row scale repeated) and the int4 groups


class _Graph:
    """Nodes and initializers, with unique names."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []

    def node(self, op: str, inputs: list[str], name: str, *, outputs: int = 1, domain: str = "", **attrs) -> list[str]:
        from onnx import helper

        outs = [f"{name}/out{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outs, name=name, domain=domain or None, **attrs))
        return outs

    def const(self, name: str, array: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name


def _matmul(g: _Graph, x: str, w: Weight, name: str) -> str:
    """x [B, S, K] -> x @ W^T [B, S, N]: MatMulNBits for int4 / int8, MatMul for float."""
    n, k = w.values.shape
    if w.bits == 0:
        return g.node("MatMul", [x, g.const(f"{name}.weight_t", w.values.T.astype(np.float32))], name)[0]
    block = w.group if w.bits == 4 else BLOCK
    scales = w.scales if w.bits == 4 else np.repeat(w.scales, k // BLOCK, axis=1)  # [N, K / block]
    codes = (w.values.astype(np.int16) + (1 << (w.bits - 1))).astype(np.uint8).reshape(n, k // block, block)
    if w.bits == 4:  # two codes per byte, the first in the low nibble
        codes = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return g.node(
        "MatMulNBits",
        [x, g.const(f"{name}.qweight", codes), g.const(f"{name}.scales", scales.astype(np.float32))],
        name,
        domain="com.microsoft",
        K=k,
        N=n,
        bits=w.bits,
        block_size=block,
        accuracy_level=4,
    )[0]


def _norm(g: _Graph, x: str, weight, eps: float, name: str) -> str:
    w = g.const(f"{name}.weight", weight.detach().float().numpy())
    return g.node("SimplifiedLayerNormalization", [x, w], name, axis=-1, epsilon=eps, stash_type=1)[0]


def _embedding(g: _Graph, ids: str, w: Weight) -> str:
    """input_ids [B, S] -> [B, S, D] float32 (int8 rows times their scale, or float rows)."""
    table = g.const("embed_tokens.weight", w.values)
    rows = g.node("Gather", [table, ids], "/embed/gather", axis=0)[0]
    if w.bits == 0:
        return rows
    if w.scales.shape[1] != 1:
        raise ValueError("the embedding has one scale per row")
    scale = g.node(
        "Gather", [g.const("embed_tokens.scales", w.scales.astype(np.float32)), ids], "/embed/scale", axis=0
    )[0]
    return g.node("Mul", [g.node("Cast", [rows], "/embed/cast", to=1)[0], scale], "/embed/mul")[0]  # [B,S,D] * [B,S,1]


def _attention_inputs(g: _Graph, a: ModelArgs, *, context: int) -> tuple[str, str, str, str]:
    """Model args, context -> GroupQueryAttention's shared inputs (seqlens_k, total length, cos cache, sin cache)."""
    from onnx import TensorProto

    # GroupQueryAttention's inputs from the mask: seqlens_k = tokens so far - 1, total = mask length.
    one = g.const("/const/one", np.array([1], dtype=np.int64))
    total = g.node("ReduceSum", ["attention_mask", one], "/mask/sum", keepdims=0)[0]
    seqlens_k = g.node("Cast", [g.node("Sub", [total, one], "/mask/sub")[0]], "/mask/seqlens_k", to=TensorProto.INT32)[
        0
    ]
    shape = g.node("Shape", ["attention_mask"], "/mask/shape")[0]
    total_len = g.node("Gather", [shape, g.const("/const/axis1", np.array(1, dtype=np.int64))], "/mask/total", axis=0)[
        0
    ]
    total_len = g.node("Cast", [total_len], "/mask/total_int32", to=TensorProto.INT32)[0]
    freqs = np.outer(
        np.arange(context, dtype=np.float32), rope_inverse_frequencies(a).numpy()
    )  # [T, Dh/2], llama3 scaling
    cos = g.const("/rope/cos_cache", np.cos(freqs).astype(np.float32))
    sin = g.const("/rope/sin_cache", np.sin(freqs).astype(np.float32))
    return seqlens_k, total_len, cos, sin


def _layer(
    g: _Graph, x: str, layer: TransformerBlock, i: int, a: ModelArgs, attn: tuple[str, str, str, str]
) -> tuple[str, list, list]:
    """Hidden state, decoder layer i -> (hidden state after it, its past KV graph inputs, its present KV outputs)."""
    from onnx import TensorProto, helper

    seqlens_k, total_len, cos, sin = attn
    kv_shape = ["batch_size", a.n_kv_heads, "past_sequence_length", a.head_dim]
    p = f"layers.{i}"
    att = layer.self_attn
    h = _norm(g, x, layer.input_layernorm.weight, layer.input_layernorm.eps, f"{p}.input_layernorm")
    q, k, v = (
        _matmul(g, h, weight_of(getattr(att, n), f"{p}.self_attn.{n}"), f"{p}.self_attn.{n}")
        for n in ("q_proj", "k_proj", "v_proj")
    )
    past_k, past_v = f"past_key_values.{i}.key", f"past_key_values.{i}.value"
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, kv_shape) for n in (past_k, past_v)]
    gqa = f"{p}.self_attn.gqa"
    g.nodes.append(
        helper.make_node(
            "GroupQueryAttention",
            [q, k, v, past_k, past_v, seqlens_k, total_len, cos, sin],
            [f"{gqa}/out0", f"present.{i}.key", f"present.{i}.value"],
            name=gqa,
            domain="com.microsoft",
            num_heads=a.n_heads,
            kv_num_heads=a.n_kv_heads,
            scale=1.0 / math.sqrt(a.head_dim),
            do_rotary=1,
            rotary_interleaved=0,
        )
    )
    outputs = [
        helper.make_tensor_value_info(
            f"present.{i}.{n}", TensorProto.FLOAT, ["batch_size", a.n_kv_heads, "total_sequence_length", a.head_dim]
        )
        for n in ("key", "value")
    ]
    o = _matmul(g, f"{gqa}/out0", weight_of(att.o_proj, f"{p}.self_attn.o_proj"), f"{p}.self_attn.o_proj")
    x = g.node("Add", [x, o], f"{p}/attn_residual")[0]
    h = _norm(
        g,
        x,
        layer.post_attention_layernorm.weight,
        layer.post_attention_layernorm.eps,
        f"{p}.post_attention_layernorm",
    )
    mlp = layer.mlp
    gate = _matmul(g, h, weight_of(mlp.gate_proj, f"{p}.mlp.gate_proj"), f"{p}.mlp.gate_proj")
    up = _matmul(g, h, weight_of(mlp.up_proj, f"{p}.mlp.up_proj"), f"{p}.mlp.up_proj")
    silu = g.node("Mul", [gate, g.node("Sigmoid", [gate], f"{p}.mlp.sigmoid")[0]], f"{p}.mlp.silu")[0]
    down = _matmul(
        g,
        g.node("Mul", [silu, up], f"{p}.mlp.gated")[0],
        weight_of(mlp.down_proj, f"{p}.mlp.down_proj"),
        f"{p}.mlp.down_proj",
    )
    x = g.node("Add", [x, down], f"{p}/mlp_residual")[0]
    return x, inputs, outputs


def build_model(model: Transformer, *, context: int):
    """Quantized Transformer -> onnx.ModelProto (weights inside; `save_onnx` moves them to external data)."""
    from onnx import TensorProto, helper

    check_mappable(model, target="onnx")
    a = model.args
    g = _Graph()
    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch_size", "sequence_length"]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "sequence_length", a.vocab_size])
    ]
    attn = _attention_inputs(g, a, context=context)

    x = _embedding(g, "input_ids", weight_of(model.embed_tokens, "embed_tokens"))
    for i, layer in enumerate(model.layers):
        x, past, present = _layer(g, x, layer, i, a, attn)
        inputs += past
        outputs += present
    x = _norm(g, x, model.norm.weight, model.norm.eps, "norm")
    logits = _matmul(g, x, weight_of(model.lm_head, "lm_head"), "lm_head")
    g.nodes.append(helper.make_node("Identity", [logits], ["logits"], name="/logits"))

    graph = helper.make_graph(g.nodes, "edge_llama", inputs, outputs, initializer=g.inits)
    proto = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid("com.microsoft", 1)],
        producer_name="edge",
    )
    proto.ir_version = IR_VERSION
    return proto


def genai_config(model: Transformer, *, context: int, bos_id: int, eos_ids: list[int]) -> dict:
    """The genai_config.json onnxruntime-genai reads beside model.onnx."""
    a = model.args
    return {
        "model": {
            "bos_token_id": bos_id,
            "context_length": context,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": []},
                "filename": ONNX_NAME,
                "head_size": a.head_dim,
                "hidden_size": a.dim,
                "inputs": {
                    "input_ids": "input_ids",
                    "attention_mask": "attention_mask",
                    "past_key_names": "past_key_values.%d.key",
                    "past_value_names": "past_key_values.%d.value",
                },
                "outputs": {
                    "logits": "logits",
                    "present_key_names": "present.%d.key",
                    "present_value_names": "present.%d.value",
                },
                "num_attention_heads": a.n_heads,
                "num_hidden_layers": a.n_layers,
                "num_key_value_heads": a.n_kv_heads,
            },
            "eos_token_id": eos_ids if len(eos_ids) > 1 else eos_ids[0],
            "pad_token_id": eos_ids[0],
            "type": "llama",
            "vocab_size": a.vocab_size,
        },
        "search": {
            "diversity_penalty": 0.0,
            "do_sample": False,
            "early_stopping": True,
            "length_penalty": 1.0,
            "max_length": context,
            "min_length": 0,
            "no_repeat_ngram_size": 0,
            "num_beams": 1,
            "num_return_sequences": 1,
            "past_present_share_buffer": True,
            "repetition_penalty": 1.0,
            "temperature": 1.0,
            "top_k": 1,
            "top_p": 1.0,
        },
    }


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def write_onnx_folder(
    model: Transformer, folder: Path, *, checkpoint_dir: Path, context: int, bos_id: int, eos_ids: list[int]
) -> int:
    """Quantized Transformer -> folder/{model.onnx, model.onnx.data, genai_config.json, tokenizer files}; bytes
    written."""
    import onnx

    folder.mkdir(parents=True, exist_ok=True)
    proto = build_model(model, context=context)
    onnx.save_model(
        proto,
        str(folder / ONNX_NAME),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=ONNX_NAME + ".data",
        size_threshold=1024,
    )
    (folder / (ONNX_NAME + ".data")).chmod(
        0o644
    )  # onnx creates it owner-only; the folder is meant to be copied to phones
    (folder / "genai_config.json").write_text(
        json.dumps(genai_config(model, context=context, bos_id=bos_id, eos_ids=eos_ids), indent=2) + "\n"
    )
    for name in TOKENIZER_FILES:
        if (checkpoint_dir / name).is_file():
            shutil.copyfile(checkpoint_dir / name, folder / name)
    if not (folder / "tokenizer_config.json").is_file():  # onnxruntime-genai refuses a tokenizer without one
        vocab = {
            t["id"]: t["content"] for t in json.loads((folder / "tokenizer.json").read_text()).get("added_tokens", [])
        }
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": vocab.get(bos_id),
            "eos_token": vocab.get(eos_ids[0]),
            "clean_up_tokenization_spaces": False,
            "model_max_length": context,
        }
        (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return sum(p.stat().st_size for p in folder.iterdir())
