"""Post-training quantization of a loaded model with torchao, in the scheme of `edge.quant.scheme`.

In:  `edge.model.Transformer` with float weights, a `QuantizationConfig` (and GPTQ inputs for `rounding: gptq`).
Out: the same module, changed in place (torchao's `quantize_`, or GPTQ's integers), plus a
     `QuantReport`: the scheme per layer kind and each weight's SQNR.

Weights are quantized a chunk of rows at a time, in float32, so no full-size
float32 copy of any weight ever exists (see `quantize_rows`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from edge.config import QuantizationConfig, WeightBits
from edge.model import Transformer, block_linears
from edge.quant.scheme import (
    LayerKind,
    QuantReport,
    bf16_exact,
    check_group_size,
    describe,
    scheme_config,
    snr_db,
    sqnr_db,
    sum_of_squares,
)


def quantize_rows(
    module: nn.Linear | nn.Embedding,
    config,
    *,
    name: str,
    report: QuantReport,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    rows_per_chunk: int = 8192,
) -> None:
    """Replace module.weight by its torchao-quantized version, a chunk of rows at a time.

    torchao quantizes a weight in one piece, with several full-size float32
    temporaries: for a 128k x 3072 output layer that is gigabytes. Every scheme
    used here (per channel, per group along the row) treats rows independently,
    so quantize_ runs on row chunks and the quantized tensors are stitched back
    together field by field (torchao tensors do not implement torch.cat). The
    result is identical to quantizing in one piece (tests/test_quantize.py).
    `transform` (rows -> rows, e.g. SpinQuant's R1) is applied to each chunk first,
    so a rotated copy of the whole weight never exists either.
    """
    from torchao.quantization import quantize_

    source = module.weight.detach()
    parts = []
    signal = noise = 0.0
    for r0 in range(0, source.shape[0], rows_per_chunk):
        chunk = source[r0 : r0 + rows_per_chunk]
        chunk = (transform(chunk) if transform else chunk).float()
        if isinstance(module, nn.Embedding):
            tmp: nn.Module = nn.Embedding(chunk.shape[0], chunk.shape[1], _weight=chunk, _freeze=True)
            quantize_(tmp, config, filter_fn=lambda m, _n: isinstance(m, nn.Embedding))
        else:
            tmp = nn.Linear(chunk.shape[1], chunk.shape[0], bias=False, device="meta")
            tmp.weight = nn.Parameter(chunk, requires_grad=False)
            quantize_(tmp, config)
        part = tmp.weight.detach()
        part.scale.copy_(bf16_exact(part.scale))
        parts.append(part)
        signal += sum_of_squares(chunk)
        noise += sum_of_squares(chunk - part.dequantize().float())
    first = parts[0]
    data = [torch.cat([getattr(p, n) for p in parts]) for n in first.tensor_data_names]
    stitched = type(first)(*data, *[getattr(first, n) for n in first.tensor_attribute_names])
    module.weight = nn.Parameter(stitched, requires_grad=False)
    report.weight_sqnr_db[f"{name}.weight"] = snr_db(signal, noise)


def _cast_rows(module: nn.Module, *, dtype: torch.dtype, transform=None, rows_per_chunk: int = 8192) -> None:
    """module.weight -> transform(rows) in `dtype`, a chunk of rows at a time."""
    w = module.weight.detach()
    if transform is not None:
        w = torch.cat([transform(w[r0 : r0 + rows_per_chunk]).to(dtype) for r0 in range(0, w.shape[0], rows_per_chunk)])
    module.weight = nn.Parameter(w.to(dtype), requires_grad=False)


@dataclass(frozen=True)
class GPTQInputs:
    """What GPTQ needs beyond the model: calibration windows, damping, where to run."""

    tokens: torch.Tensor  # [N, S] int64
    damp: float
    act_order: bool = False
    float_targets: bool = False  # GPTAQ: fit each linear to the float model's outputs (edge.quant.gptq.gptq_block)
    device: str = "cpu"


@dataclass
class _Calibration:
    """GPTQ's calibration activations as they flow through the blocks, and the RoPE tables for their length."""

    x: torch.Tensor | None  # [N, S, D]: the quantized model's activations at the next block's input
    xf: torch.Tensor | None  # [N, S, D]: the float model's there (GPTQInputs.float_targets), else None
    cos: torch.Tensor
    sin: torch.Tensor


def quantize_model(
    model: Transformer,
    quant: QuantizationConfig,
    *,
    dtype: torch.dtype,
    rotations=None,
    online_hadamard: bool = False,
    gptq: GPTQInputs | None = None,
    on_step: Callable[[int, int], None] | None = None,
) -> QuantReport:
    """Quantize `model` in place as `quant` says; unquantized parts end in `dtype`.

    rotations (`edge.spinquant.Rotations`): fused norms, R1/R2 (and R4 when `online_hadamard`)
    are folded into each block in float64 just before it is rounded, so the whole model never
    exists in float32. gptq: int4 block linears are rounded by GPTQ (`edge.quant.gptq`) instead of
    torchao's round-to-nearest. `on_step(done, total)` is called after each block.
    """
    from edge.spinquant.fold import head_transforms, untie_and_reset_norm

    check_group_size(model, quant)
    report = QuantReport(scheme=describe(quant))
    total = len(model.layers) + 2
    emb_t = head_t = None
    if rotations is not None:
        emb_t, head_t = head_transforms(model, rotations.r1)
        untie_and_reset_norm(model)
    use_gptq = gptq is not None and quant.linear is WeightBits.INT4
    calib = _calibration_inputs(model, gptq, emb_t=emb_t) if use_gptq else None
    for i, block in enumerate(model.layers):
        _quantize_block(
            block,
            i,
            quant,
            dtype=dtype,
            report=report,
            rotations=rotations,
            online_hadamard=online_hadamard,
            gptq=gptq,
            calib=calib,
        )
        if on_step:
            on_step(i + 1, total)
    if use_gptq:
        head_t = _finish_gptq(model, calib, gptq, head_t=head_t)
    _quantize_ends(model, quant, dtype=dtype, report=report, emb_t=emb_t, head_t=head_t, on_step=on_step, total=total)
    model.cast_buffers(dtype)  # rope tables and KV caches follow the activation dtype
    return report


def _calibration_inputs(model: Transformer, gptq: GPTQInputs, *, emb_t) -> _Calibration:
    """Model, GPTQInputs, R1's embedding transform (or None) -> the windows' embeddings and RoPE tables on
    gptq.device; the model is switched to SEQUENCE attention."""
    from edge.model import AttentionPath, rope_tables

    model.set_attention_path(AttentionPath.SEQUENCE)
    seq = gptq.tokens.shape[1]
    rows = model.embed_tokens.weight.detach()
    # [N, S, D], one window at a time through R1 (no float64 copy of all N windows at once)
    x = torch.stack([(emb_t(rows[t]) if emb_t else rows[t]).float() for t in gptq.tokens]).to(gptq.device)
    cos, sin = (t.to(gptq.device) for t in rope_tables(model.args, seq))  # the calibration length, not max_context
    xf = x.clone() if gptq.float_targets else None  # the float model's activations, [N, S, D]
    return _Calibration(x=x, xf=xf, cos=cos, sin=sin)


def _quantize_block(
    block: nn.Module,
    i: int,
    quant: QuantizationConfig,
    *,
    dtype: torch.dtype,
    report: QuantReport,
    rotations,
    online_hadamard: bool,
    gptq: GPTQInputs | None,
    calib: _Calibration | None,
) -> None:
    """Block i -> rotated (if rotations), linears rounded (GPTQ when calib is given, advancing it; else torchao)
    and the rest cast to dtype, in place; SQNRs go to report."""
    from edge.core.memory import trim_heap
    from edge.spinquant.fold import break_embedding_ties, prepare_block, rotate_block

    if rotations is not None:
        prepare_block(block, online_hadamard=online_hadamard)
        rotate_block(block, r1=rotations.r1, r2=rotations.r2[i])
        if i == 0:  # its input is the int8 embedding: see break_embedding_ties
            break_embedding_ties(block)
    if calib is not None:
        from edge.quant.gptq import gptq_block

        def record(n: str, ref: torch.Tensor, q: torch.Tensor) -> None:
            report.weight_sqnr_db[f"layers.{i}.{n}.weight"] = sqnr_db(ref, q)

        block.float().to(gptq.device)
        calib.x, calib.xf = gptq_block(
            block,
            calib.x,
            cos=calib.cos,
            sin=calib.sin,
            group_size=quant.group_size,
            damp=gptq.damp,
            act_order=gptq.act_order,
            float_inputs=calib.xf,
            on_linear=record,
        )
        block.to("cpu")
    elif (config := scheme_config(quant, LayerKind.BLOCK_LINEAR)) is not None:
        for name, module in block_linears(block):
            quantize_rows(module, config, name=f"layers.{i}.{name}", report=report)
    block.to(dtype)  # norms, and linears left unquantized
    trim_heap()  # the block's float weights were heap holes between quantized ones (edge.core.memory)


def _finish_gptq(model: Transformer, calib: _Calibration, gptq: GPTQInputs, *, head_t):
    """Model after GPTQ's blocks, its activations, the output transform -> that transform (with float targets,
    corrected toward the float logits); frees the activations and restores KV-cache attention."""
    from edge.model import AttentionPath

    if calib.xf is not None:  # the output layer fitted to the float logits too (edge.quant.gptq.output_correction)
        from edge.quant.gptq import output_correction

        m = output_correction(model.norm.float().to(gptq.device), calib.x, calib.xf, damp=gptq.damp).cpu()
        model.norm.to("cpu")
        eye = torch.eye(m.shape[0], dtype=torch.float64)

        def head_t(rows, t=head_t):
            return (t(rows) if t else rows).double() @ (eye + m)

    calib.x = calib.xf = None
    model.set_attention_path(AttentionPath.KV_CACHE)
    return head_t


def _quantize_ends(
    model: Transformer,
    quant: QuantizationConfig,
    *,
    dtype: torch.dtype,
    report: QuantReport,
    emb_t,
    head_t,
    on_step: Callable[[int, int], None] | None,
    total: int,
) -> None:
    """Model with its blocks done -> final norm in dtype, lm_head then embedding quantized (or cast to dtype)
    through head_t/emb_t; on_step after each."""
    # With tied embeddings lm_head.weight *is* embed_tokens.weight: each gets its own
    # quantized (or cast) tensor and the shared one is dropped.
    model.norm.to(dtype)
    if (config := scheme_config(quant, LayerKind.OUTPUT)) is None:
        _cast_rows(model.lm_head, dtype=dtype, transform=head_t)
    else:
        quantize_rows(model.lm_head, config, name="lm_head", report=report, transform=head_t)
    if on_step:
        on_step(len(model.layers) + 1, total)

    if (config := scheme_config(quant, LayerKind.EMBEDDING)) is None:
        _cast_rows(model.embed_tokens, dtype=dtype, transform=emb_t)
    else:
        # Lowered to ExecuTorch's quantized_decomposed::embedding_byte by its quant-fusion pass.
        quantize_rows(model.embed_tokens, config, name="embed_tokens", report=report, transform=emb_t)
    if on_step:
        on_step(total, total)
