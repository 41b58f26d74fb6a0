"""The bench config: one typed, frozen description of a benchmark session.

In:  command-line flags and/or a YAML file (`--config bench.yaml`), both plain mappings with
     the same keys: every field of `BenchConfig` is one flag (`max_new_tokens` is
     `--max-new-tokens`) and one YAML key. Flags override the YAML.
Out: `BenchConfig`, validated once here; unknown keys and bad values raise one `BenchError`
     that lists every problem.

YAML layout (every key optional except `pte`; `runner` is needed on a phone):

    target: android             # android | host
    serial: [R5CX10ABCDE]       # phones, benchmarked in turn (default: the only one attached)
    runner: build/llama_main    # llama_main built for arm64-v8a
    onnx_runner: null           # onnxruntime-genai's model_benchmark (phone: arm64 build; host: default
                                # android_bench.ort_host_runner, the same measurements through its Python package)
    llamacpp_runner: null       # llama.cpp's llama-completion (host default: the one on PATH)
    pte: [out/llama3_2_1b_bf16/model.pte, out/llama3_2_1b_8da4w/model.pte]
                                # also ONNX folders (out/x/onnx) and .gguf files: each runs in its runtime
    label: [1B BF16, 1B 8da4w]  # one per pte (default: the pte's folder name)
    baseline: 1B BF16           # default: the bf16, unquantized export (from its manifest)
    prompt_tokens: [64]
    max_new_tokens: 128
    repetitions: 5
    warmup: 1
    length_flag: auto           # auto | max_new_tokens | seq_len (auto: what the runner's --helpshort lists)
    threads: null               # llama_main --cpu_threads (null: the mask's size with a mask, else the runner's default)
    pin_big_cores: false        # taskset to the online cores that are not little (A53/A55/A57/A510/A520)
    cooldown_temp_c: 40.0       # wait before each run until the battery is cooler than this
    cooldown_timeout_s: 120.0
    max_temp_rise_c: 5.0        # warn when one run heats the battery by more than this
    reconnect_wait_s: 30.0      # after a disconnect, wait this long for the phone to kill its runner
    output: results/bench       # writes results/bench.{md,csv,jsonl,json}
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.core.errors import EdgeError
from edge.core.io import read_yaml
from edge.core.fields import bool_field as _bool
from edge.core.fields import enum_field as _enum
from edge.core.fields import int_field as _int
from edge.core.fields import to_plain


class BenchError(EdgeError):
    """A fault the user can act on: one line on stderr, exit status 2."""


class Target(enum.Enum):
    ANDROID = "android"
    HOST = "host"


class OutputFormat(enum.Enum):
    MARKDOWN = "md"
    CSV = "csv"
    JSONL = "jsonl"
    V3_JSON = "json"


class LengthFlag(enum.Enum):
    """How the runner is told the generation length."""

    AUTO = "auto"  # max_new_tokens where the runner's --helpshort lists it, else seq_len
    MAX_NEW_TOKENS = "max_new_tokens"  # llama_main from ExecuTorch 1.1
    SEQ_LEN = "seq_len"  # every llama_main: prompt + generated tokens


DEFAULT_DEVICE_DIR = "/data/local/tmp/edge_bench"


@dataclass(frozen=True)
class BenchConfig:
    pte: tuple[Path, ...]
    target: Target = Target.ANDROID
    serial: tuple[str, ...] = ()
    runner: Path | None = None
    onnx_runner: Path | None = None
    llamacpp_runner: Path | None = None
    tokenizer: Path | None = None
    label: tuple[str, ...] = ()
    baseline: str | None = None
    prompt_tokens: tuple[int, ...] = (64,)
    max_new_tokens: int = 128
    length_flag: LengthFlag = LengthFlag.AUTO
    repetitions: int = 5
    warmup: int = 1
    threads: int | None = None
    pin_big_cores: bool = False
    taskset: str | None = None
    cooldown_temp_c: float = 40.0
    cooldown_timeout_s: float = 120.0
    cooldown_poll_s: float = 5.0
    max_temp_rise_c: float = 5.0
    device_dir: str = DEFAULT_DEVICE_DIR
    run_timeout_s: float = 1800.0
    reconnect_wait_s: float = 30.0
    rss_interval_s: float = 0.2
    output: Path | None = None
    format: OutputFormat = OutputFormat.MARKDOWN
    quiet: bool = False

    def to_dict(self) -> dict[str, Any]:
        """BenchConfig -> the YAML-shaped mapping it could have been read from."""

        return {f.name: to_plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


FIELDS = {f.name: f for f in dataclasses.fields(BenchConfig)}
_DEFAULTS = {name: f.default for name, f in FIELDS.items() if f.default is not dataclasses.MISSING}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _float(value: Any, key: str, problems: list[str], *, minimum: float, exclusive: bool = False) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        problems.append(f"{key}: {value!r} is not a number")
        return None
    if value < minimum or (exclusive and value == minimum):
        problems.append(f"{key}: {value} is {'not more' if exclusive else 'less'} than {minimum}")
        return None
    return float(value)


def _str(value: Any, key: str, problems: list[str]) -> str | None:
    if value is None:
        return None
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not str(value):
        problems.append(f"{key}: {value!r} is not a string")
        return None
    return str(value)


def _existing_file(value: Any, key: str, problems: list[str]) -> Path | None:
    if value is None:
        return None
    if not isinstance(value, (str, Path)) or not str(value):
        problems.append(f"{key}: {value!r} is not a path")
        return None
    p = Path(value)
    if not p.is_file():
        problems.append(f"{key}: {p} does not exist")
        return None
    return p


def _existing_model(value: Any, problems: list[str]) -> Path | None:
    """A .pte or .gguf file, or an ONNX model (model.onnx or its folder)."""
    if isinstance(value, (str, Path)) and str(value) and Path(value).is_dir():
        if (Path(value) / "model.onnx").is_file():
            return Path(value)
        problems.append(f"pte: {value} is a folder without model.onnx")
        return None
    return _existing_file(value, "pte", problems)


def parse_bench_config(raw: dict[str, Any], *, source: str) -> BenchConfig:
    """A YAML-shaped mapping -> BenchConfig, or one BenchError listing every problem."""
    if not isinstance(raw, dict):
        raise BenchError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    problems = [f"unknown key {k!r}" for k in sorted(set(raw) - set(FIELDS))]
    get = lambda k: raw.get(k, _DEFAULTS.get(k))  # noqa: E731

    ptes = [_existing_model(p, problems) for p in _as_list(raw.get("pte"))]
    if not ptes:
        problems.append("pte: no .pte given (pass --pte FILE)")
    labels = [_str(x, "label", problems) for x in _as_list(raw.get("label"))]
    if labels and len(labels) != len(ptes):
        problems.append(f"label: {len(labels)} labels for {len(ptes)} .pte files (give one per --pte, or none)")
    target = _enum(Target, get("target"), "target", problems)
    serials = [_str(s, "serial", problems) for s in _as_list(raw.get("serial"))]
    if target is Target.HOST and serials:
        problems.append("serial: --serial is for phones; --host measures this machine")
    if len(set(serials)) != len(serials):
        problems.append("serial: a serial is given twice")
    prompt_tokens = [_int(n, "prompt_tokens", problems, minimum=1) for n in _as_list(get("prompt_tokens"))]
    if not prompt_tokens:
        problems.append("prompt_tokens: no prompt length given")

    taskset = _str(get("taskset"), "taskset", problems)
    if taskset is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", taskset):
        problems.append(f"taskset: {taskset!r} is not a hexadecimal CPU mask (e.g. f0)")
    pin_big = _bool(get("pin_big_cores"), "pin_big_cores", problems)
    if pin_big and taskset is not None:
        problems.append("taskset: give either --taskset MASK or --pin-big-cores, not both")
    threads = get("threads")
    if threads is not None:
        threads = _int(threads, "threads", problems, minimum=-1)
        if threads == 0:
            problems.append("threads: 0 is not a thread count (-1 lets the runner choose)")

    runner = _existing_file(get("runner"), "runner", problems)
    if target is Target.ANDROID and get("runner") is None:
        problems.append("runner: a phone needs llama_main built for arm64-v8a (pass --runner FILE)")
    device_dir = _str(get("device_dir"), "device_dir", problems)
    if device_dir is not None and (not device_dir.startswith("/") or device_dir.rstrip("/") in ("", "/data", "/data/local/tmp")):
        problems.append(f"device_dir: {device_dir!r} must be an absolute folder of its own (e.g. {DEFAULT_DEVICE_DIR})")
    output = get("output")
    if output is not None and (not isinstance(output, (str, Path)) or not str(output)):
        problems.append(f"output: {output!r} is not a path")

    values = {
        "pte": tuple(p for p in ptes if p is not None),
        "target": target,
        "serial": tuple(s for s in serials if s is not None),
        "runner": runner,
        "onnx_runner": _existing_file(get("onnx_runner"), "onnx_runner", problems),
        "llamacpp_runner": _existing_file(get("llamacpp_runner"), "llamacpp_runner", problems),
        "tokenizer": _existing_file(get("tokenizer"), "tokenizer", problems),
        "label": tuple(x for x in labels if x is not None),
        "baseline": _str(get("baseline"), "baseline", problems),
        "prompt_tokens": tuple(n for n in prompt_tokens if n is not None),
        "max_new_tokens": _int(get("max_new_tokens"), "max_new_tokens", problems, minimum=1),
        "length_flag": _enum(LengthFlag, get("length_flag"), "length_flag", problems),
        "repetitions": _int(get("repetitions"), "repetitions", problems, minimum=1),
        "warmup": _int(get("warmup"), "warmup", problems, minimum=0),
        "threads": threads,
        "pin_big_cores": pin_big,
        "taskset": taskset,
        "cooldown_temp_c": _float(get("cooldown_temp_c"), "cooldown_temp_c", problems, minimum=-50.0),
        "cooldown_timeout_s": _float(get("cooldown_timeout_s"), "cooldown_timeout_s", problems, minimum=0.0),
        "cooldown_poll_s": _float(get("cooldown_poll_s"), "cooldown_poll_s", problems, minimum=0.0),
        "max_temp_rise_c": _float(get("max_temp_rise_c"), "max_temp_rise_c", problems, minimum=0.0),
        "device_dir": device_dir.rstrip("/") if device_dir else device_dir,
        "run_timeout_s": _float(get("run_timeout_s"), "run_timeout_s", problems, minimum=0.0, exclusive=True),
        "reconnect_wait_s": _float(get("reconnect_wait_s"), "reconnect_wait_s", problems, minimum=0.0),
        "rss_interval_s": _float(get("rss_interval_s"), "rss_interval_s", problems, minimum=0.01),
        "output": Path(output) if isinstance(output, (str, Path)) and str(output) else None,
        "format": _enum(OutputFormat, get("format"), "format", problems),
        "quiet": _bool(get("quiet"), "quiet", problems),
    }
    labels_final = values["label"] or ()
    if values["baseline"] is not None and labels_final and values["baseline"] not in labels_final:
        problems.append(f"baseline: {values['baseline']!r} is not one of the labels ({', '.join(labels_final)})")
    if len(set(labels_final)) != len(labels_final):
        problems.append("label: two .pte files have the same label")
    if problems:
        raise BenchError(f"{source}: " + "; ".join(problems))
    return BenchConfig(**values)  # type: ignore[arg-type]


def load_bench_config(*, config: Path | None, overrides: dict[str, Any]) -> BenchConfig:
    """An optional YAML path plus flag overrides (same keys) -> BenchConfig."""
    raw: dict[str, Any] = {}
    source = "command line"
    if config is not None:
        raw = read_yaml(config)
        source = str(config)
        base = Path(config).resolve().parent
        # Relative paths in a YAML file are relative to that file.
        for key in ("pte", "runner", "onnx_runner", "llamacpp_runner", "tokenizer", "output"):
            if key in raw and raw[key] is not None:
                items = [str(base / p) if not Path(str(p)).is_absolute() else p for p in _as_list(raw[key])]
                raw[key] = items if isinstance(raw[key], list) else items[0]
    raw = {**raw, **overrides}
    return parse_bench_config(raw, source=source)
