"""`edge.generate(...)`: the generate command as a function (see edge/api.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edge.core.quiet import quiet_libraries


def generate(model: str | Path, prompt: str, **options: Any):
    """(an exported model, a prompt; chat, max_new_tokens, temperature, on_text) -> `Generation`."""
    quiet_libraries()
    from edge.generate.core import generate as run

    return run(Path(model), prompt, **options)
