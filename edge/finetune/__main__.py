"""`python -m edge.finetune CONFIG --checkpoint DIR --data FILE --output DIR [...]`

In:  a config with a `finetune:` section (`fixture_qat_lora`, `llama3_2_1b_qat_lora` or a YAML
     path; also `--config FILE`), and flags that override its keys one to one: `--data` is
     `finetune.data`, `--qat-steps` is `finetune.qat.steps`, `--lora-rank` is `finetune.lora.rank`.
     Under `torchrun --nproc_per_node N` the batch is split over N processes with FSDP2.
Out: the output folder (see `edge.finetune.output`), progress on stderr (stage, loss, tokens/s,
     ETA), a summary on stdout; exit 2 with one line for bad input. Then:
         python -m edge.export CONFIG --checkpoint OUTPUT
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from edge.core.cli import SEP, add_config_flags, config_dests, config_name, overrides_from_namespace, prologue, run_cli

DEFAULT_CONFIG = "fixture_qat_lora"


def build_parser() -> argparse.ArgumentParser:
    """-> the fine-tune's parser: CONFIG, the run's own flags, then one flag per `finetune:` field
    (`finetune.data` is --data, `finetune.qat.steps` is --qat-steps)."""
    from edge.config.finetune import STAGES, FinetuneConfig

    p = argparse.ArgumentParser(
        prog="python -m edge.finetune",
        description="QAT + LoRA fine-tuning of a Llama 3.2 checkpoint with the export's own scheme.",
    )
    p.add_argument("config", nargs="?", default=None, help=f"config name or YAML path (default {DEFAULT_CONFIG})")
    p.add_argument("--config", dest="config_flag", metavar="FILE", help="the same as the positional CONFIG")
    p.add_argument(
        "--checkpoint",
        type=Path,
        help="the float checkpoint to fine-tune (default: the config's; fixture_* configs: the fixture)",
    )
    p.add_argument("--device", choices=["cpu", "cuda"], help="where training runs (default cpu)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    p.add_argument("--force", action="store_true", help="replace an existing output folder (and any interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_config_flags(p.add_argument_group("finetune"), FinetuneConfig, key="finetune")
    for stage, cls in STAGES.items():
        add_config_flags(
            p.add_argument_group(f"finetune.{stage}"), cls, key=f"finetune{SEP}{stage}", flag_prefix=f"{stage}-"
        )
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Parsed flags -> config overrides (unset flags override nothing)."""
    dests = [d for d in config_dests(build_parser()) if d.startswith(f"finetune{SEP}")] + ["device"]
    return overrides_from_namespace(ns, dests)


def _dist():
    """torchrun's environment -> Dist, with the process group started (gloo on CPU, NCCL on GPUs)."""
    from edge.finetune.train import Dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    import torch
    import torch.distributed as td

    backend = "nccl" if torch.cuda.is_available() and os.environ.get("EDGE_DIST_BACKEND") != "gloo" else "gloo"
    td.init_process_group(backend)
    if backend == "nccl":
        torch.cuda.set_device(td.get_rank() % torch.cuda.device_count())
    return Dist(rank=td.get_rank(), world=td.get_world_size())


def main(argv: list[str] | None = None) -> int:
    prologue()
    parser = build_parser()
    ns = parser.parse_args(argv)
    name = config_name(parser, ns, DEFAULT_CONFIG)
    dist = None

    def work() -> int:
        nonlocal dist
        from edge.checkpoint.fixture import resolve_checkpoint
        from edge.config import load_config
        from edge.core.progress import Progress
        from edge.finetune.run import run_finetune

        config = load_config(config=name, overrides=overrides_from_args(ns))
        checkpoint = resolve_checkpoint(ns.checkpoint or config.checkpoint, config_name=name)
        dist = _dist()
        out = run_finetune(
            config,
            checkpoint=checkpoint,
            resume=ns.resume,
            force=ns.force,
            progress=Progress(quiet=ns.quiet or not dist.main),
            dist=dist,
        )
        if dist.main:
            print(f"\nfine-tuned model in {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
            print(f"  export it: python -m edge.export {name} --checkpoint {out}")
        return 0

    try:
        return run_cli(
            work,
            interrupted="interrupted; the last checkpoint (if any) is kept for --resume, no output was written",
            out_of_memory="out of memory while fine-tuning{where}; no output was written",
        )
    finally:
        if dist is not None and dist.world > 1:
            import torch.distributed as td

            td.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
