"""`python -m edge.export [CONFIG] [--checkpoint DIR] [--output DIR] ...`

In:  a shipped config name (`llama3_2_1b_8da4w`) or a YAML path, and flags that
     override its keys one to one (`--max-context` is `max_context`,
     `--group-size` is `quantization.group_size`, ...). No CONFIG: `fixture_8da4w`,
     which exports the small model the repo ships.
Out: the output folder (see `edge.export.pipeline`), a summary on stdout,
     progress on stderr; exit 0, or exit 2 with one line for bad input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

DEFAULT_CONFIG = "fixture_8da4w"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edge.export",
        description="Export a Llama 3.2 checkpoint to an ExecuTorch .pte for Arm CPUs (XNNPACK).",
    )
    p.add_argument("config", nargs="?", default=None, help=f"shipped config name or YAML path (default {DEFAULT_CONFIG})")
    p.add_argument("--config", dest="config_flag", metavar="FILE", help="the same as the positional CONFIG")
    p.add_argument("--checkpoint", type=Path, help="checkpoint folder: HF (config.json + safetensors) or Meta (params.json + consolidated.00.pth)")
    p.add_argument("--output", type=Path, help="output folder (must not exist unless --force)")
    p.add_argument("--max-context", type=int, help="KV cache length in tokens (default 2048)")
    p.add_argument("--max-prefill", type=int, help="most tokens per forward call; longer prompts are prefilled in chunks "
                   "(default 128, or max context - 1 if less)")
    p.add_argument("--dtype", choices=["fp32", "bf16"], help="activation / unquantized weight dtype")
    p.add_argument("--formats", metavar="pte,onnx,gguf", help="what to write (default pte): the same integers and scales in "
                   "each; onnx/ for onnxruntime-genai, model.gguf for llama.cpp")
    p.add_argument("--full-logits", action="store_true", default=None, help="return logits for every position, not only the last")
    p.add_argument("--force", action="store_true", default=None, help="replace an existing output folder")
    q = p.add_argument_group("quantization")
    q.add_argument("--linear", choices=["none", "int4", "int8"], help="transformer-block linears (8-bit dynamic activations)")
    q.add_argument("--group-size", type=int, help="int4 group size (default 32)")
    q.add_argument("--output-layer", choices=["none", "int4", "int8"], help="output layer weights")
    q.add_argument("--embedding", choices=["none", "int8"], help="embedding weights")
    q.add_argument("--rounding", choices=["rtn", "gptq"], help="weight rounding: round-to-nearest or GPTQ")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where rotation optimization and GPTQ run")
    for section in _GENERATED_SECTIONS:
        _add_section_flags(p, section)
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


# Sections whose flags are generated from their dataclass: `rotation.learning_rate` is
# --rotation-learning-rate, `calibration.text` is --calibration-text, one to one.
_GENERATED_SECTIONS = ("rotation", "gptq", "calibration")


def _flag(section: str, name: str) -> str:
    return f"--{section}-{name}".replace("_", "-")


def _add_section_flags(p: argparse.ArgumentParser, section: str) -> None:
    import dataclasses

    from edge import config as cfg

    cls = cfg._SECTIONS[section]
    group = p.add_argument_group(section)
    for f in dataclasses.fields(cls):
        add_field_flag(group, _flag(section, f.name), dest=f"{section}__{f.name}", default=getattr(cls(), f.name),
                       key=f"{section}.{f.name}")


def add_field_flag(group, flag: str, *, dest: str, default, key: str) -> None:
    """One config field -> one flag whose type follows the field's default (bool, enum, tuple, int, float, path)."""
    import enum

    if isinstance(default, bool):
        group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{key} (default {str(default).lower()})")
    elif isinstance(default, enum.Enum):
        group.add_argument(flag, dest=dest, choices=[m.value for m in type(default)], help=f"{key} (default {default.value})")
    elif isinstance(default, tuple):
        group.add_argument(flag, dest=dest, metavar="A,B", help=f"{key} (default {','.join(default)})")
    else:
        kind = {int: int, float: float}.get(type(default), str)
        group.add_argument(flag, dest=dest, type=kind, metavar={str: "PATH", int: "N", float: "X"}[kind],
                           help=f"{key} (default {default})")


def config_name(parser: argparse.ArgumentParser, ns: argparse.Namespace, default: str) -> str:
    """The positional CONFIG or --config FILE (one of them, or the same twice) -> the config to load."""
    if ns.config and ns.config_flag and ns.config != ns.config_flag:
        parser.error("give the config once: positionally or with --config")
    return ns.config or ns.config_flag or default


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Parsed flags -> the config keys they override (unset flags override nothing)."""
    top = {
        "checkpoint": ns.checkpoint,
        "output": ns.output,
        "max_context": ns.max_context,
        "max_prefill": ns.max_prefill,
        "dtype": ns.dtype,
        "full_logits": ns.full_logits,
        "formats": ns.formats,
        "force": ns.force,
        "device": ns.device,
    }
    quant = {"linear": ns.linear, "group_size": ns.group_size, "output": ns.output_layer, "embedding": ns.embedding,
             "rounding": ns.rounding}
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in top.items() if v is not None}
    quant = {k: v for k, v in quant.items() if v is not None}
    if quant:
        out["quantization"] = quant
    for section in _GENERATED_SECTIONS:
        values = {k.split("__", 1)[1]: v for k, v in vars(ns).items() if k.startswith(f"{section}__") and v is not None}
        if values:
            out[section] = values
    return out


def print_summary(result, *, config, stream=None) -> None:
    stream = stream or sys.stdout  # looked up per call: a default bound at import would outlive a redirected stdout
    mb = lambda b: f"{b / 2**20:9.1f} MiB"  # noqa: E731
    print(f"\nexported {result.pte or result.output_dir}", file=stream)
    if result.pte is not None:
        print(f"  .pte size        {mb(result.pte_bytes)}", file=stream)
        for kind, b in result.size_breakdown.items():
            print(f"    {kind:<38} {mb(b)}", file=stream)
    for fmt, prefix in (("onnx", "onnx/"), ("gguf", "model.gguf")):
        size = sum(b for name, b in result.files.items() if name.startswith(prefix))
        if size:
            print(f"  {fmt} size        {mb(size)}  ({result.output_dir / prefix.rstrip('/')})", file=stream)
    times = "  ".join(f"{k} {v:.1f}s" for k, v in result.stage_seconds.items())
    print(f"  stage times      {times}  (total {sum(result.stage_seconds.values()):.1f}s)", file=stream)
    tops = sorted({name.split("/")[0] + ("/" if "/" in name else "") for name in result.files} | {"manifest.json", "NOTICE", result.tokenizer.name})
    print(f"  files            {result.output_dir}/: {', '.join(tops)}", file=stream)
    if result.pte is not None:
        print(
            "  run it           python -m android_bench --host "
            f"--pte {result.pte} --tokenizer {result.tokenizer}",
            file=stream,
        )


def torch_oom() -> type[BaseException]:
    """torch's CUDA out-of-memory error class (a MemoryError stand-in where torch lacks it)."""
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


def main(argv: list[str] | None = None) -> int:
    from edge.quiet import quiet_libraries

    quiet_libraries()
    from edge.errors import interrupt_on_termination

    interrupt_on_termination()
    parser = build_parser()
    ns = parser.parse_args(argv)
    name = config_name(parser, ns, DEFAULT_CONFIG)
    from edge.config import load_config
    from edge.errors import EdgeError, interrupts_win
    from edge.progress import Progress

    try:
        with interrupts_win():
            config = load_config(config=name, overrides=overrides_from_args(ns))
            from edge.export.pipeline import run_export

            result = run_export(config, progress=Progress(quiet=ns.quiet))
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (MemoryError, torch_oom()) as e:
        where = "on the GPU" if type(e).__name__ == "OutOfMemoryError" else ""
        print(f"error: out of memory during export {where}; nothing was written".replace("  ", " "), file=sys.stderr)
        return 1
    print_summary(result, config=config)
    return 0


if __name__ == "__main__":
    sys.exit(main())
