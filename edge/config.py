"""The export config: one typed, frozen description of an export.

In:  a YAML file (see `export_configs/`) and/or command-line overrides, both as
     plain mappings with the same keys (`--max-context` is `max_context`).
Out: `ExportConfig`, validated once here: unknown keys and bad values raise one
     `EdgeError` that lists every problem.

YAML layout (every key optional except where the CLI supplies it):

    checkpoint: null           # folder; null = the embedded fixture model
    output: out/llama3_2_1b_8da4w
    max_context: 2048          # KV-cache length = longest prompt + generation
    dtype: fp32                # fp32 | bf16: activations and unquantized weights
    full_logits: false         # true: forward returns logits for every position
    quantization:
      linear: int4             # none | int4 | int8: transformer-block linears, 8-bit dynamic activations
      group_size: 32           # int4 groups along the input dimension
      output: int8             # none | int4 | int8: output layer (int8 per channel, int4 per group)
      embedding: int8          # none | int8: per-channel lookup table
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge.errors import EdgeError
from edge.io import read_yaml
from edge.validate import bool_field as _bool
from edge.validate import enum_field as _enum
from edge.validate import int_field as _int
from edge.validate import to_plain

CONFIG_DIR = Path(__file__).resolve().parent.parent / "export_configs"


class DType(enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"


class WeightBits(enum.Enum):
    NONE = "none"
    INT4 = "int4"
    INT8 = "int8"


@dataclass(frozen=True)
class QuantizationConfig:
    linear: WeightBits = WeightBits.NONE
    group_size: int = 32
    output: WeightBits = WeightBits.NONE
    embedding: WeightBits = WeightBits.NONE

    @property
    def is_quantized(self) -> bool:
        return any(b is not WeightBits.NONE for b in (self.linear, self.output, self.embedding))


@dataclass(frozen=True)
class ExportConfig:
    output: Path
    checkpoint: Path | None = None
    max_context: int = 2048
    dtype: DType = DType.FP32
    full_logits: bool = False
    force: bool = False
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)

    def to_dict(self) -> dict[str, Any]:
        """ExportConfig -> the YAML-shaped mapping it was (or could have been) read from."""

        return to_plain(dataclasses.asdict(self))


def _path(value: Any, key: str, problems: list[str]) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        problems.append(f"{key}: {value!r} is not a path")
        return None
    return Path(value)


_TOP_KEYS = {f.name for f in dataclasses.fields(ExportConfig)}
_QUANT_KEYS = {f.name for f in dataclasses.fields(QuantizationConfig)}


def parse_config(raw: dict[str, Any], *, source: str) -> ExportConfig:
    """A YAML-shaped mapping -> ExportConfig, or one EdgeError listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise EdgeError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"unknown key {key!r}")
    quant_raw = raw.get("quantization") or {}
    if not isinstance(quant_raw, dict):
        problems.append("quantization: expected a mapping")
        quant_raw = {}
    for key in sorted(set(quant_raw) - _QUANT_KEYS):
        problems.append(f"unknown key 'quantization.{key}'")

    q = QuantizationConfig()
    quant = {
        "linear": _enum(WeightBits, quant_raw.get("linear", q.linear.value), "quantization.linear", problems),
        "group_size": _int(quant_raw.get("group_size", q.group_size), "quantization.group_size", problems, minimum=1),
        "output": _enum(WeightBits, quant_raw.get("output", q.output.value), "quantization.output", problems),
        "embedding": _enum(WeightBits, quant_raw.get("embedding", q.embedding.value), "quantization.embedding", problems),
    }
    if quant["embedding"] is WeightBits.INT4:
        problems.append("quantization.embedding: int4 is not supported (none or int8)")
    gs = quant["group_size"]
    if gs is not None and gs & (gs - 1):
        problems.append(f"quantization.group_size: {gs} is not a power of two (XNNPACK's blockwise kernels need one)")

    d = ExportConfig(output=Path("."))
    output = _path(raw.get("output"), "output", problems)
    if raw.get("output") is None:
        problems.append("output: no output folder given (set `output:` or pass --output)")
    top = {
        "output": output,
        "checkpoint": _path(raw.get("checkpoint"), "checkpoint", problems),
        "max_context": _int(raw.get("max_context", d.max_context), "max_context", problems, minimum=2),
        "dtype": _enum(DType, raw.get("dtype", d.dtype.value), "dtype", problems),
        "full_logits": _bool(raw.get("full_logits", d.full_logits), "full_logits", problems),
        "force": _bool(raw.get("force", d.force), "force", problems),
    }
    if quant["linear"] not in (WeightBits.NONE, None) and top["dtype"] is DType.BF16:
        problems.append("dtype: bf16 with quantized linears is not supported by XNNPACK's dynamic quantization (use fp32)")
    if problems:
        raise EdgeError(f"{source}: " + "; ".join(problems))
    return ExportConfig(quantization=QuantizationConfig(**quant), **top)  # type: ignore[arg-type]


def resolve_config_path(name_or_path: str) -> Path:
    """`llama3_2_1b_8da4w` or a path to a YAML file -> the YAML file's path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return CONFIG_DIR / f"{name_or_path}.yaml"


def load_config(*, config: str | None, overrides: dict[str, Any]) -> ExportConfig:
    """A shipped config's name or a YAML path, plus CLI overrides -> ExportConfig.

    `overrides` uses the YAML's keys; `quantization` overrides merge key by key.
    """
    raw: dict[str, Any] = {}
    source = "command line"
    if config is not None:
        path = resolve_config_path(config)
        raw, source = read_yaml(path), str(path)
    merged = raw | {k: v for k, v in overrides.items() if k != "quantization"}
    if "quantization" in overrides:
        base = raw.get("quantization") or {}
        # A non-mapping `quantization:` in the YAML is left for parse_config to report.
        merged["quantization"] = base | overrides["quantization"] if isinstance(base, dict) else base
    return parse_config(merged, source=source)
