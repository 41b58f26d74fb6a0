"""`edge.finetune(...)`: the fine-tune command as a function (see edge/api.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.core.cli import plain_overrides
from edge.core.quiet import quiet_libraries


def finetune(
    config: Any = "fixture_qat_lora",
    /,
    *,
    checkpoint: str | Path | None = None,
    data: str | Path | None = None,
    output: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
    quiet: bool = False,
    **overrides: Any,
) -> Path:
    """(config, checkpoint, data, output, overrides of the config's keys) -> the fine-tuned checkpoint's folder."""
    quiet_libraries()
    from edge.checkpoint.fixture import resolve_checkpoint
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.finetune.run import run_finetune

    ft = {k: str(v) for k, v in (("data", data), ("output", output)) if v is not None}
    overrides = plain_overrides(overrides)
    if ft:
        overrides["finetune"] = overrides.get("finetune", {}) | ft
    cfg = load_config(config=config, overrides=overrides)
    name = config if isinstance(config, str) else "fixture"
    ckpt = resolve_checkpoint(Path(checkpoint) if checkpoint else cfg.checkpoint, config_name=str(name))
    return run_finetune(cfg, checkpoint=ckpt, resume=resume, force=force, progress=Progress(quiet=quiet))
