"""Quantize a loaded model with torchao: Meta's Llama 3.2 mobile scheme.

In:  `edge.model.Transformer` with float weights, a `QuantizationConfig`.
Out: the same module, changed in place (torchao's `quantize_`), plus a
     `QuantReport`: the scheme per layer kind and each weight's SQNR.

| layer kind                     | weights                          | activations            |
|--------------------------------|----------------------------------|------------------------|
| linears in transformer blocks  | int4 symmetric, groups of 32     | int8 dynamic per token |
| output layer                   | int8 symmetric per channel       | int8 dynamic per token |
| embedding                      | int8 symmetric per channel       | (lookup)               |

Blocks are quantized one at a time, in float32, so the float32 copy of only
one block exists at once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from edge.config import QuantizationConfig, WeightBits
from edge.errors import EdgeError
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
        signal += float(ref.double().pow(2).sum())
        noise += float((ref - part.float()).double().pow(2).sum())
    return float(10 * torch.log10(torch.tensor(signal / max(noise, 1e-30))))


def _linear_config(bits: WeightBits, group_size: int | None):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerAxis, PerGroup

    granularity = PerAxis(0) if group_size is None else PerGroup(group_size)
    dtype = torch.int4 if bits is WeightBits.INT4 else torch.int8
    return Int8DynamicActivationIntxWeightConfig(weight_dtype=dtype, weight_granularity=granularity)


def describe(quant: QuantizationConfig) -> dict[str, str]:
    """QuantizationConfig -> {layer kind: human-readable scheme}, as the manifest states it."""

    def linear(bits: WeightBits, group: str) -> str:
        if bits is WeightBits.NONE:
            return "unquantized"
        return f"8-bit dynamic per-token activations, {bits.value} symmetric weights, {group}"

    return {
        "transformer_block_linears": linear(quant.linear, f"groups of {quant.group_size}" if quant.linear is WeightBits.INT4 else "per channel"),
        "output_layer": linear(quant.output, "per channel" if quant.output is WeightBits.INT8 else f"groups of {quant.group_size}"),
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


def _quantize_linears(module: nn.Module, *, prefix: str, config, report: QuantReport, filter_fn: Callable[[nn.Module, str], bool]) -> None:
    from torchao.quantization import quantize_

    # quantize_ swaps in new weight tensors; holding the old ones (no copy) lets us measure the error.
    originals = {name: m.weight.detach() for name, m in module.named_modules() if filter_fn(m, name)}
    quantize_(module, config, filter_fn=filter_fn)
    for name, w in originals.items():
        report.weight_sqnr_db[f"{prefix}{name}.weight"] = sqnr_db(w, module.get_submodule(name).weight)


def quantize_model(
    model: Transformer,
    quant: QuantizationConfig,
    *,
    dtype: torch.dtype,
    on_step: Callable[[int, int], None] | None = None,
) -> QuantReport:
    """Quantize `model` in place as `quant` says; unquantized parts end in `dtype`.

    `on_step(done, total)` is called after each block (for progress bars).
    """
    from torchao.quantization import IntxWeightOnlyConfig, PerAxis, quantize_

    check_group_size(model, quant)
    report = QuantReport(scheme=describe(quant))
    is_linear = lambda m, _name: isinstance(m, nn.Linear)  # noqa: E731
    total = len(model.layers) + 2
    for i, block in enumerate(model.layers):
        block.to(dtype)
        if quant.linear is not WeightBits.NONE:
            config = _linear_config(quant.linear, quant.group_size if quant.linear is WeightBits.INT4 else None)
            _quantize_linears(block, prefix=f"layers.{i}.", config=config, report=report, filter_fn=is_linear)
        if on_step:
            on_step(i + 1, total)

    # Output layer. With tied embeddings lm_head.weight *is* embed_tokens.weight;
    # quantize_ gives lm_head its own quantized tensor and leaves the embedding's alone.
    model.norm.to(dtype)
    if quant.output is WeightBits.NONE:
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().to(dtype), requires_grad=False)
    else:
        config = _linear_config(quant.output, quant.group_size if quant.output is WeightBits.INT4 else None)
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().float(), requires_grad=False)
        _quantize_linears(model, prefix="", config=config, report=report, filter_fn=lambda m, name: name == "lm_head")
    if on_step:
        on_step(len(model.layers) + 1, total)

    if quant.embedding is WeightBits.NONE:
        model.embed_tokens.to(dtype)
    else:
        w = model.embed_tokens.weight.detach().float()
        model.embed_tokens.weight = nn.Parameter(w, requires_grad=False)
        # Lowered to ExecuTorch's quantized_decomposed::embedding_byte by its quant-fusion pass.
        quantize_(model, IntxWeightOnlyConfig(weight_dtype=torch.int8, granularity=PerAxis(0)), filter_fn=lambda m, _n: isinstance(m, nn.Embedding))
        report.weight_sqnr_db["embed_tokens.weight"] = sqnr_db(w, model.embed_tokens.weight)
        del w
    if on_step:
        on_step(total, total)
    for buf_owner in model.modules():  # rope tables and KV caches follow the activation dtype
        for bname, buf in list(buf_owner.named_buffers(recurse=False)):
            buf_owner.register_buffer(bname, buf.to(dtype), persistent=False)
    return report
