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
import dataclasses
import os
import sys
from pathlib import Path

DEFAULT_CONFIG = "fixture_qat_lora"
_TOP = ("data", "data_format", "output", "max_length", "packing", "bad_samples", "loss", "fake_quant", "seed", "checkpoint_every", "adapters")


def build_parser() -> argparse.ArgumentParser:
    from edge.export.__main__ import add_field_flag
    from edge.finetune.config import STAGES, FinetuneConfig

    p = argparse.ArgumentParser(prog="python -m edge.finetune",
                                description="QAT + LoRA fine-tuning of a Llama 3.2 checkpoint with the export's own scheme.")
    p.add_argument("config", nargs="?", default=None, help=f"config name or YAML path (default {DEFAULT_CONFIG})")
    p.add_argument("--config", dest="config_flag", metavar="FILE", help="the same as the positional CONFIG")
    p.add_argument("--checkpoint", type=Path, help="the float checkpoint to fine-tune (default: the config's, or the fixture)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where training runs (default cpu)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run into the same --output")
    p.add_argument("--force", action="store_true", help="replace an existing output folder (and any interrupted run)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    d = FinetuneConfig()
    g = p.add_argument_group("finetune")
    for name in _TOP:
        add_field_flag(g, f"--{name}".replace("_", "-"), dest=f"ft__{name}", default=getattr(d, name), key=f"finetune.{name}")
    for stage, cls in STAGES.items():
        g = p.add_argument_group(f"finetune.{stage}")
        for f in dataclasses.fields(cls):
            add_field_flag(g, f"--{stage}-{f.name}".replace("_", "-"), dest=f"{stage}__{f.name}", default=getattr(cls(), f.name),
                           key=f"finetune.{stage}.{f.name}")
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict:
    """Parsed flags -> config overrides (unset flags override nothing)."""
    from edge.finetune.config import STAGES

    ft = {k[4:]: (str(v) if isinstance(v, Path) else v) for k, v in vars(ns).items() if k.startswith("ft__") and v is not None}
    for stage in STAGES:
        vals = {k.split("__", 1)[1]: v for k, v in vars(ns).items() if k.startswith(f"{stage}__") and v is not None}
        if vals:
            ft[stage] = vals
    out: dict = {"finetune": ft} if ft else {}
    if ns.device:
        out["device"] = ns.device
    return out


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
    from edge.quiet import quiet_libraries

    quiet_libraries()
    from edge.errors import interrupt_on_termination

    interrupt_on_termination()
    from edge.export.__main__ import config_name, torch_oom

    parser = build_parser()
    ns = parser.parse_args(argv)
    name = config_name(parser, ns, DEFAULT_CONFIG)
    from edge.config import load_config
    from edge.errors import EdgeError, interrupts_win
    from edge.progress import Progress

    dist = None
    try:
        with interrupts_win():
            config = load_config(config=name, overrides=overrides_from_args(ns))
            dist = _dist()
            from edge.finetune.run import run_finetune

            out = run_finetune(config, checkpoint=ns.checkpoint or config.checkpoint, resume=ns.resume,
                               force=ns.force, progress=Progress(quiet=ns.quiet or not dist.main), dist=dist)
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted; the last checkpoint (if any) is kept for --resume, no output was written", file=sys.stderr)
        return 130
    except (MemoryError, torch_oom()):
        print("error: out of memory while fine-tuning; no output was written", file=sys.stderr)
        return 1
    finally:
        if dist is not None and dist.world > 1:
            import torch.distributed as td

            td.destroy_process_group()
    if dist.main:
        print(f"\nfine-tuned model in {out}/ ({', '.join(sorted(p.name for p in out.iterdir()))})")
        print(f"  export it: python -m edge.export {name} --checkpoint {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
