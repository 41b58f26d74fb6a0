"""`edge.export(...)`: the export command as a function (see edge/api.py)."""

from __future__ import annotations

import dataclasses
from typing import Any

from edge.core.cli import plain_overrides
from edge.core.quiet import quiet_libraries


def export(config: Any = "fixture_8da4w", /, *, quiet: bool = False, **overrides: Any):
    """(config, overrides) -> `ExportResult` (the output folder, .pte, sizes, stage times)."""
    quiet_libraries()
    from edge.checkpoint.fixture import resolve_checkpoint
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    cfg = load_config(config=config, overrides=plain_overrides(overrides))
    name = config if isinstance(config, str) else "fixture" if cfg.checkpoint is None else "config"
    cfg = dataclasses.replace(cfg, checkpoint=resolve_checkpoint(cfg.checkpoint, config_name=str(name)))
    return run_export(cfg, progress=Progress(quiet=quiet))
