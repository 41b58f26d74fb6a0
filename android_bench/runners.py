"""The three runtimes a model can be measured in, and how each runner is called and read.

In:  a model path (`model.pte`, an ONNX folder from `edge.export --formats onnx`, or `model.gguf`).
Out: `Runtime` (from the path), the runner's command words for one run, and its output parsed into
     `RuntimeStats`, which has the fields `android_bench.bench` reads from ExecuTorch's observer
     line, so every runtime lands in the same flat record:

  executorch   llama_main (or android_bench.host_runner): `PyTorchObserver {json}` (android_bench.observer)
  onnxruntime  onnxruntime-genai's benchmark/c `model_benchmark` (or android_bench.ort_host_runner,
               which prints the same): "Prompt processing (time to first token)", "Token generation",
               "Token sampling" blocks of "avg (us)" / "avg (tokens/s)"; threads through genai_config.json
  llama.cpp    llama-completion: the "prompt eval time" and "eval time" lines of its perf print
               (common_perf_print; llama_perf_context_print in older builds)
"""

from __future__ import annotations

import enum
import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from android_bench.config import BenchError

ONNX_FILE = "model.onnx"


class Runtime(enum.Enum):
    EXECUTORCH = "executorch"
    ONNXRUNTIME = "onnxruntime"
    LLAMACPP = "llama.cpp"


def runtime_of(path: Path) -> Runtime:
    """A model path -> the runtime that runs it (BenchError for anything else)."""
    path = Path(path)
    if path.is_dir() and (path / ONNX_FILE).is_file() or path.name == ONNX_FILE:
        return Runtime.ONNXRUNTIME
    if path.suffix == ".gguf":
        return Runtime.LLAMACPP
    if path.suffix == ".pte":
        return Runtime.EXECUTORCH
    raise BenchError(f"{path} is not a .pte, an ONNX model folder (with {ONNX_FILE}) or a .gguf file")


def model_files(path: Path) -> list[Path]:
    """The files a model is made of (an ONNX model: its folder's files; else the file itself)."""
    path = Path(path)
    if runtime_of(path) is Runtime.ONNXRUNTIME:
        folder = path if path.is_dir() else path.parent
        return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "evaluate.json")
    return [path]


@dataclass(frozen=True)
class RuntimeStats:
    """One run's numbers, named as `android_bench.observer.ObserverStats` names them."""

    form: str
    prompt_tokens: int
    generated_tokens: int
    model_load_s: float | None
    ttft_s: float
    prefill_tok_s: float | None
    decode_tok_s: float | None
    reported_prefill_tok_s: float | None
    reported_decode_tok_s: float | None
    raw_json: str


class RuntimeOutputError(BenchError):
    """The runner's output lacks the lines its parser needs."""


_BLOCK = r"{label}:\s*\n\s*avg \(us\):\s*([0-9.eE+-]+|nan|inf)\s*\n\s*avg \(tokens/s\):\s*([0-9.eE+-]+|nan|inf)"


def parse_model_benchmark(text: str) -> RuntimeStats:
    """model_benchmark's stdout (one repetition) -> RuntimeStats.

    Prefill is "Prompt processing" (AppendTokenSequences); TTFT adds the first "Token sampling"
    (the first GenerateNextToken); decode is "Token generation" (each later token).
    """
    head = re.search(r"prompt tokens: (\d+), tokens to generate: (\d+)", text)
    blocks = {}
    labels = (
        ("prefill", r"Prompt processing \(time to first token\)"),
        ("decode", "Token generation"),
        ("sample", "Token sampling"),
    )
    for key, label in labels:
        m = re.search(_BLOCK.format(label=label), text)
        if m:
            blocks[key] = (float(m.group(1)), float(m.group(2)))
    if head is None or "prefill" not in blocks or "sample" not in blocks:
        raise RuntimeOutputError(
            "no 'prompt tokens:' line or no 'Prompt processing' / 'Token sampling' block in model_benchmark's output"
        )
    prompt, gen = int(head.group(1)), int(head.group(2))
    prefill_us, prefill_rate = blocks["prefill"]
    decode_rate = blocks["decode"][1] if "decode" in blocks and gen > 1 else None
    raw = {
        "prompt_tokens": prompt,
        "generated_tokens": gen,
        "prefill_us": prefill_us,
        "first_sample_us": blocks["sample"][0],
        "decode_us": blocks["decode"][0] if "decode" in blocks else None,
    }
    peak = re.search(r"Peak working set size \(bytes\): (\d+)", text)
    if peak:
        raw["peak_working_set_bytes"] = int(peak.group(1))
    return RuntimeStats(
        form="model_benchmark",
        prompt_tokens=prompt,
        generated_tokens=gen,
        model_load_s=None,
        ttft_s=(prefill_us + blocks["sample"][0]) / 1e6,
        prefill_tok_s=_finite(prefill_rate),
        decode_tok_s=_finite(decode_rate),
        reported_prefill_tok_s=_finite(prefill_rate),
        reported_decode_tok_s=_finite(decode_rate),
        raw_json=json.dumps(raw),
    )


_PERF = re.compile(r"(load|prompt eval|eval) time\s*=\s*([0-9.]+) ms(?:\s*/\s*(\d+) (?:tokens|runs))?")


def parse_llama_perf(text: str) -> RuntimeStats:
    """llama-completion's stderr -> RuntimeStats (llama_perf_context_print's lines).

    "prompt eval time" is the prompt's forward passes (prefill; TTFT adds nothing llama.cpp
    reports separately), "eval time" the decode steps ("runs" = generated tokens - 1).
    """
    found = {m.group(1): (float(m.group(2)), int(m.group(3)) if m.group(3) else None) for m in _PERF.finditer(text)}
    if "prompt eval" not in found or "eval" not in found:
        raise RuntimeOutputError(
            "no 'prompt eval time' / 'eval time' lines in llama.cpp's output (llama_perf_context_print)"
        )
    (p_ms, p_tok), (e_ms, e_runs) = found["prompt eval"], found["eval"]
    load_ms = found.get("load", (None, None))[0]
    raw = {
        "load_ms": load_ms,
        "prompt_eval_ms": p_ms,
        "prompt_tokens": p_tok,
        "eval_ms": e_ms,
        "eval_runs": e_runs,
        "build": llama_build(text),
    }
    return RuntimeStats(
        form="llama_perf",
        prompt_tokens=p_tok or 0,
        generated_tokens=(e_runs or 0) + 1,
        model_load_s=None if load_ms is None else load_ms / 1e3,
        ttft_s=p_ms / 1e3,
        prefill_tok_s=_rate(p_tok, p_ms),
        decode_tok_s=_rate(e_runs, e_ms),
        reported_prefill_tok_s=_rate(p_tok, p_ms),
        reported_decode_tok_s=_rate(e_runs, e_ms),
        raw_json=json.dumps(raw),
    )


def llama_build(text: str) -> str | None:
    """llama.cpp's `--version` ("version: 0.5.0-dev (build 1, commit 0c1e570)") or older "build: 1234 (abcdef0)"
    line -> "llama.cpp b1234 (abcdef0)"."""
    m = re.search(r"\(build (\d+), commit ([0-9a-f]+)\)", text) or re.search(r"build: (\d+) \(([0-9a-f]+)\)", text)
    return f"llama.cpp b{m.group(1)} ({m.group(2)})" if m else None


def _rate(count: int | None, ms: float) -> float | None:
    return None if not count or ms <= 0 else count / (ms / 1e3)


def _finite(v: float | None) -> float | None:
    return v if v is not None and v == v and v not in (float("inf"), float("-inf")) else None


def command(
    runtime: Runtime, *, runner: str, model: str, prompt_file: str, new_tokens: int, threads: int | None, context: int
) -> str:
    """One run's shell words for the ONNX Runtime or llama.cpp runner (already quoted)."""
    q = shlex.quote
    if runtime is Runtime.ONNXRUNTIME:  # threads: written into the staged genai_config.json
        return f"{runner} --input_folder {q(model)} --prompt_file {q(prompt_file)} -g {new_tokens} -r 1 -w 0"
    if runtime is Runtime.LLAMACPP:
        words = [
            runner,
            "--model",
            q(model),
            "--file",
            q(prompt_file),
            "--n-predict",
            str(new_tokens),
            "--ctx-size",
            str(context),
            "--temp",
            "0",
            "--ignore-eos",
            "--no-warmup",
            "-no-cnv",
        ]
        if threads is not None and threads > 0:
            words += ["--threads", str(threads)]
        return " ".join(words)
    raise ValueError(runtime)


def genai_config_with_threads(text: str, threads: int | None) -> str:
    """genai_config.json text -> the same with the decoder session's intra-op threads set (None: unchanged)."""
    config = json.loads(text)
    if threads is not None and threads > 0:
        config["model"]["decoder"].setdefault("session_options", {})["intra_op_num_threads"] = threads
    return json.dumps(config, indent=2) + "\n"
