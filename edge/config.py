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
    finetune: null             # QAT + LoRA (`python -m edge.finetune`); see edge.finetune.config.
                               # When present, edge.export needs a checkpoint that edge.finetune wrote.
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
from edge.validate import float_field as _float
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
    linear: WeightBits = WeightBits.NONE
    group_size: int = 32
    output: WeightBits = WeightBits.NONE
    embedding: WeightBits = WeightBits.NONE
    rounding: Rounding = Rounding.RTN

    @property
    def is_quantized(self) -> bool:
        return any(b is not WeightBits.NONE for b in (self.linear, self.output, self.embedding))


@dataclass(frozen=True)
class RotationConfig:
    kind: RotationKind = RotationKind.NONE
    file: Path | None = None
    seed: int = 0
    online_hadamard: bool = True
    steps: int = 100
    learning_rate: float = 1.5
    batch_size: int = 8
    micro_batch: int = 0  # 0: the whole batch in one forward/backward
    samples: int = 800
    weight_bits: int = 16
    loss: RotationLoss = RotationLoss.CROSS_ENTROPY

    @property
    def enabled(self) -> bool:
        return self.kind is not RotationKind.NONE


@dataclass(frozen=True)
class GPTQConfig:
    samples: int = 128
    damp: float = 0.01
    act_order: bool = False
    float_targets: bool = False


@dataclass(frozen=True)
class CalibrationConfig:
    text: Path | None = None
    seq_len: int = 2048


# Prefill chunk: on the 1B shape, 128-token calls prefill 1.26x as fast as one 512-token call and plan
# 5 MiB of activations instead of 73 (benchmarks/results/prefill_chunk_1b.md); ExecuTorch's runner
# chunks prompts by the program's get_max_seq_len.
DEFAULT_MAX_PREFILL = 128


@dataclass(frozen=True)
class ExportConfig:
    output: Path
    checkpoint: Path | None = None
    max_context: int = 2048
    max_prefill: int | None = None  # None: DEFAULT_MAX_PREFILL, or max_context - 1 if less (see prefill_chunk)
    dtype: DType = DType.FP32
    full_logits: bool = False
    formats: tuple[Format, ...] = (Format.PTE,)
    force: bool = False
    device: Device = Device.CPU
    quantization: QuantizationConfig = field(default_factory=QuantizationConfig)
    rotation: RotationConfig = field(default_factory=RotationConfig)
    gptq: GPTQConfig = field(default_factory=GPTQConfig)
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    finetune: Any = None  # edge.finetune.config.FinetuneConfig | None (imported lazily: it needs torch)

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

        return to_plain(dataclasses.asdict(self))


def _path(value: Any, key: str, problems: list[str]) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        problems.append(f"{key}: {value!r} is not a path")
        return None
    return Path(value)


_SECTIONS = {"quantization": QuantizationConfig, "rotation": RotationConfig, "gptq": GPTQConfig, "calibration": CalibrationConfig}
_TOP_KEYS = {f.name for f in dataclasses.fields(ExportConfig)}


def _section(raw: dict[str, Any], name: str, problems: list[str]) -> dict[str, Any]:
    """raw[name] as a mapping (unknown keys reported), defaults filled in from its dataclass."""
    part = raw.get(name) or {}
    if not isinstance(part, dict):
        problems.append(f"{name}: expected a mapping")
        part = {}
    fields = {f.name: f for f in dataclasses.fields(_SECTIONS[name])}
    for key in sorted(set(part) - set(fields)):
        problems.append(f"unknown key '{name}.{key}'")
    defaults = dataclasses.asdict(_SECTIONS[name]())
    return {k: part.get(k, to_plain(defaults[k])) for k in fields}


def parse_config(raw: dict[str, Any], *, source: str) -> ExportConfig:
    """A YAML-shaped mapping -> ExportConfig, or one EdgeError listing every problem."""
    problems: list[str] = []
    if not isinstance(raw, dict):
        raise EdgeError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"unknown key {key!r}")

    qr = _section(raw, "quantization", problems)
    quant = {
        "linear": _enum(WeightBits, qr["linear"], "quantization.linear", problems),
        "group_size": _int(qr["group_size"], "quantization.group_size", problems, minimum=1),
        "output": _enum(WeightBits, qr["output"], "quantization.output", problems),
        "embedding": _enum(WeightBits, qr["embedding"], "quantization.embedding", problems),
        "rounding": _enum(Rounding, qr["rounding"], "quantization.rounding", problems),
    }
    if quant["embedding"] is WeightBits.INT4:
        problems.append("quantization.embedding: int4 is not supported (none or int8)")
    gs = quant["group_size"]
    if gs is not None and gs & (gs - 1):
        problems.append(f"quantization.group_size: {gs} is not a power of two (XNNPACK's blockwise kernels need one)")
    if quant["rounding"] is Rounding.GPTQ and quant["linear"] not in (WeightBits.INT4, None):
        problems.append("quantization.rounding: gptq needs int4 transformer-block linears")

    rr = _section(raw, "rotation", problems)
    rotation = {
        "kind": _enum(RotationKind, rr["kind"], "rotation.kind", problems),
        "file": _path(rr["file"], "rotation.file", problems),
        "seed": _int(rr["seed"], "rotation.seed", problems, minimum=0),
        "online_hadamard": _bool(rr["online_hadamard"], "rotation.online_hadamard", problems),
        "steps": _int(rr["steps"], "rotation.steps", problems, minimum=0),
        "learning_rate": _float(rr["learning_rate"], "rotation.learning_rate", problems, minimum=0.0),
        "batch_size": _int(rr["batch_size"], "rotation.batch_size", problems, minimum=1),
        "micro_batch": _int(rr["micro_batch"], "rotation.micro_batch", problems, minimum=0),
        "samples": _int(rr["samples"], "rotation.samples", problems, minimum=1),
        "weight_bits": _int(rr["weight_bits"], "rotation.weight_bits", problems, minimum=4),
        "loss": _enum(RotationLoss, rr["loss"], "rotation.loss", problems),
    }
    if rotation["micro_batch"] and rotation["batch_size"] and rotation["batch_size"] % rotation["micro_batch"]:
        problems.append(f"rotation.micro_batch: {rotation['micro_batch']} does not divide rotation.batch_size {rotation['batch_size']}")
    if rotation["weight_bits"] not in (4, 16, None):
        problems.append(f"rotation.weight_bits: {rotation['weight_bits']} is not 16 (float weights) or 4 (int4 fake-quantized)")
    if rotation["file"] is not None and rotation["kind"] is RotationKind.NONE:
        problems.append("rotation.file: given, but rotation.kind is none (set it to the file's kind)")
    gr = _section(raw, "gptq", problems)
    gptq = {
        "samples": _int(gr["samples"], "gptq.samples", problems, minimum=1),
        "damp": _float(gr["damp"], "gptq.damp", problems, minimum=0.0, maximum=1.0),
        "act_order": _bool(gr["act_order"], "gptq.act_order", problems),
        "float_targets": _bool(gr["float_targets"], "gptq.float_targets", problems),
    }
    cr = _section(raw, "calibration", problems)
    calibration = {
        "text": _path(cr["text"], "calibration.text", problems),
        "seq_len": _int(cr["seq_len"], "calibration.seq_len", problems, minimum=2),
    }

    d = ExportConfig(output=Path("."))
    output = _path(raw.get("output"), "output", problems)
    if raw.get("output") is None:
        problems.append("output: no output folder given (set `output:` or pass --output)")
    top = {
        "output": output,
        "checkpoint": _path(raw.get("checkpoint"), "checkpoint", problems),
        "max_context": _int(raw.get("max_context", d.max_context), "max_context", problems, minimum=2),
        "max_prefill": None if raw.get("max_prefill") is None else _int(raw["max_prefill"], "max_prefill", problems, minimum=1),
        "dtype": _enum(DType, raw.get("dtype", d.dtype.value), "dtype", problems),
        "full_logits": _bool(raw.get("full_logits", d.full_logits), "full_logits", problems),
        "formats": _formats(raw.get("formats", ["pte"]), problems),
        "force": _bool(raw.get("force", d.force), "force", problems),
        "device": _enum(Device, raw.get("device", d.device.value), "device", problems),
    }
    if rotation["kind"] not in (RotationKind.NONE, None) and rotation["online_hadamard"] and top["dtype"] is DType.BF16:
        problems.append("dtype: bf16 with the online Hadamard is not supported (llama::fast_hadamard_transform has no bf16 kernel): "
                        "use fp32, or rotation.online_hadamard: false")
    if isinstance(top["max_prefill"], int) and isinstance(top["max_context"], int) and top["max_prefill"] >= top["max_context"]:
        problems.append(f"max_prefill: {top['max_prefill']} must be less than max_context ({top['max_context']})")
    if gptq["damp"] == 0.0:
        problems.append("gptq.damp: 0 leaves the Hessian singular for short calibration; use a small positive value such as 0.01")
    if quant["linear"] not in (WeightBits.NONE, None) and top["dtype"] is DType.BF16:
        problems.append("dtype: bf16 with quantized linears is not supported by XNNPACK's dynamic quantization (use fp32)")
    from edge.finetune.config import parse_finetune

    finetune = parse_finetune(raw.get("finetune"), problems)
    if finetune is not None and (rotation["kind"] not in (RotationKind.NONE, None) or quant["rounding"] is Rounding.GPTQ):
        problems.append("finetune: QAT + LoRA exports round with the fake quantizer's own round-to-nearest; "
                        "rotation and gptq do not combine with it")
    if problems:
        raise EdgeError(f"{source}: " + "; ".join(problems))
    return ExportConfig(
        finetune=finetune,
        quantization=QuantizationConfig(**quant),
        rotation=RotationConfig(**rotation),
        gptq=GPTQConfig(**gptq),
        calibration=CalibrationConfig(**calibration),
        **top,
    )  # type: ignore[arg-type]


def _formats(value: Any, problems: list[str]) -> tuple[Format, ...] | None:
    """`[pte, onnx]` or "pte,onnx" -> (Format.PTE, Format.ONNX); problems reported, None then."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        problems.append(f"formats: {value!r} is not a non-empty list of {', '.join(f.value for f in Format)}")
        return None
    out = [_enum(Format, str(v).strip(), "formats", problems) for v in items]
    if None in out:
        return None
    if len(set(out)) != len(out):
        problems.append(f"formats: {value!r} names a format twice")
    return tuple(out)  # type: ignore[arg-type]


def resolve_config_path(name_or_path: str) -> Path:
    """`llama3_2_1b_8da4w` or a path to a YAML file -> the YAML file's path."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    return CONFIG_DIR / f"{name_or_path}.yaml"


def load_config(*, config: str | None, overrides: dict[str, Any]) -> ExportConfig:
    """A shipped config's name or a YAML path, plus CLI overrides -> ExportConfig.

    `overrides` uses the YAML's keys; section overrides (`quantization`, `rotation`, ...) merge key by key.
    """
    raw: dict[str, Any] = {}
    source = "command line"
    if config is not None:
        path = resolve_config_path(config)
        raw, source = read_yaml(path), str(path)
    merged = raw | {k: v for k, v in overrides.items() if k not in _SECTIONS and k != "finetune"}
    for name in _SECTIONS:
        if name in overrides:
            base = raw.get(name) or {}
            # A non-mapping section in the YAML is left for parse_config to report.
            merged[name] = base | overrides[name] if isinstance(base, dict) else base
    if "finetune" in overrides:
        merged["finetune"] = _deep_merge(raw.get("finetune"), overrides["finetune"])
    return parse_config(merged, source=source)


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
