"""LoRA adapters beside a block's linears, unquantized, in training and in the program.

In:  an `edge.model.Transformer` (float, fake-quantized by `edge.quant.qat`, or quantized by
     `edge.quant.ptq`) and a `LoraSpec`, or adapter tensors from a file.
Out: the same model with each target projection wrapped in `LoRALinear`:

       y = base(x) + scale * B(A(x))       A [r, in], B [out, r], scale = alpha / r

     `base` is whatever the projection already was (nn.Linear, torchao's
     FakeQuantizedLinear, or a linear holding a torchao 8da4w weight), so the adapter
     path stays in float while the backbone is quantized: what Meta's QLoRA
     checkpoints and ExecuTorch's `source_transformation/lora.py` compute.

Adapter tensors are named as Meta names them under edge's module names:
`layers.0.self_attn.q_proj.adaptor.A.weight` / `...adaptor.B.weight`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from edge.config.finetune import LORA_TARGETS
from edge.core.errors import EdgeError
from edge.model import BLOCK_LINEARS, Transformer

ADAPTERS_NAME = "adapter_model.safetensors"


@dataclass(frozen=True)
class LoraSpec:
    """Which linears get adapters, of what rank, with what scale (alpha / rank)."""

    rank: int
    alpha: float
    targets: tuple[str, ...] = LORA_TARGETS

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


class Adaptor(nn.Module):
    """The low-rank pair, named as in Meta's checkpoints (`adaptor.A`, `adaptor.B`)."""

    def __init__(self, in_features: int, out_features: int, rank: int) -> None:
        super().__init__()
        self.A = nn.Linear(in_features, rank, bias=False)  # [r, in]
        self.B = nn.Linear(rank, out_features, bias=False)  # [out, r]


class LoRALinear(nn.Module):
    """base(x) + scale * B(A(x)); the adapter sees the unquantized x and stays in float."""

    def __init__(self, base: nn.Module, *, in_features: int, out_features: int, rank: int, scale: float) -> None:
        super().__init__()
        self.base = base
        self.adaptor = Adaptor(in_features, out_features, rank)
        self.scale = scale
        self.in_features, self.out_features = in_features, out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [..., in] -> [..., out]
        return self.base(x) + self.scale * self.adaptor.B(self.adaptor.A(x.to(self.adaptor.A.weight.dtype))).to(x.dtype)


def _targets(model: Transformer, targets: tuple[str, ...]) -> list[tuple[str, nn.Module, str, nn.Module]]:
    """-> [(full name, parent module, attribute, projection)] for every target linear."""
    out = []
    for i, block in enumerate(model.layers):
        for name in BLOCK_LINEARS:
            parent_name, _, attr = name.rpartition(".")
            if attr in targets:
                parent = block.get_submodule(parent_name)
                out.append((f"layers.{i}.{name}", parent, attr, getattr(parent, attr)))
    return out


def _features(module: nn.Module) -> tuple[int, int]:
    out_f, in_f = module.weight.shape  # torchao tensors report the logical shape
    return int(in_f), int(out_f)


def attach_lora(model: Transformer, spec: LoraSpec, *, seed: int, dtype: torch.dtype = torch.float32) -> None:
    """Wrap every target projection in a fresh LoRALinear (A Kaiming-uniform from `seed`, B zero: y unchanged)."""
    gen = torch.Generator().manual_seed(seed)
    for _name, parent, attr, module in _targets(model, spec.targets):
        in_f, out_f = _features(module)
        lora = LoRALinear(module, in_features=in_f, out_features=out_f, rank=spec.rank, scale=spec.scale)
        bound = 1 / math.sqrt(in_f)  # nn.Linear's (and peft's) kaiming_uniform_(a=sqrt(5)) bound
        with torch.no_grad():
            lora.adaptor.A.weight.copy_(torch.empty(spec.rank, in_f).uniform_(-bound, bound, generator=gen))
            lora.adaptor.B.weight.zero_()
        lora.adaptor.to(dtype)
        setattr(parent, attr, lora)


def adapter_tensors(model: Transformer) -> dict[str, torch.Tensor]:
    """Model with LoRALinears -> {`layers.i.<proj>.adaptor.A.weight`: tensor, ...} (detached, CPU)."""
    return {
        f"{name}.adaptor.{ab}.weight": getattr(module.adaptor, ab).weight.detach().cpu().contiguous()
        for name, _p, _a, module in _targets(model, LORA_TARGETS)
        if isinstance(module, LoRALinear)
        for ab in ("A", "B")
    }


def load_adapters(model: Transformer, tensors: dict[str, torch.Tensor], spec: LoraSpec, *, source: str) -> int:
    """Attach adapters from `tensors` (edge names) to `model`; -> how many linears got one.

    Every target needs an A [rank, in] and B [out, rank] that fit its projection;
    otherwise EdgeError names the first that does not. Adapters are kept in float32.
    """
    expected = {}
    for name, _parent, _attr, module in _targets(model, spec.targets):
        in_f, out_f = _features(module)
        expected[f"{name}.adaptor.A.weight"] = (spec.rank, in_f)
        expected[f"{name}.adaptor.B.weight"] = (out_f, spec.rank)
    unknown = sorted(set(tensors) - set(expected))
    if unknown:
        raise EdgeError(
            f"{source}: adapter {unknown[0]} does not belong to any target linear of this model ({len(unknown)} such)"
        )
    for key, shape in expected.items():
        if key not in tensors:
            raise EdgeError(f"{source}: adapter {key} is missing")
        if tuple(tensors[key].shape) != shape:
            raise EdgeError(
                f"{source}: adapter {key} has shape {list(tensors[key].shape)}; this model needs {list(shape)}"
            )
        if not torch.isfinite(tensors[key].float()).all():
            raise EdgeError(f"{source}: adapter {key} holds non-finite values")
    targets = _targets(model, spec.targets)
    for name, parent, attr, module in targets:
        in_f, out_f = _features(module)
        lora = LoRALinear(module, in_features=in_f, out_features=out_f, rank=spec.rank, scale=spec.scale)
        lora.adaptor.A.weight = nn.Parameter(tensors[f"{name}.adaptor.A.weight"].float(), requires_grad=False)
        lora.adaptor.B.weight = nn.Parameter(tensors[f"{name}.adaptor.B.weight"].float(), requires_grad=False)
        setattr(parent, attr, lora)
    return len(targets)


def merge_lora(model: Transformer) -> int:
    """Fold every LoRALinear into its float base (W += scale * B @ A, in float64) and unwrap it; -> count."""
    merged = 0
    for _name, parent, attr, module in _targets(model, LORA_TARGETS):
        if not isinstance(module, LoRALinear):
            continue
        base = module.base
        if hasattr(base.weight, "qdata"):
            raise EdgeError("cannot merge adapters into an already quantized weight: merge before quantizing")
        delta = module.scale * (module.adaptor.B.weight.double() @ module.adaptor.A.weight.double())
        base.weight = nn.Parameter((base.weight.double() + delta).to(base.weight.dtype), requires_grad=False)
        setattr(parent, attr, base)
        merged += 1
    return merged


def save_adapters(path: Path, tensors: dict[str, torch.Tensor], spec: LoraSpec) -> None:
    """Adapter tensors + spec -> one safetensors file (rank, alpha and targets in its header)."""
    from safetensors.torch import save_file

    meta = {"rank": str(spec.rank), "alpha": repr(spec.alpha), "targets": json.dumps(list(spec.targets))}
    save_file(tensors, str(path), metadata=meta)


def read_adapters(path: Path) -> tuple[dict[str, torch.Tensor], LoraSpec]:
    """An adapters file written by `save_adapters` -> (tensors, spec); EdgeError if it is not one."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        spec = LoraSpec(rank=int(meta["rank"]), alpha=float(meta["alpha"]), targets=tuple(json.loads(meta["targets"])))
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as e:
        raise EdgeError(f"{path} is not an edge adapters file ({type(e).__name__}: {e})") from None
    bad = sorted(set(spec.targets) - set(LORA_TARGETS))
    if spec.rank < 1 or bad:
        raise EdgeError(f"{path}: rank {spec.rank} / targets {bad} are not valid")
    return tensors, spec


def adapter_bytes(model: Transformer) -> int:
    """Bytes the adapters take in the program (they are stored unquantized)."""
    return sum(t.numel() * t.element_size() for t in adapter_tensors(model).values())
