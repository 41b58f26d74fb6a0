"""`edge.evaluate(...)`: the evaluate command as a function (see edge/api.py)."""

from __future__ import annotations

from pathlib import Path

from edge.core.quiet import quiet_libraries


def evaluate(
    model: str | Path,
    *,
    reference: str | Path,
    text: str | Path,
    context: int = 256,
    max_windows: int | None = None,
    tokenizer: str | Path | None = None,
):
    """(a .pte or ONNX model, its reference checkpoint, held-out text) -> `EvalResult` (ppl, top-1, KL)."""
    quiet_libraries()
    from edge.evaluate.core import evaluate as run

    return run(
        pte_path=Path(model),
        reference=Path(reference),
        text_path=Path(text),
        context=context,
        max_windows=max_windows,
        tokenizer_path=Path(tokenizer) if tokenizer else None,
    )
