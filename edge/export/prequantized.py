"""The export's load stage for Meta's pre-quantized checkpoints: their integers, unchanged, in a model.

In:  a pre-quantized `Checkpoint` (params.json with `quantization_args`: see `edge.checkpoint.prequantized`).
Out: `load_prequantized_model` -> `edge.model.Transformer` holding torchao
     `IntxUnpackedToInt8Tensor` weights built from those integers and scales
     (int4 groups + 8-bit dynamic activations for block linears, int8 per channel
     for the output layer, int8 per-channel lookup for the embedding), float32
     norms, SpinQuant's online Hadamard (R4) on every down_proj's input, and QLoRA's
     float adapters where the checkpoint has them;
     `prequantized_report` -> the `QuantReport` describing it.
"""

from __future__ import annotations

import json

import torch
from torch import nn

from edge.checkpoint import Checkpoint, edge_name, meta_to_hf_rope_layout, raw_tensors
from edge.checkpoint.prequantized import is_rotated, prequantized_lora
from edge.config import WeightBits
from edge.config.finetune import LORA_TARGETS
from edge.core.errors import EdgeError
from edge.finetune.lora import LoraSpec, load_adapters
from edge.model import RMSNorm, Transformer
from edge.quant.scheme import QuantReport, intx_tensor_from_integers
from edge.spinquant.fold import insert_online_hadamard


def prequantized_report(ckpt: Checkpoint) -> QuantReport:
    """The scheme a pre-quantized checkpoint brings, stated as `edge.quant.scheme.describe` states its own."""
    group_size = ckpt.prequantized_group_size
    params = json.loads((ckpt.path / "params.json").read_text())
    ours = "pre-quantized by the checkpoint"
    scheme = {
        "transformer_block_linears": f"{ours} (int4 groups of {group_size}): "
        f"8-bit dynamic per-token activations, int4 symmetric weights, groups of {group_size}",
        "output_layer": f"{ours} (int8 per channel): "
        "8-bit dynamic per-token activations, int8 symmetric weights, per channel",
        "embedding": f"{ours} (int8 per channel): int8 symmetric weights, per channel",
    }
    if is_rotated(params):
        scheme["down_proj_input"] = "SpinQuant's online Hadamard (R4), llama::fast_hadamard_transform"
    if (lora := prequantized_lora(params)) is not None:
        scheme["lora_adapters"] = (
            f"QLoRA adapters of rank {lora[0]}, scale {lora[1]:g}, kept in float32: 8da4w(x) + scale * B(A(x))"
        )
    return QuantReport(scheme=scheme)


def load_prequantized_model(ckpt: Checkpoint, *, max_context: int, full_logits: bool = False) -> Transformer:
    """Pre-quantized Checkpoint -> `Transformer` with the checkpoint's own integers, float32 elsewhere.

    Built on the meta device; tensors are read one at a time (mmap) and a weight
    waits only until its `.scales` arrive, so at most one copy of the model exists.
    """
    if ckpt.prequantized_group_size is None:
        raise EdgeError(
            f"{ckpt.path} is not pre-quantized (params.json has no quantization_args); use edge.checkpoint.load_model"
        )
    with torch.device("meta"):
        model = Transformer(ckpt.args, max_context=max_context, full_logits=full_logits)
    pending: dict[str, dict[str, torch.Tensor]] = {}  # module name -> {"weight"/"scales": tensor}
    adapters: dict[str, torch.Tensor] = {}
    for name, tensor in raw_tensors(ckpt, shapes_only=False):
        model_name = edge_name(ckpt.format, name)
        if model_name is None:
            continue
        assert isinstance(tensor, torch.Tensor)
        if ".adaptor." in model_name:
            if model_name.endswith((".self_attn.q_proj.adaptor.B.weight", ".self_attn.k_proj.adaptor.B.weight")):
                heads = ckpt.args.n_heads if ".q_proj." in model_name else ckpt.args.n_kv_heads
                tensor = meta_to_hf_rope_layout(tensor, heads)  # B's rows are q/k output rows
            adapters[model_name] = tensor.float()  # bf16 -> fp32 is exact
            continue
        stem, _, kind = model_name.rpartition(".")
        module = model.get_submodule(stem)
        if isinstance(module, RMSNorm):
            if not tensor.is_floating_point():
                raise EdgeError(f"{ckpt.path}: {name} is {tensor.dtype}, not a float norm weight")
            module.weight = nn.Parameter(tensor.float(), requires_grad=False)
        elif kind == "zeros":
            if torch.count_nonzero(tensor):
                raise EdgeError(
                    f"{ckpt.path}: {name} holds non-zero zero points; only symmetric quantization is supported"
                )
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
        weight, scales = meta_to_hf_rope_layout(weight, heads), meta_to_hf_rope_layout(scales, heads)
    per_row = stem in ("embed_tokens", "lm_head")
    bits = WeightBits.INT8 if per_row else WeightBits.INT4
    try:
        qweight = intx_tensor_from_integers(
            weight, scales.float(), bits=bits, embedding=isinstance(module, nn.Embedding), bf16_scales=False
        )
    except EdgeError as e:
        raise EdgeError(f"{ckpt.path}: {stem}.weight: {e}") from None
    module.weight = nn.Parameter(qweight, requires_grad=False)
