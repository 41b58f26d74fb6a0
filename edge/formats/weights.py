"""The quantized model's weights as plain integers and scales, for formats other than the .pte.

In:  a quantized `edge.model.Transformer` (torchao `IntxUnpackedToInt8Tensor` weights, or float).
Out: `Weight` records: the very integers and scales the .pte was lowered from (never re-quantized:
     ONNX Runtime's and llama.cpp's own quantizers round differently, max/-8 against torchao's
     max/7.5), so every format dequantizes to the same numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from edge.core.errors import EdgeError
from edge.model import OnlineHadamard, Transformer


@dataclass(frozen=True)
class Weight:
    """One weight [N, K]: int8 integers + fp32 scales [N, K / group], or float values (bits 0)."""

    name: str
    bits: int  # 4 or 8; 0 = unquantized float
    values: np.ndarray  # int8 [N, K] (int4 values lie in [-8, 7]) or float32 [N, K]
    scales: np.ndarray | None  # float32 [N, K / group]; None when unquantized

    @property
    def group(self) -> int:
        """Columns per scale (K for one scale per row)."""
        assert self.scales is not None
        return self.values.shape[1] // self.scales.shape[1]

    def dequantize(self) -> np.ndarray:
        """-> float32 [N, K]: integer * its group's scale (the values every runtime computes with)."""
        if self.scales is None:
            return self.values.astype(np.float32)
        return (self.values.astype(np.float32) * np.repeat(self.scales, self.group, axis=1)).astype(np.float32)


def weight_of(module: nn.Module, name: str) -> Weight:
    """nn.Linear / nn.Embedding (quantized by edge.quant.ptq, or float) -> Weight."""
    w = module.weight
    qdata = getattr(w, "qdata", None)
    if qdata is None:
        return Weight(name=name, bits=0, values=w.detach().float().numpy(), scales=None)
    if torch.count_nonzero(w.zero_point):
        raise EdgeError(f"{name}: asymmetric weights (nonzero zero points) have no mapping here")
    bits = 4 if getattr(w, "target_dtype", torch.int8) == torch.int4 else 8
    scales = w.scale.detach().float().reshape(qdata.shape[0], -1)
    return Weight(name=name, bits=bits, values=qdata.detach().numpy().astype(np.int8), scales=scales.numpy())


def check_mappable(model: Transformer, *, target: str) -> None:
    """Raise EdgeError when the model holds something `target` (onnx, gguf) has no mapping for."""
    if any(isinstance(m, OnlineHadamard) for m in model.modules()):
        raise EdgeError(
            f"{target}: SpinQuant's online Hadamard (R4) has no {target} mapping here; "
            "export with rotation.online_hadamard: false (R1/R2 live in the weights and map as they are)"
        )
    if any(".adaptor." in n for n, _ in model.named_parameters()):
        raise EdgeError(
            f"{target}: LoRA adapters kept beside the int4 weights have no {target} mapping; "
            "export with finetune.adapters: merge"
        )
