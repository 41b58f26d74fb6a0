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
    threads: null               # llama_main --cpu_threads (null: the mask's size with a mask, else the
                                # runner's default)
    pin_big_cores: false        # taskset to the online cores that are not little (A53/A55/A57/A510/A520)
    cooldown_temp_c: 40.0       # wait before each run until the battery is cooler than this
    cooldown_timeout_s: 120.0
    max_temp_rise_c: 5.0        # warn when one run heats the battery by more than this
    reconnect_wait_s: 30.0      # after a disconnect, wait this long for the phone to kill its runner
    output: results/bench       # writes results/bench.{md,csv,jsonl,json}
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from edge.core.errors import EdgeError
from edge.core.fields import option, parse_fields, parse_value, to_plain
from edge.core.io import read_yaml


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


def _as_list(value: Any) -> list[Any]:
    """None -> [], a list or tuple -> its items, anything else -> [it]."""
    if value is None:
        return []
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _existing_file(value: Any, key: str, problems: list[str]) -> Path | None:
    """None, or a path to a file that exists -> the Path (else a problem and None)."""
    path = parse_value(Path | None, value, key, problems)
    if path is not None and not path.is_file():
        problems.append(f"{key}: {path} does not exist")
        return None
    return path


def _existing_model(value: Any, key: str, problems: list[str]) -> Path | None:
    """A .pte or .gguf file, or an ONNX model (model.onnx or its folder) -> its Path (else a problem and None)."""
    path = parse_value(Path, value, key, problems)
    if path is None:
        return None
    if path.is_dir():
        if (path / "model.onnx").is_file():
            return path
        problems.append(f"{key}: {value} is a folder without model.onnx")
        return None
    if not path.is_file():
        problems.append(f"{key}: {path} does not exist")
        return None
    return path


def _model_paths(value: Any, key: str, problems: list[str]) -> tuple[Path | None, ...]:
    """--pte values (a list or one path) -> one checked Path per item (None where it is not a model)."""
    items = _as_list(value)
    if not items:
        problems.append(f"{key}: no .pte given (pass --pte FILE)")
    return tuple(_existing_model(item, key, problems) for item in items)


def _hex_mask(value: Any, key: str, problems: list[str]) -> str | None:
    """None, or a CPU mask in hex ("f0", "0xf0") -> the string (else a problem and None)."""
    mask = parse_value(str | None, value, key, problems)
    if mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", mask):
        problems.append(f"{key}: {mask!r} is not a hexadecimal CPU mask (e.g. f0)")
        return None
    return mask


def _device_dir(value: Any, key: str, problems: list[str]) -> str | None:
    """An absolute folder of the harness's own on the phone -> it without a trailing slash."""
    folder = parse_value(str, value, key, problems)
    if folder is not None and (not folder.startswith("/") or folder.rstrip("/") in ("", "/data", "/data/local/tmp")):
        problems.append(f"{key}: {folder!r} must be an absolute folder of its own (e.g. {DEFAULT_DEVICE_DIR})")
        return None
    return folder.rstrip("/") if folder is not None else None


@dataclass(frozen=True)
class BenchConfig:
    """One benchmark session. `group` (metadata) is the --help section of the field's flag."""

    pte: tuple[Path, ...] = option(
        help="models to measure: .pte files, ONNX folders or .gguf files, each in its own runtime",
        check=_model_paths,
        required="pte: no .pte given (pass --pte FILE)",
        group="what",
    )
    target: Target = option(Target.ANDROID, help="android (a phone over adb) or host (this machine)", group="where")
    serial: tuple[str, ...] = option(
        (), help="phones, benchmarked in turn (none: $ANDROID_SERIAL, else the only one attached)", group="where"
    )
    runner: Path | None = option(
        None,
        help="llama_main built for arm64-v8a (on --host: optional, a host-built llama_main)",
        check=_existing_file,
        group="where",
    )
    onnx_runner: Path | None = option(
        None,
        help="onnxruntime-genai's model_benchmark, for ONNX models (on --host: default android_bench.ort_host_runner)",
        check=_existing_file,
        group="where",
    )
    llamacpp_runner: Path | None = option(
        None,
        help="llama.cpp's llama-completion, for .gguf models (on --host: default the one on PATH)",
        check=_existing_file,
        group="where",
    )
    tokenizer: Path | None = option(
        None,
        help="tokenizer for every model (none: tokenizer.json/.model beside each)",
        check=_existing_file,
        group="what",
    )
    label: tuple[str, ...] = option(
        (), help="a row name for each --pte, in order (none: each .pte's folder name)", group="what"
    )
    baseline: str | None = option(
        None, help="label of the row the ratios are against (none: the bf16 export)", group="what"
    )
    prompt_tokens: tuple[int, ...] = option((64,), help="prompt lengths in tokens", min=1, group="how")
    max_new_tokens: int = option(128, help="tokens to generate", min=1, group="how")
    length_flag: LengthFlag = option(
        LengthFlag.AUTO,
        help="runner flag for the length: auto (max_new_tokens where the "
        "runner has it, else seq_len), max_new_tokens, seq_len",
        group="how",
    )
    repetitions: int = option(5, help="measured runs per configuration", min=1, group="how")
    warmup: int = option(1, help="warm-up runs before them", min=0, group="how")
    threads: int | None = option(
        None,
        help="llama_main --cpu_threads (none: the mask's size, else the runner's choice; -1: the runner's choice)",
        min=-1,
        group="how",
    )
    pin_big_cores: bool = option(
        False, help="taskset to the cores that are not little (A53/A55/A57/A510/A520)", group="how"
    )
    taskset: str | None = option(None, help="explicit taskset CPU mask in hex (e.g. f0)", check=_hex_mask, group="how")
    cooldown_temp_c: float = option(
        40.0, help="before each run, wait until the battery is cooler than this", min=-50.0, group="how"
    )
    cooldown_timeout_s: float = option(120.0, help="longest cool-down wait", min=0.0, group="how")
    cooldown_poll_s: float = option(5.0, help="seconds between temperature readings", min=0.0, group="how")
    max_temp_rise_c: float = option(
        5.0, help="warn when a run heats the battery by more than this", min=0.0, group="how"
    )
    device_dir: str = option(DEFAULT_DEVICE_DIR, help="work folder on the phone", check=_device_dir, group="where")
    run_timeout_s: float = option(1800.0, help="a run taking longer fails", min=0.0, min_exclusive=True, group="how")
    reconnect_wait_s: float = option(
        30.0, help="after a disconnect, wait this long to kill the runner left on the phone", min=0.0, group="how"
    )
    rss_interval_s: float = option(0.2, help="seconds between /proc/<pid>/status samples", min=0.01, group="how")
    output: Path | None = option(None, help="write STEM.md, STEM.csv, STEM.jsonl, STEM.json", group="output")
    format: OutputFormat = option(OutputFormat.MARKDOWN, help="what stdout gets", group="output")
    quiet: bool = option(False, help="no progress on stderr", group="output")

    def to_dict(self) -> dict[str, Any]:
        """BenchConfig -> the YAML-shaped mapping it could have been read from."""
        return to_plain(self)


FIELDS = {f.name: f for f in fields(BenchConfig)}
PATH_KEYS = ("pte", "runner", "onnx_runner", "llamacpp_runner", "tokenizer", "output")  # relative to a YAML file


def _check_combinations(c: dict[str, Any], raw: dict[str, Any], problems: list[str]) -> None:
    """Rules that tie fields together (each field's own type, range and check ran in parse_fields)."""
    ptes, labels, serials = c["pte"] or (), c["label"] or (), c["serial"] or ()
    if labels and len(labels) != len(ptes):
        problems.append(f"label: {len(labels)} labels for {len(ptes)} .pte files (give one per --pte, or none)")
    if c["target"] is Target.HOST and serials:
        problems.append("serial: --serial is for phones; --host measures this machine")
    if len(set(serials)) != len(serials):
        problems.append("serial: a serial is given twice")
    if not c["prompt_tokens"]:
        problems.append("prompt_tokens: no prompt length given")
    if c["pin_big_cores"] and raw.get("taskset") is not None:
        problems.append("taskset: give either --taskset MASK or --pin-big-cores, not both")
    if c["threads"] == 0:
        problems.append("threads: 0 is not a thread count (-1 lets the runner choose)")
    if c["target"] is Target.ANDROID and raw.get("runner") is None:
        problems.append("runner: a phone needs llama_main built for arm64-v8a (pass --runner FILE)")
    named = tuple(x for x in labels if x is not None)
    if c["baseline"] is not None and named and c["baseline"] not in named:
        problems.append(f"baseline: {c['baseline']!r} is not one of the labels ({', '.join(named)})")
    if len(set(named)) != len(named):
        problems.append("label: two .pte files have the same label")


def parse_bench_config(raw: dict[str, Any], *, source: str) -> BenchConfig:
    """A YAML-shaped mapping -> BenchConfig, or one BenchError listing every problem."""
    if not isinstance(raw, dict):
        raise BenchError(f"{source}: expected a mapping of config keys, got {type(raw).__name__}")
    problems: list[str] = []
    values = parse_fields(BenchConfig, raw, problems)
    _check_combinations(values, raw, problems)
    if problems:
        raise BenchError(f"{source}: " + "; ".join(problems))
    return BenchConfig(**values)


def load_bench_config(*, config: Path | None, overrides: dict[str, Any]) -> BenchConfig:
    """An optional YAML path plus flag overrides (same keys) -> BenchConfig."""
    raw: dict[str, Any] = {}
    source = "command line"
    if config is not None:
        raw = read_yaml(config)
        source = str(config)
        base = Path(config).resolve().parent
        # Relative paths in a YAML file are relative to that file.
        for key in PATH_KEYS:
            if raw.get(key) is not None:
                items = [str(base / p) if not Path(str(p)).is_absolute() else p for p in _as_list(raw[key])]
                raw[key] = items if isinstance(raw[key], list) else items[0]
    raw = {**raw, **overrides}
    return parse_bench_config(raw, source=source)
