"""Meta's pre-quantized Llama checkpoints (SpinQuant_INT4_EO8), loaded with their integers unchanged.

In:  a Meta checkpoint folder (`edge.checkpoint.open_checkpoint`) whose params.json
     holds `quantization_args` ({"group_size": 32, "scheme":
     "int4_weight_int8_dynamic_activation", "spinquant": true}) and whose
     consolidated.00.pth holds, under Meta's names:
       * block linears `layers.{i}.attention.w{q,k,v,o}`, `layers.{i}.feed_forward.w{1,2,3}`:
         `.weight` int8 [out, in] holding int4 values in [-8, 7], `.scales` float [out, in / group];
       * `tok_embeddings` and `output`: `.weight` int8 [rows, dim], `.scales` float [rows, 1] or [rows];
       * optionally `.zeros` beside any `.scales` (all zero: the scheme is symmetric);
       * float norm weights. R1/R2 are already in the weights, and R4's inverse in w2.
     (ExecuTorch: examples/models/llama/source_transformation/pre_quantization.py;
     llama-models: models/llama3/quantization/loader.py.)
Out: `load_prequantized_model` -> `edge.model.Transformer` holding torchao
     `IntxUnpackedToInt8Tensor` weights built from those integers and scales
     (int4 groups + 8-bit dynamic activations for block linears, int8 per channel
     for the output layer, int8 per-channel lookup for the embedding), float32
     norms, and SpinQuant's online Hadamard (R4) on every down_proj's input;
     `prequantized_report` -> the `QuantReport` describing it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from edge.checkpoint import Checkpoint, _edge_name, _meta_to_hf_rope_layout, _raw_tensors, expected_shapes
from edge.checkpoint_args import meta_args
from edge.config import WeightBits
from edge.errors import EdgeError
from edge.lora import LORA_TARGETS, LoraSpec, load_adapters
from edge.model import ModelArgs, RMSNorm, Transformer, online_hadamard_accepts
from edge.spinquant.fold import insert_online_hadamard
from edge.quantize import QuantReport, intx_tensor_from_integers

SCHEME = "int4_weight_int8_dynamic_activation"  # the only scheme llama-models' loader accepts


def prequantized_group_size(params: dict) -> int | None:
    """params.json -> the int4 group size of a pre-quantized checkpoint, None for a float one.

    Raises EdgeError for variants edge cannot export as they are.
    """
    qargs = params.get("quantization_args")
    if qargs is None:
        return None
    if not isinstance(qargs, dict):
        raise EdgeError(f"quantization_args must be a mapping, not {qargs!r}")
    if qargs.get("scheme", SCHEME) != SCHEME:
        raise EdgeError(f"quantization scheme {qargs['scheme']!r} is not supported (only {SCHEME})")
    group = qargs.get("group_size")
    if isinstance(group, bool) or not isinstance(group, int) or group < 1 or group & (group - 1):
        raise EdgeError(f"quantization_args.group_size {group!r} is not a power of two (XNNPACK's blockwise kernels need one)")
    args = meta_args(params, Path("params.json"))
    for what, width in (("model width", args.dim), ("FFN width", args.hidden_dim)):
        if width % group:
            raise EdgeError(f"quantization_args.group_size {group} does not divide the {what} {width}")
    prequantized_lora(params)  # malformed lora_args are refused here, with the rest of params.json
    f = args.hidden_dim
    if is_rotated(params) and not online_hadamard_accepts(f):
        raise EdgeError(f"FFN width {f} is not 2^k or 28*2^k, which SpinQuant's online Hadamard (R4) needs")
    return group


def is_rotated(params: dict) -> bool:
    """SpinQuant checkpoints (R4 folded into w2) say `"spinquant": true`; without the key, a checkpoint
    with `lora_args` is QLoRA (not rotated) and one without is SpinQuant."""
    return bool(params.get("quantization_args", {}).get("spinquant", params.get("lora_args") is None))


def prequantized_lora(params: dict) -> tuple[int, float] | None:
    """params.json `lora_args` -> (rank, scale) of a QLoRA checkpoint's adapters (y += scale * B(A(x))), or None."""
    la = params.get("lora_args")
    if la is None:
        return None
    rank, scale = (la.get("rank"), la.get("scale")) if isinstance(la, dict) else (None, None)
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise EdgeError(f"lora_args.rank {rank!r} is not a positive integer")
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale):
        raise EdgeError(f"lora_args.scale {scale!r} is not a number")
    return rank, float(scale)


def scale_shapes(args: ModelArgs, group_size: int) -> dict[str, tuple[int, ...]]:
    """ModelArgs -> {edge.model name of each `.scales`: shape}: [out, in / group] for block linears, [rows, 1] otherwise."""
    shapes: dict[str, tuple[int, ...]] = {}
    for name, shape in expected_shapes(args).items():
        stem = name.removesuffix(".weight")
        if stem in ("embed_tokens", "lm_head"):
            shapes[stem + ".scales"] = (shape[0], 1)
        elif len(shape) == 2:
            shapes[stem + ".scales"] = (shape[0], shape[1] // group_size)
    return shapes


def per_channel_shape(shape: tuple[int, ...], want: tuple[int, ...]) -> tuple[int, ...]:
    """Per-channel scales stored as [rows] (ExecuTorch squeezes them) -> [rows, 1]; any other shape unchanged."""
    return (*shape, 1) if len(shape) == 1 and tuple(want[1:]) == (1,) else tuple(shape)


def prequantized_report(ckpt: Checkpoint) -> QuantReport:
    """The scheme a pre-quantized checkpoint brings, stated as `edge.quantize.describe` states its own."""
    group_size = ckpt.prequantized_group_size
    params = json.loads((ckpt.path / "params.json").read_text())
    ours = "pre-quantized by the checkpoint"
    scheme = {
        "transformer_block_linears": f"{ours} (int4 groups of {group_size}): "
        f"8-bit dynamic per-token activations, int4 symmetric weights, groups of {group_size}",
        "output_layer": f"{ours} (int8 per channel): 8-bit dynamic per-token activations, int8 symmetric weights, per channel",
        "embedding": f"{ours} (int8 per channel): int8 symmetric weights, per channel",
    }
    if is_rotated(params):
        scheme["down_proj_input"] = "SpinQuant's online Hadamard (R4), llama::fast_hadamard_transform"
    if (lora := prequantized_lora(params)) is not None:
        scheme["lora_adapters"] = f"QLoRA adapters of rank {lora[0]}, scale {lora[1]:g}, kept in float32: 8da4w(x) + scale * B(A(x))"
    return QuantReport(scheme=scheme)


def load_prequantized_model(ckpt: Checkpoint, *, max_context: int, full_logits: bool = False) -> Transformer:
    """Pre-quantized Checkpoint -> `Transformer` with the checkpoint's own integers, float32 elsewhere.

    Built on the meta device; tensors are read one at a time (mmap) and a weight
    waits only until its `.scales` arrive, so at most one copy of the model exists.
    """
    if ckpt.prequantized_group_size is None:
        raise EdgeError(f"{ckpt.path} is not pre-quantized (params.json has no quantization_args); use edge.checkpoint.load_model")
    with torch.device("meta"):
        model = Transformer(ckpt.args, max_context=max_context, full_logits=full_logits)
    pending: dict[str, dict[str, torch.Tensor]] = {}  # module name -> {"weight"/"scales": tensor}
    adapters: dict[str, torch.Tensor] = {}
    for name, tensor in _raw_tensors(ckpt, shapes_only=False):
        edge_name = _edge_name(ckpt.format, name)
        if edge_name is None:
            continue
        assert isinstance(tensor, torch.Tensor)
        if ".adaptor." in edge_name:
            if edge_name.endswith((".self_attn.q_proj.adaptor.B.weight", ".self_attn.k_proj.adaptor.B.weight")):
                heads = ckpt.args.n_heads if ".q_proj." in edge_name else ckpt.args.n_kv_heads
                tensor = _meta_to_hf_rope_layout(tensor, heads)  # B's rows are q/k output rows
            adapters[edge_name] = tensor.float()  # bf16 -> fp32 is exact
            continue
        stem, _, kind = edge_name.rpartition(".")
        module = model.get_submodule(stem)
        if isinstance(module, RMSNorm):
            if not tensor.is_floating_point():
                raise EdgeError(f"{ckpt.path}: {name} is {tensor.dtype}, not a float norm weight")
            module.weight = nn.Parameter(tensor.float(), requires_grad=False)
        elif kind == "zeros":
            if torch.count_nonzero(tensor):
                raise EdgeError(f"{ckpt.path}: {name} holds non-zero zero points; only symmetric quantization is supported")
        else:
            parts = pending.setdefault(stem, {})
            parts[kind] = tensor
            if len(parts) == 2:
                _assign(ckpt, model, stem, parts.pop("weight"), parts.pop("scales"))
                del pending[stem]
    for name, p in model.named_parameters():
        if p.is_meta:  # open_checkpoint's shape check rules this out; kept so no meta tensor ever escapes
            raise EdgeError(f"{ckpt.path}: {name} (or its scales) missing from the checkpoint")
    params = json.loads((ckpt.path / "params.json").read_text())
    if is_rotated(params):
        for block in model.layers:
            insert_online_hadamard(block)  # R4; its inverse is already folded into w2
    lora = prequantized_lora(params)
    if lora is None and adapters:
        raise EdgeError(f"{ckpt.path}: LoRA adapters (.adaptor.) present but params.json has no lora_args")
    if lora is not None:
        rank, scale = lora
        targets = tuple(sorted({n.split(".")[3] for n in adapters}, key=LORA_TARGETS.index))
        if not targets:
            raise EdgeError(f"{ckpt.path}: params.json has lora_args but the checkpoint holds no .adaptor. tensors")
        load_adapters(model, adapters, LoraSpec(rank=rank, alpha=scale * rank, targets=targets), source=str(ckpt.path))
    model.cast_buffers(torch.float32)
    return model.eval()


def _assign(ckpt: Checkpoint, model: Transformer, stem: str, weight: torch.Tensor, scales: torch.Tensor) -> None:
    """Checkpoint integers + scales -> torchao weight of `model.<stem>` (q/k rows moved to HF's rope layout)."""
    module = model.get_submodule(stem)
    if weight.dtype != torch.int8:
        raise EdgeError(f"{ckpt.path}: {stem}.weight is {weight.dtype}, but a pre-quantized checkpoint stores int8")
    if not scales.is_floating_point():
        raise EdgeError(f"{ckpt.path}: {stem}.scales is {scales.dtype}, not a float tensor")
    scales = scales.reshape(weight.shape[0], -1)  # per channel: [rows] -> [rows, 1]
    if stem.endswith(("q_proj", "k_proj")):
        heads = ckpt.args.n_heads if stem.endswith("q_proj") else ckpt.args.n_kv_heads
        weight, scales = _meta_to_hf_rope_layout(weight, heads), _meta_to_hf_rope_layout(scales, heads)
    per_row = stem in ("embed_tokens", "lm_head")
    bits = WeightBits.INT8 if per_row else WeightBits.INT4
    try:
        qweight = intx_tensor_from_integers(weight, scales.float(), bits=bits, embedding=isinstance(module, nn.Embedding),
                                            bf16_scales=False)
    except EdgeError as e:
        raise EdgeError(f"{ckpt.path}: {stem}.weight: {e}") from None
    module.weight = nn.Parameter(qweight, requires_grad=False)
