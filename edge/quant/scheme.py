"""The quantization scheme: Meta's Llama 3.2 mobile scheme as one table of torchao configs.

In:  a `QuantizationConfig` and a layer kind.
Out: `scheme_config` (the torchao config; PTQ, QAT and the manifest all read it), `describe` (the manifest's
     words for it), `intx_tensor_from_integers` (integers chosen elsewhere -> torchao's tensor),
     `QuantReport` and `sqnr_db`.

| layer kind                     | weights                          | activations            |
|--------------------------------|----------------------------------|------------------------|
| linears in transformer blocks  | int4 symmetric, groups of 32     | int8 dynamic per token |
| output layer                   | int8 symmetric per channel       | int8 dynamic per token |
| embedding                      | int8 symmetric per channel       | (lookup)               |
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import torch
from torch import nn

from edge.config import QuantizationConfig, WeightBits
from edge.core.errors import EdgeError
from edge.model import Transformer


@dataclass
class QuantReport:
    """What was quantized how, and how close each quantized weight is to its float original."""

    scheme: dict[str, str] = field(default_factory=dict)  # layer kind -> description
    weight_sqnr_db: dict[str, float] = field(default_factory=dict)  # parameter name -> SQNR

    def min_sqnr(self, kind: str) -> float:
        """Lowest weight SQNR among the parameters whose name contains `kind`."""
        values = [v for k, v in self.weight_sqnr_db.items() if kind in k]
        return min(values) if values else float("nan")


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor, *, rows_per_chunk: int = 8192) -> float:
    """Signal-to-quantization-noise ratio in dB: 10*log10(|ref|^2 / |ref-approx|^2).

    `approx` may be a torchao quantized tensor; it is dequantized a chunk of rows
    at a time so that measuring a 128k-row output layer costs no full-size copy.
    """
    signal = noise = 0.0
    for r0 in range(0, reference.shape[0], rows_per_chunk):
        ref = reference[r0 : r0 + rows_per_chunk].float()
        part = approx[r0 : r0 + rows_per_chunk]
        part = part.dequantize() if hasattr(part, "dequantize") and hasattr(part, "qdata") else part
        signal += sum_of_squares(ref)
        noise += sum_of_squares(ref - part.float())
    return snr_db(signal, noise)


def sum_of_squares(x: torch.Tensor) -> float:
    """sum(x^2) as a float32 dot product (BLAS): relative error about 2e-5 on 16M values, a 1e-4 dB change
    in an SQNR, at a thirtieth of the time of summing in float64 (which took twice as long as the quantizing)."""
    flat = x.float().reshape(-1)
    return float(torch.dot(flat, flat))


def snr_db(signal: float, noise: float) -> float:
    """Summed signal and noise energies -> SQNR in dB (noise floored so an exact copy stays finite)."""
    return float(10 * torch.log10(torch.tensor(signal / max(noise, 1e-30))))


def linear_config(bits: WeightBits, group_size: int | None):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup

    granularity = PerAxis(0) if group_size is None else PerGroup(group_size)
    dtype = torch.int4 if bits is WeightBits.INT4 else torch.int8
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)


class LayerKind(enum.Enum):
    BLOCK_LINEAR = "transformer_block_linears"  # q, k, v, o, gate, up, down
    OUTPUT = "output_layer"
    EMBEDDING = "embedding"


def scheme_config(quant: QuantizationConfig, kind: LayerKind):
    """The scheme table: (QuantizationConfig, layer kind) -> torchao base config, None for float.

    The one place the scheme becomes torchao configs: PTQ (`quantize_model`), QAT
    (`edge.quant.qat`, which derives its fake quantizers from these same configs) and the
    manifest (`describe`) all read it. Scales are chosen by torchao's default min/max
    algorithm, the one its QAT fake quantizers use (`edge.quant.qat.check_scale_agreement`).
    """
    if kind is LayerKind.EMBEDDING:
        return None if quant.embedding is WeightBits.NONE else _embedding_config()
    bits = quant.linear if kind is LayerKind.BLOCK_LINEAR else quant.output
    if bits is WeightBits.NONE:
        return None
    return linear_config(bits, quant.group_size if bits is WeightBits.INT4 else None)


def intx_tensor_from_integers(
    qdata: torch.Tensor, scale: torch.Tensor, *, bits: WeightBits, embedding: bool = False, bf16_scales: bool = True
) -> torch.Tensor:
    """Integers already chosen elsewhere (GPTQ, a pre-quantized checkpoint) -> torchao's own tensor.

    qdata [out, in] int8 holding int4 ([-8, 7]) or int8 values; scale [out, in / group]
    float (one group per row: per channel). Zero points are 0 (symmetric). The result is
    the `IntxUnpackedToInt8Tensor` that `quantize_` would have made (8-bit dynamic
    activations for linears, none for an embedding), so export and lowering do not change.
    bf16_scales: round group scales to bf16 as every other path here does (`bf16_exact`); False keeps
    a pre-quantized checkpoint's fp32 scales as they are.
    """
    from torchao.quantization import IntxUnpackedToInt8Tensor

    if qdata.dtype != torch.int8 or qdata.dim() != 2 or scale.dim() != 2 or scale.shape[0] != qdata.shape[0]:
        raise EdgeError(
            f"quantized weight {list(qdata.shape)} {qdata.dtype} with scales {list(scale.shape)} is malformed"
        )
    group = qdata.shape[1] // scale.shape[1]
    if group * scale.shape[1] != qdata.shape[1]:
        raise EdgeError(f"scales {list(scale.shape)} do not divide the weight's {qdata.shape[1]} columns into groups")
    lo, hi = (-8, 7) if bits is WeightBits.INT4 else (-128, 127)
    if int(qdata.min()) < lo or int(qdata.max()) > hi:
        raise EdgeError(f"quantized weight holds values outside [{lo}, {hi}] for {bits.value}")
    # Build the tensor type from a 1-row quantize_ (its attributes), then put our integers in.
    from torchao.quantization import quantize_

    if embedding:
        tmp: nn.Module = nn.Embedding(1, qdata.shape[1])
        config = _embedding_config()
        quantize_(tmp, config, filter_fn=lambda m, _n: isinstance(m, nn.Embedding))
    else:
        tmp = nn.Linear(qdata.shape[1], 1, bias=False)
        quantize_(tmp, linear_config(bits, group if scale.shape[1] > 1 else None))
    proto = tmp.weight
    block_size = (1, group)
    attrs = {n: getattr(proto, n) for n in proto.tensor_attribute_names} | {"block_size": block_size}
    return IntxUnpackedToInt8Tensor(
        qdata.contiguous(),
        (bf16_exact(scale.float()) if bf16_scales else scale.float()).contiguous(),
        torch.zeros_like(scale, dtype=torch.int8),
        **attrs,
    )


def _embedding_config():
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis

    return IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0))


def describe(quant: QuantizationConfig) -> dict[str, str]:
    """QuantizationConfig -> {layer kind: human-readable scheme}, as the manifest states it."""

    def linear(bits: WeightBits, group: str) -> str:
        if bits is WeightBits.NONE:
            return "unquantized"
        return f"8-bit dynamic per-token activations, {bits.value} symmetric weights, {group}"

    return {
        "transformer_block_linears": linear(
            quant.linear, f"groups of {quant.group_size}" if quant.linear is WeightBits.INT4 else "per channel"
        ),
        "output_layer": linear(
            quant.output, "per channel" if quant.output is WeightBits.INT8 else f"groups of {quant.group_size}"
        ),
        "embedding": "unquantized" if quant.embedding is WeightBits.NONE else "int8 symmetric weights, per channel",
    }


def check_group_size(model: Transformer, quant: QuantizationConfig) -> None:
    """Raise EdgeError naming the first linear whose input width the group size does not divide."""
    targets: list[tuple[str, nn.Linear]] = []
    if quant.linear is WeightBits.INT4:
        targets += [(n, m) for n, m in model.layers.named_modules() if isinstance(m, nn.Linear)]
    if quant.output is WeightBits.INT4:
        targets.append(("lm_head", model.lm_head))
    for name, module in targets:
        if module.in_features % quant.group_size:
            full = name if name == "lm_head" else f"layers.{name}"
            raise EdgeError(
                f"group size {quant.group_size} does not divide the input width {module.in_features} of {full}"
            )


def bf16_exact(scale: torch.Tensor) -> torch.Tensor:
    """Group scales [N, K / g] -> the same dtype, each rounded once to the nearest bfloat16;
    per-channel scales ([N, 1]) come back unchanged.

    XNNPACK stores group scales as bf16 (executorch/backends/xnnpack/operators/node_visitor.py),
    so the .pte already computes with these values; rounding them here makes the eager model,
    the .pte, the ONNX model (fp32 scales) and the GGUF file (fp16 scales, which hold any bf16
    value in their range exactly) dequantize to the same int4 weights. Per-channel scales stay
    fp32, as XNNPACK keeps them: rounding those to bf16 moved the fixture's QAT + LoRA perplexity
    recovery from 92% to 89% (each output row's logits scaled by up to 0.4%).
    """
    if scale.dim() == 2 and scale.shape[1] == 1:
        return scale
    return scale.to(torch.bfloat16).to(scale.dtype)
