"""edge's Python API: `edge.export(...)`, `edge.finetune(...)`, `edge.evaluate(...)`, `edge.generate(...)`.

Each takes what its command line takes and returns the result object the command prints:

    import edge
    result = edge.export("llama3_2_1b_8da4w", checkpoint="Llama-3.2-1B-Instruct", output="out/1b")
    result.pte, result.pte_bytes, result.stage_seconds             # ExportResult
    edge.evaluate(result.pte, reference="Llama-3.2-1B-Instruct", text="heldout.txt").mean_kl  # EvalResult
    edge.finetune("llama3_2_1b_qat_lora", checkpoint=..., data="chats.jsonl", output="out/ft")  # its folder
    edge.generate(result.output_dir, "Hello!").text                 # Generation

`config` is a shipped config's name, a YAML path or an `ExportConfig`; keyword overrides use the YAML's keys,
sections as dicts (`quantization={"group_size": 64}`). Bad input raises `edge.core.errors.EdgeError`, with the
message the command line prints; progress goes to stderr unless `quiet=True`.

The four names are the packages themselves made callable (`edge/__init__.py`), so `python -m edge.export` and
`edge.export(...)` are the same thing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def export(config: Any = "fixture_8da4w", /, *, quiet: bool = False, **overrides: Any):
    """(config, overrides) -> `ExportResult` (the output folder, .pte, sizes, stage times)."""
    _quiet()
    from edge.checkpoint.fixture import resolve_checkpoint
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    cfg = load_config(config=config, overrides=_plain(overrides))
    name = config if isinstance(config, str) else "fixture" if cfg.checkpoint is None else "config"
    cfg = dataclasses.replace(cfg, checkpoint=resolve_checkpoint(cfg.checkpoint, config_name=str(name)))
    return run_export(cfg, progress=Progress(quiet=quiet))


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
    _quiet()
    from edge.checkpoint.fixture import resolve_checkpoint
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.finetune.run import run_finetune

    ft = {k: str(v) for k, v in (("data", data), ("output", output)) if v is not None}
    overrides = _plain(overrides)
    if ft:
        overrides["finetune"] = overrides.get("finetune", {}) | ft
    cfg = load_config(config=config, overrides=overrides)
    name = config if isinstance(config, str) else "fixture"
    ckpt = resolve_checkpoint(Path(checkpoint) if checkpoint else cfg.checkpoint, config_name=str(name))
    return run_finetune(cfg, checkpoint=ckpt, resume=resume, force=force, progress=Progress(quiet=quiet))


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
    _quiet()
    from edge.evaluate import evaluate as run

    return run(
        pte_path=Path(model),
        reference=Path(reference),
        text_path=Path(text),
        context=context,
        max_windows=max_windows,
        tokenizer_path=Path(tokenizer) if tokenizer else None,
    )


def generate(model: str | Path, prompt: str, **options: Any):
    """(an exported model, a prompt; chat, max_new_tokens, temperature, on_text) -> `Generation`."""
    _quiet()
    from edge.generate import generate as run

    return run(Path(model), prompt, **options)


def _plain(overrides: dict[str, Any]) -> dict[str, Any]:
    """Keyword overrides -> YAML-shaped values (paths as strings)."""
    return {k: _plain(v) if isinstance(v, dict) else str(v) if isinstance(v, Path) else v for k, v in overrides.items()}


def _quiet() -> None:
    """Dependency noise off before torch loads, as the commands do (warnings filters and library log levels)."""
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
