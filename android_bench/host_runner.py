"""`python -m android_bench.host_runner`: llama_main's command line on the host.

In:  llama_main's flags (`--model_path`, `--tokenizer_path`, `--prompt`, `--prompt_file`,
     `--temperature`, `--max_new_tokens`, `--seq_len`, `--cpu_threads`, `--warmup`, `--num_bos`,
     `--num_eos`, `--data_path(s)`, `--ignore_eos`), in gflags' forms `--flag value` and
     `--flag=value`; `--helpshort` / `--help` list them as gflags does.
Out: what llama_main prints, because it is the same C++ runner: ExecuTorch's `TextLLMRunner`
     (through the pip wheel's binding) prints the generated text and one `PyTorchObserver {json}`
     line on stdout, and its log lines (stats, RSS) on stderr. Exit 1 when the model or the
     tokenizer cannot be loaded or generation fails, as llama_main does.

`--host` benchmarks run this as their runner, so the host and the phone are measured and parsed
the same way. Its RSS includes the Python interpreter (about 300 MiB with torch's libraries).
"""

from __future__ import annotations

import functools
import sys
import warnings
from types import ModuleType

FLAGS = {
    "model_path": str,
    "tokenizer_path": str,
    "prompt": str,
    "prompt_file": str,
    "temperature": float,
    "max_new_tokens": int,
    "seq_len": int,
    "cpu_threads": int,
    "warmup": bool,
    "num_bos": int,
    "num_eos": int,
    "data_path": str,
    "data_paths": str,
    "ignore_eos": bool,
}


def parse_flags(argv: list[str]) -> dict[str, object]:
    """gflags-style argv -> values (ValueError naming an unknown or malformed flag)."""
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if not arg.startswith("-"):
            raise ValueError(f"unexpected argument '{arg}'")
        name, eq, value = arg.lstrip("-").partition("=")
        if name.startswith("no") and FLAGS.get(name[2:]) is bool and not eq:
            values[name[2:]] = False
            i += 1
            continue
        kind = FLAGS.get(name)
        if kind is None:
            raise ValueError(f"unknown command line flag '{name}'")
        if kind is bool:
            values[name] = value.lower() not in ("false", "0", "no") if eq else True
        else:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise ValueError(f"flag '{name}' is missing its argument")
                value = argv[i]
            try:
                values[name] = kind(value)
            except ValueError:
                raise ValueError(f"illegal value '{value}' specified for {kind.__name__} flag '{name}'") from None
        i += 1
    return values


def load_llm_kernels() -> None:
    """Register the quantized and LLM custom ops with ExecuTorch's runtime (their shared
    libraries only: skips the Python-side op definitions, which would import torchao)."""
    import importlib.util
    from pathlib import Path

    import torch
    from executorch.extension.pybindings import _C  # noqa: F401  (the runtime the libraries link against)

    root = Path(importlib.util.find_spec("executorch").submodule_search_locations[0])  # type: ignore[union-attr]
    for pattern in ("extension/llm/custom_ops/*custom_ops_aot_lib.*", "kernels/quantized/*quantized_ops_aot_lib.*"):
        for lib in root.glob(pattern):
            torch.ops.load_library(str(lib))


@functools.cache
def warn_no_threadpool_reset() -> None:
    """Warn, once per process, that --cpu_threads is ignored: this ExecuTorch has no `_unsafe_reset_threadpool`."""
    from importlib import metadata

    try:
        version = metadata.version("executorch")
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    warnings.warn(
        f"executorch {version} has no _C._unsafe_reset_threadpool: --cpu_threads is ignored, the runtime "
        "keeps its default thread pool",
        RuntimeWarning,
        stacklevel=3,
    )


def set_threads(threads: int, runtime: ModuleType | None = None) -> bool:
    """threads > 0 -> ExecuTorch's thread pool resized to that many threads (`runtime`: the pybindings `_C`
    module, imported when None) -> whether it was. The resize is a private binding (`_C._unsafe_reset_threadpool`):
    where this ExecuTorch lacks it, one warning and the default pool."""
    if threads <= 0:
        return False
    if runtime is None:
        from executorch.extension.pybindings import _C as runtime
    reset = getattr(runtime, "_unsafe_reset_threadpool", None)
    if reset is None:
        warn_no_threadpool_reset()
        return False
    reset(threads)
    return True


def print_help() -> int:
    """gflags' help layout (`    -name (...) type: T default: D`) on stdout, exit 1, as llama_main."""
    print("host_runner: llama_main's command line on the host.\n\n  Flags from android_bench/host_runner.py:")
    for name, kind in FLAGS.items():
        print(f"    -{name} (see llama_main) type: {'int32' if kind is int else kind.__name__}")
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("--help", "--helpshort", "-help", "-helpshort") for a in args):
        return print_help()
    try:
        flags = parse_flags(args)
    except ValueError as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    prompt = flags.get("prompt", "The answer to the ultimate question is")
    if "prompt_file" in flags:
        try:
            with open(str(flags["prompt_file"]), encoding="utf-8") as f:
                prompt = f.read()
        except OSError as e:
            print(f"E host_runner: cannot read prompt file: {e.strerror}", file=sys.stderr)
            return 1
    load_llm_kernels()
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    set_threads(int(flags.get("cpu_threads", -1)))  # type: ignore[arg-type]
    data = flags.get("data_path") or flags.get("data_paths") or None
    try:
        runner = TextLLMRunner(
            str(flags.get("model_path", "llama2.pte")), str(flags.get("tokenizer_path", "tokenizer.bin")), data
        )
    except Exception as e:  # the binding raises RuntimeError with the runtime's message
        print(f"E host_runner: Failed to create llama runner: {e}", file=sys.stderr)
        return 1
    config = GenerationConfig(
        temperature=float(flags.get("temperature", 0.8)),  # type: ignore[arg-type]
        echo=True,
        num_bos=int(flags.get("num_bos", 0)),  # type: ignore[arg-type]
        num_eos=int(flags.get("num_eos", 0)),  # type: ignore[arg-type]
    )
    if "max_new_tokens" in flags:
        config.max_new_tokens = int(flags["max_new_tokens"])  # type: ignore[arg-type]
    if "seq_len" in flags:
        config.seq_len = int(flags["seq_len"])  # type: ignore[arg-type]
    try:
        if flags.get("warmup"):
            warm = GenerationConfig(max_new_tokens=config.max_new_tokens, temperature=0.0, echo=False, warming=True)
            runner.generate(str(prompt), warm)
            runner.reset()
        # No token callback: the runner prints each piece itself (a Python callback can fail on
        # a piece that is not whole UTF-8). The runner also prints the PyTorchObserver line.
        runner.generate(str(prompt), config)
    except Exception as e:
        sys.stdout.flush()
        print(f"E host_runner: Failed to generate: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
