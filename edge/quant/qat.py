"""Quantization-aware training with torchao, from the export's own scheme table.

In:  an `edge.model.Transformer` with float weights and the `QuantizationConfig` it will be
     exported with.
Out: `prepare_qat`: the same model with torchao fake quantizers (`QATConfig(base, step="prepare")`)
     on every layer kind the scheme quantizes; `convert_qat`: the trained model quantized by
     `QATConfig(base, step="convert")`, i.e. exactly what `edge.quant.ptq` produces at export.

The base configs are `edge.quant.scheme.scheme_config`'s, so training and export cannot drift
apart in the scheme. torchao does not check that convert chooses scales the way the fake
quantizer did (optimum-executorch#226: HQQ scales at export, min/max in training), so
`check_scale_agreement` does, on a probe weight, before any training starts.
"""

from __future__ import annotations

import torch
from torch import nn

from edge.config import QuantizationConfig
from edge.core.errors import EdgeError
from edge.model import BLOCK_LINEARS, Transformer
from edge.quant.scheme import LayerKind, scheme_config


def _is_kind(kind: LayerKind, fqn: str) -> bool:
    """Is the module at `fqn` of this layer kind? (Block projections may sit in a LoRA wrapper's `.base`.)"""
    if kind is LayerKind.EMBEDDING:
        return fqn == "embed_tokens"
    if kind is LayerKind.OUTPUT:
        return fqn == "lm_head"
    return fqn.startswith("layers.") and any(fqn.removesuffix(".base").endswith(name) for name in BLOCK_LINEARS)


def check_scale_agreement(config, *, embedding: bool, group_size: int = 32) -> None:
    """Raise EdgeError unless `config`'s QAT fake quantizer and its convert step round a probe
    weight (and a probe activation) to exactly the same values."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    gen = torch.Generator().manual_seed(0)
    w = torch.randn(16, 4 * group_size, generator=gen)
    w[0, :group_size] *= 1e-4  # a near-zero group
    w[1, 3] = 25.0  # an outlier
    x = torch.randn(3, 4 * group_size, generator=gen)
    if embedding:
        module: nn.Module = nn.Sequential(nn.Embedding(w.shape[0], w.shape[1], _weight=w.clone()))
        filt = lambda m, _n: isinstance(m, nn.Embedding)  # noqa: E731
        probe = lambda m: m(torch.arange(w.shape[0])[None])  # noqa: E731
    else:
        module = nn.Sequential(nn.Linear(w.shape[1], w.shape[0], bias=False))
        module[0].weight.data.copy_(w)
        filt, probe = None, (lambda m: m(x))
    quantize_(module, QATConfig(config, step="prepare"), filter_fn=filt)
    with torch.no_grad():
        trained = probe(module)
        wq_train = module[0].weight_fake_quantizer(module[0].weight)
    quantize_(module, QATConfig(config, step="convert"), filter_fn=filt)
    with torch.no_grad():
        exported = probe(module)
        wq_export = module[0].weight.dequantize()
    if not torch.equal(wq_train, wq_export) or not torch.allclose(trained, exported, rtol=0, atol=1e-5):
        raise EdgeError(
            f"{type(config).__name__}: torchao's QAT fake quantizer and its convert step choose different scales "
            f"(weights differ by up to {float((wq_train - wq_export).abs().max()):.3g}); "
            "training would not match the export"
        )


def prepare_qat(model: Transformer, quant: QuantizationConfig) -> list[LayerKind]:
    """Swap in torchao's fake-quantized modules for every layer kind the scheme quantizes.

    -> the kinds prepared. A tied embedding and output layer keep sharing one weight.
    """
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig

    prepared = []
    for kind in LayerKind:
        config = scheme_config(quant, kind)
        if config is None:
            continue
        check_scale_agreement(config, embedding=kind is LayerKind.EMBEDDING, group_size=quant.group_size)
        cls = nn.Embedding if kind is LayerKind.EMBEDDING else nn.Linear
        quantize_(
            model,
            QATConfig(config, step="prepare"),
            filter_fn=lambda m, fqn, cls=cls, kind=kind: type(m) is cls and _is_kind(kind, fqn),
        )
        prepared.append(kind)
    return prepared


def convert_qat(model: Transformer, quant: QuantizationConfig) -> None:
    """Fake-quantized model -> quantized in place with the same base configs (torchao's convert step)."""
    from torchao.quantization import quantize_
    from torchao.quantization.qat import QATConfig
    from torchao.quantization.qat.embedding import FakeQuantizedEmbedding
    from torchao.quantization.qat.linear import FakeQuantizedLinear

    if model.lm_head.weight is model.embed_tokens.weight:  # tied: each side gets its own quantized copy
        model.lm_head.weight = nn.Parameter(model.lm_head.weight.detach().clone(), requires_grad=False)
    for kind in LayerKind:
        config = scheme_config(quant, kind)
        if config is None:
            continue
        cls = FakeQuantizedEmbedding if kind is LayerKind.EMBEDDING else FakeQuantizedLinear
        quantize_(
            model,
            QATConfig(config, step="convert"),
            filter_fn=lambda m, fqn, cls=cls, kind=kind: isinstance(m, cls) and _is_kind(kind, fqn),
        )
