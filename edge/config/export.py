"""The export config: one typed, frozen description of an export.

In:  a YAML file (see `export_configs/`) and/or command-line overrides, both as
     plain mappings with the same keys (`--max-context` is `max_context`).
Out: `ExportConfig`, validated once here: unknown keys and bad values raise one
     `EdgeError` that lists every problem.

YAML layout (every key optional except where the CLI supplies it):

    checkpoint: null           # folder; null = the embedded fixture model
    output: out/llama3_2_1b_8da4w
    max_context: 2048          # KV-cache length = longest prompt + generation
    max_prefill: null          # most tokens per forward call (null: 128, or max_context - 1 if less); the runner
                               # prefills longer prompts in chunks; activations are planned for it
    dtype: fp32                # fp32 | bf16: activations and unquantized weights
    full_logits: false         # true: forward returns logits for every position
    formats: [pte]             # pte | onnx | gguf, any of them: the same integers and scales in each
                               # (onnx/: model.onnx for onnxruntime-genai; model.gguf for llama.cpp)
    quantization:
      linear: int4             # none | int4 | int8: transformer-block linears, 8-bit dynamic activations
      group_size: 32           # int4 groups along the input dimension
      output: int8             # none | int4 | int8: output layer (int8 per channel, int4 per group)
      embedding: int8          # none | int8: per-channel lookup table
      rounding: rtn            # rtn (torchao round-to-nearest) | gptq (int4 linears only)
    rotation:                  # SpinQuant
      kind: none               # none | hadamard (random, seeded) | optimized (Cayley SGD)
      file: null               # rotations.safetensors from an earlier export: reuse, do not compute
      seed: 0
      online_hadamard: true    # R4 on down_proj's input, run by llama::fast_hadamard_transform
      steps: 100               # optimized only: Cayley SGD steps (SpinQuant's recipe)
      learning_rate: 1.5
      batch_size: 8            # windows per step (SpinQuant: 8 GPUs x 1)
      micro_batch: 0           # windows per forward/backward, gradients summed over the step (0: the whole batch);
                               # 1 fits the 1B at 2048 tokens in 38 GiB of GPU memory, where 8 at once does not fit 140
      samples: 800             # calibration windows the optimizer cycles through (steps x batch_size)
      weight_bits: 16          # 16: float weights while optimizing (Meta's recipe); 4: int4 fake-quantized
      loss: cross_entropy      # cross_entropy: next token of the text (SpinQuant) | kl: KL from the float model
    gptq:
      samples: 128             # calibration windows for the Hessians
      damp: 0.01               # fraction of the mean Hessian diagonal added to it
      act_order: false         # visit columns by decreasing Hessian diagonal (static groups)
      float_targets: false     # fit each linear to the float model's outputs from the quantized inputs (GPTAQ)
    calibration:
      text: null               # plain-text file; null = calibration.txt beside the checkpoint's weights
      seq_len: 2048            # tokens per window, BOS first
    device: cpu                # cpu | cuda: where rotation optimization, GPTQ and fine-tuning run
    finetune: null             # QAT + LoRA (`python -m edge.finetune`); see edge.config.finetune.
                               # When present, edge.export needs a checkpoint that edge.finetune wrote.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.config.finetune import FinetuneConfig, check_finetune
from edge.core.errors import EdgeError
from edge.core.fields import option, parse_fields, parse_value, to_plain
from edge.core.io import read_yaml

CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "export_configs"


class DType(enum.Enum):
    FP32 = "fp32"
    BF16 = "bf16"


class WeightBits(enum.Enum):
    NONE = "none"
    INT4 = "int4"
    INT8 = "int8"


class Rounding(enum.Enum):
    RTN = "rtn"
    GPTQ = "gptq"


class RotationKind(enum.Enum):
    NONE = "none"
    HADAMARD = "hadamard"  # seeded random Hadamard R1/R2
    OPTIMIZED = "optimized"  # random Hadamard start, then Cayley SGD on the Stiefel manifold


class RotationLoss(enum.Enum):
    CROSS_ENTROPY = "cross_entropy"  # next-token cross-entropy on the calibration text (SpinQuant's recipe)
    KL = "kl"  # KL divergence from the float model's next-token distribution (OSTQuant's choice)


class Format(enum.Enum):
    PTE = "pte"  # ExecuTorch program (XNNPACK): model.pte
    ONNX = "onnx"  # onnxruntime-genai folder: onnx/model.onnx + genai_config.json + tokenizer
    GGUF = "gguf"  # llama.cpp: model.gguf


class Device(enum.Enum):
    CPU = "cpu"
    CUDA = "cuda"


@dataclass(frozen=True)
class QuantizationConfig:
    linear: WeightBits = option(WeightBits.NONE, help="transformer-block linears, with 8-bit dynamic activations")
    group_size: int = option(32, help="int4 groups along the input dimension (a power of two)", min=1)
    output: WeightBits = option(WeightBits.NONE, help="output layer: int8 per channel, int4 per group")
    embedding: WeightBits = option(WeightBits.NONE, help="embedding: per-channel int8 lookup table (none or int8)")
    rounding: Rounding = option(Rounding.RTN, help="rtn (torchao round-to-nearest) or gptq (int4 linears only)")

    @property
    def is_quantized(self) -> bool:
        return any(b is not WeightBits.NONE for b in (self.linear, self.output, self.embedding))


@dataclass(frozen=True)
class RotationConfig:
    kind: RotationKind = option(
        RotationKind.NONE, help="SpinQuant: none, hadamard (random, seeded) or optimized (Cayley SGD)"
    )
    file: Path | None = option(None, help="rotations.safetensors from an earlier export: reuse, do not compute")
    seed: int = option(0, help="seed of the random Hadamard start", min=0)
    online_hadamard: bool = option(True, help="R4 on down_proj's input, run by llama::fast_hadamard_transform")
    steps: int = option(100, help="optimized only: Cayley SGD steps (SpinQuant's recipe)", min=0)
    learning_rate: float = option(1.5, help="Cayley SGD learning rate", min=0.0)
    batch_size: int = option(8, help="windows per step (SpinQuant: 8 GPUs x 1)", min=1)
    micro_batch: int = option(
        0, help="windows per forward/backward, gradients summed over the step (0: the whole batch)", min=0
    )
    samples: int = option(800, help="calibration windows the optimizer cycles through", min=1)
    weight_bits: int = option(
        16, help="16: float weights while optimizing (Meta's recipe); 4: int4 fake-quantized", min=4
    )
    loss: RotationLoss = option(
        RotationLoss.CROSS_ENTROPY, help="cross_entropy (next token, SpinQuant) or kl (from the float model)"
    )

    @property
    def enabled(self) -> bool:
        return self.kind is not RotationKind.NONE


@dataclass(frozen=True)
class GPTQConfig:
    samples: int = option(128, help="calibration windows for the Hessians", min=1)
    damp: float = option(0.01, help="fraction of the mean Hessian diagonal added to it", min=0.0, max=1.0)
    act_order: bool = option(False, help="visit columns by decreasing Hessian diagonal (static groups)")
    float_targets: bool = option(
        False, help="fit each linear to the float model's outputs from the quantized inputs (GPTAQ)"
    )


@dataclass(frozen=True)
class CalibrationConfig:
    text: Path | None = option(None, help="plain-text file; null: calibration.txt beside the checkpoint's weights")
    seq_len: int = option(2048, help="tokens per window, BOS first", min=2)


# Prefill chunk: on the 1B shape, 128-token calls prefill 1.26x as fast as one 512-token call and plan
# 5 MiB of activations instead of 73 (benchmarks/results/prefill_chunk_1b.md); ExecuTorch's runner
# chunks prompts by the program's get_max_seq_len.
DEFAULT_MAX_PREFILL = 128


def _formats(value: Any, key: str, problems: list[str]) -> tuple[Format, ...] | None:
    """`[pte, onnx]` or "pte,onnx" -> (Format.PTE, Format.ONNX); problems reported, None then."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        problems.append(f"{key}: {value!r} is not a non-empty list of {', '.join(f.value for f in Format)}")
        return None
    before = len(problems)
    out = []
    for v in items:
        try:
            out.append(Format(str(v).strip()))
        except ValueError:
            problems.append(f"{key}: {str(v).strip()!r} is not one of {', '.join(f.value for f in Format)}")
    if len(problems) > before:
        return None
    if len(set(out)) != len(out):
        problems.append(f"{key}: {value!r} names a format twice")
    return tuple(out)


def _output(value: Any, key: str, problems: list[str]) -> Path | None:
    if value is None:
        problems.append(f"{key}: no output folder given (set `output:` or pass --output)")
        return None
    return parse_value(Path, value, key, problems)


@dataclass(frozen=True)
class ExportConfig:
    output: Path = option(
        help="output folder (must not exist unless force)",
        check=_output,
        required="output: no output folder given (set `output:` or pass --output)",
    )
    checkpoint: Path | None = option(
        None,
        help="checkpoint folder: HF (config.json + safetensors) or Meta (params.json + "
        "consolidated.00.pth); only fixture_* configs may leave it out",
    )
    max_context: int = option(2048, help="KV cache length in tokens: longest prompt + generation", min=2)
    max_prefill: int | None = option(
        None,
        help="most tokens per forward call; longer prompts are prefilled in chunks "
        "(null: 128, or max_context - 1 if less)",
        min=1,
    )
    dtype: DType = option(DType.FP32, help="activations and unquantized weights")
    full_logits: bool = option(False, help="forward returns logits for every position, not only the last")
    formats: tuple[Format, ...] = option(
        (Format.PTE,), help="what to write: pte, onnx, gguf (the same integers and scales in each)", check=_formats
    )
    force: bool = option(False, help="replace an existing output folder")
    device: Device = option(Device.CPU, help="where rotation optimization, GPTQ and fine-tuning run")
    quantization: QuantizationConfig = option(help="Meta's mobile scheme", factory=QuantizationConfig)
    rotation: RotationConfig = option(help="SpinQuant rotations", factory=RotationConfig)
    gptq: GPTQConfig = option(help="GPTQ rounding (quantization.rounding: gptq)", factory=GPTQConfig)
    calibration: CalibrationConfig = option(help="calibration text for rotations and GPTQ", factory=CalibrationConfig)
    finetune: FinetuneConfig | None = option(
        None, help="QAT + LoRA (python -m edge.finetune); see edge.config.finetune"
    )

    @property
    def needs_calibration(self) -> bool:
        optimize = self.rotation.kind is RotationKind.OPTIMIZED and self.rotation.file is None
        return optimize or self.quantization.rounding is Rounding.GPTQ

    @property
    def prefill_chunk(self) -> int:
        """The most tokens one forward call takes: max_prefill, else 128 (or max_context - 1 if less)."""
        return self.max_prefill or min(DEFAULT_MAX_PREFILL, self.max_context - 1)

    def to_dict(self) -> dict[str, Any]:
        """ExportConfig -> the YAML-shaped mapping it was (or could have been) read from."""
        return to_plain(self)


SECTIONS = {
    "quantization": QuantizationConfig,
    "rotation": RotationConfig,
    "gptq": GPTQConfig,
    "calibration": CalibrationConfig,
}


def _check_combinations(c: dict[str, Any], problems: list[str]) -> None:
    """Rules that tie fields together (each field's own type and range are checked by parse_fields)."""
    q, r, g = c["quantization"], c["rotation"], c["gptq"]
    if q is not None:
        if q.embedding is WeightBits.INT4:
            problems.append("quantization.embedding: int4 is not supported (none or int8)")
        if q.group_size & (q.group_size - 1):
            problems.append(
                f"quantization.group_size: {q.group_size} is not a power of two (XNNPACK's blockwise kernels need one)"
            )
        if q.rounding is Rounding.GPTQ and q.linear is not WeightBits.INT4:
            problems.append("quantization.rounding: gptq needs int4 transformer-block linears")
        if q.linear is not WeightBits.NONE and c["dtype"] is DType.BF16:
            problems.append(
                "dtype: bf16 with quantized linears is not supported by XNNPACK's dynamic quantization (use fp32)"
            )
    if r is not None:
        if r.micro_batch and r.batch_size % r.micro_batch:
            problems.append(f"rotation.micro_batch: {r.micro_batch} does not divide rotation.batch_size {r.batch_size}")
        if r.weight_bits not in (4, 16):
            problems.append(
                f"rotation.weight_bits: {r.weight_bits} is not 16 (float weights) or 4 (int4 fake-quantized)"
            )
        if r.file is not None and r.kind is RotationKind.NONE:
            problems.append("rotation.file: given, but rotation.kind is none (set it to the file's kind)")
        if r.enabled and r.online_hadamard and c["dtype"] is DType.BF16:
            problems.append(
                "dtype: bf16 with the online Hadamard is not supported "
                "(llama::fast_hadamard_transform has no bf16 kernel): "
                "use fp32, or rotation.online_hadamard: false"
            )
    if isinstance(c["max_prefill"], int) and isinstance(c["max_context"], int) and c["max_prefill"] >= c["max_context"]:
        problems.append(f"max_prefill: {c['max_prefill']} must be less than max_context ({c['max_context']})")
    if g is not None and g.damp == 0.0:
        problems.append(
            "gptq.damp: 0 leaves the Hessian singular for short calibration; use a small positive value such as 0.01"
        )
    if c["finetune"] is not None and ((r is not None and r.enabled) or (q is not None and q.rounding is Rounding.GPTQ)):
        problems.append(
            "finetune: QAT + LoRA exports round with the fake quantizer's own round-to-nearest; "
            "rotation and gptq do not combine with it"
        )


def parse_config(raw: dict[str, Any], *, source: str) -> ExportConfig:
    """A YAML-shaped mapping -> ExportConfig, or one EdgeError listing every problem."""
    if not isinstance(raw, dict):
        raise EdgeError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    problems: list[str] = []
    values = parse_fields(ExportConfig, raw, problems)
    if values["finetune"] is not None:
        check_finetune(values["finetune"], problems)
    _check_combinations(values, problems)
    if problems:
        raise EdgeError(f"{source}: " + "; ".join(problems))
    return ExportConfig(**values)


def resolve_config_path(name_or_path: str) -> Path:
    """`llama3_2_1b_8da4w` or a path to a YAML file -> the YAML file's path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return CONFIG_DIR / f"{name_or_path}.yaml"


def load_config(*, config: str | Path | ExportConfig | None, overrides: dict[str, Any]) -> ExportConfig:
    """A shipped config's name, a YAML path or an ExportConfig, plus overrides -> ExportConfig.

    `overrides` uses the YAML's keys; sections (`quantization`, `rotation`, `finetune`, ...) merge key by key.
    """
    raw: dict[str, Any] = {}
    source = "command line"
    if isinstance(config, ExportConfig):
        raw, source = config.to_dict(), "config"
    elif config is not None:
        path = resolve_config_path(config)
        raw, source = read_yaml(path), str(path)
    return parse_config(_deep_merge(raw, overrides), source=source)


def _deep_merge(base: Any, over: dict[str, Any]) -> Any:
    """Mapping `over` merged into `base` key by key, recursively (a non-mapping base is left for parse_config)."""
    if base is None:
        base = {}
    if not isinstance(base, dict):
        return base
    out = dict(base)
    for k, v in over.items():
        out[k] = _deep_merge(base.get(k), v) if isinstance(v, dict) else v
    return out
