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

from edge.core.cli import add_config_flags, config_dests, config_name, overrides_from_namespace, prologue, run_cli

DEFAULT_CONFIG = "fixture_8da4w"


def build_parser() -> argparse.ArgumentParser:
    """-> the export's parser: CONFIG, then one flag per ExportConfig field (sections' fields prefixed by the section,
    except quantization's, whose `output` is --output-layer)."""
    from edge.config import ExportConfig
    from edge.config.export import SECTIONS

    p = argparse.ArgumentParser(
        prog="python -m edge.export",
        description="Export a Llama 3.2 checkpoint to an ExecuTorch .pte for Arm CPUs (XNNPACK).",
    )
    p.add_argument(
        "config", nargs="?", default=None, help=f"shipped config name or YAML path (default {DEFAULT_CONFIG})"
    )
    p.add_argument("--config", dest="config_flag", metavar="FILE", help="the same as the positional CONFIG")
    add_config_flags(p, ExportConfig, skip=("finetune",))
    for section, cls in SECTIONS.items():
        group = p.add_argument_group(section)
        if section == "quantization":
            add_config_flags(group, cls, key=section, rename={"output": "--output-layer"})
        else:
            add_config_flags(group, cls, key=section, flag_prefix=f"{section}-")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Parsed flags -> the config keys they override (unset flags override nothing)."""
    return overrides_from_namespace(ns, config_dests(build_parser()))


def print_summary(result, *, stream=None) -> None:
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
    tops = sorted(
        {name.split("/")[0] + ("/" if "/" in name else "") for name in result.files}
        | {"manifest.json", "NOTICE", result.tokenizer.name}
    )
    print(f"  files            {result.output_dir}/: {', '.join(tops)}", file=stream)
    if result.pte is not None:
        print(
            f"  run it           python -m android_bench --host --pte {result.pte} --tokenizer {result.tokenizer}",
            file=stream,
        )


def torch_oom() -> type[BaseException]:
    """torch's CUDA out-of-memory error class (a MemoryError stand-in where torch lacks it)."""
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


def main(argv: list[str] | None = None) -> int:
    prologue()
    parser = build_parser()
    ns = parser.parse_args(argv)
    name = config_name(parser, ns, DEFAULT_CONFIG)

    def work() -> int:
        from edge.export.api import export  # the same function as edge.export(...)

        print_summary(export(name, quiet=ns.quiet, **overrides_from_args(ns)))
        return 0

    return run_cli(work, out_of_memory="out of memory during export{where}; nothing was written")


if __name__ == "__main__":
    sys.exit(main())
