"""The embedded fixture model, and the rule for when a config may fall back to it.

Out: `FIXTURE_CHECKPOINT` (the small Llama-architecture model the package ships) and `resolve_checkpoint`.
"""

from __future__ import annotations

from pathlib import Path

from edge.core.errors import EdgeError

FIXTURE_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "fixture"


def resolve_checkpoint(checkpoint: Path | None, *, config_name: str) -> Path:
    """The checkpoint a run was given, or the fixture for a `fixture_*` config; EdgeError for any other config.

    A Llama config without weights must not export the 2.5M-parameter fixture under a 1B name.
    """
    if checkpoint is not None:
        return Path(checkpoint)
    if Path(config_name).stem.startswith("fixture"):
        return FIXTURE_CHECKPOINT
    raise EdgeError(
        f"{config_name} needs the model's weights: pass --checkpoint PATH/TO/CHECKPOINT "
        "(only fixture_* configs default to the embedded fixture model)"
    )
