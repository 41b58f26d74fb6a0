"""Meta's pre-quantized Llama checkpoints (SpinQuant_INT4_EO8, QLoRA): what params.json and the shapes say.

In:  params.json's `quantization_args` ({"group_size": 32, "scheme":
     "int4_weight_int8_dynamic_activation", "spinquant": true}) and `lora_args`; consolidated.00.pth holds, under
     Meta's names:
       * block linears `layers.{i}.attention.w{q,k,v,o}`, `layers.{i}.feed_forward.w{1,2,3}`:
         `.weight` int8 [out, in] holding int4 values in [-8, 7], `.scales` float [out, in / group];
       * `tok_embeddings` and `output`: `.weight` int8 [rows, dim], `.scales` float [rows, 1] or [rows];
       * optionally `.zeros` beside any `.scales` (all zero: the scheme is symmetric);
       * float norm weights. R1/R2 are already in the weights, and R4's inverse in w2.
     (ExecuTorch: examples/models/llama/source_transformation/pre_quantization.py;
     llama-models: models/llama3/quantization/loader.py.)
Out: `prequantized_group_size`, `is_rotated`, `prequantized_lora`, and the shapes of the scales
     (`scale_shapes`, `per_channel_shape`) that `open_checkpoint` checks. The model itself is built by
     the export's load stage, `edge.export.prequantized`.
"""

from __future__ import annotations

import math
from pathlib import Path

from edge.checkpoint.args import meta_args
from edge.checkpoint.layout import expected_shapes
from edge.core.errors import EdgeError
from edge.model import ModelArgs, fast_hadamard_accepts

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
        raise EdgeError(
            f"quantization_args.group_size {group!r} is not a power of two (XNNPACK's blockwise kernels need one)"
        )
    args = meta_args(params, Path("params.json"))
    for what, width in (("model width", args.dim), ("FFN width", args.hidden_dim)):
        if width % group:
            raise EdgeError(f"quantization_args.group_size {group} does not divide the {what} {width}")
    prequantized_lora(params)  # malformed lora_args are refused here, with the rest of params.json
    f = args.hidden_dim
    if is_rotated(params) and not fast_hadamard_accepts(f):  # Meta's R4 is the op's matrix alone
        raise EdgeError(
            f"FFN width {f} is not 2^k or 28*2^k, the widths whose online Hadamard (R4) Meta's pre-quantized "
            "SpinQuant checkpoints fold into w2 (llama::fast_hadamard_transform alone)"
        )
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
    """ModelArgs -> {edge.model name of each `.scales`: shape}: [out, in / group] for block linears, [rows, 1]
    otherwise."""
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
