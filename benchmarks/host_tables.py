"""Host benchmark tables for the embedded default model, as CI keeps them.

In:  nothing but the repo: the fixture model in edge/assets/fixture and the shipped configs
     fixture_bf16, fixture_8da4w and fixture_spinquant, plus fixture_spinquant without its
     online Hadamard (R4; its rotations file reused, rounded to nearest), beside it in the same
     table (R4's cost is too small to resolve that way at this size; the profile below measures it), and
     fixture_qat_lora (fine-tuned here first with `edge.finetune`; float LoRA adapters in the program).
     Options: --work DIR (exports, default out/host_tables), --artifacts DIR (default
     artifacts), --repetitions N (default 5).
Out: artifacts/host_table.md, .csv, .jsonl, .json: `python -m android_bench --host` on every
     export in one run (prompt 64 tokens, 128 new tokens, one warm-up and N measured runs),
     the bf16 export as the baseline row. The 8da4w export's ONNX model runs beside its .pte in ONNX
     Runtime (and its GGUF in llama.cpp when llama-completion is on PATH), from the same integers.
     The markdown table is also printed on stdout. artifacts/host_hadamard_share.md: the online
     Hadamard's share of fixture_spinquant's prefill and decode time, from ExecuTorch's per-operator
     profile (benchmarks/hadamard_share.py).
     Exit status: android_bench's (0, or 2 with one line per fault; the tables are written
     either way).

    python benchmarks/host_tables.py
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# (folder name, shipped config, overrides); the baseline first.
EXPORTS = (
    ("fixture_bf16", "fixture_bf16", {}),
    # The same integers and scales also as an ONNX model (ONNX Runtime) and a GGUF (llama.cpp, when built here).
    ("fixture_8da4w", "fixture_8da4w", {"formats": ["pte", "onnx", "gguf"]}),
    ("fixture_spinquant", "fixture_spinquant", {}),
    # The same rotations without R4: what the online Hadamard costs at decode. The SpinQuant row's rotations
    # are reused and the weights rounded to nearest: size and speed do not depend on which integers GPTQ picks.
    (
        "fixture_spinquant_no_r4",
        "fixture_spinquant",
        {"rotation": {"online_hadamard": False, "file": "SPINQUANT_ROTATIONS"}, "quantization": {"rounding": "rtn"}},
    ),
    # QAT + LoRA: fine-tuned first with edge.finetune (10 + 10 steps: size and speed do not depend on how long it
    # trained; the quality table trains the full recipe), float adapters kept in the program.
    ("fixture_qat_lora", "fixture_qat_lora", {"checkpoint": "FINETUNED"}),
)


def export(folder: str, config: str, overrides: dict, work: Path) -> Path:
    """Shipped config name (+ overrides) -> its export folder (re-exported every time: the table must match the
    code)."""
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    out = work / folder
    if overrides.get("rotation", {}).get("file") == "SPINQUANT_ROTATIONS":
        overrides = overrides | {
            "rotation": overrides["rotation"] | {"file": str(work / "fixture_spinquant" / "rotations.safetensors")}
        }
    if overrides.get("checkpoint") == "FINETUNED":
        from edge.finetune.run import run_finetune

        tuned = work / f"{folder}_finetuned"
        print(f"fine-tuning {config} -> {tuned}", file=sys.stderr, flush=True)
        short = {"output": str(tuned), "qat": {"steps": 10}, "lora": {"steps": 10}}
        run_finetune(
            load_config(config=config, overrides={"finetune": short}),
            checkpoint=None,
            resume=False,
            force=True,
            progress=Progress(quiet=True),
        )
        overrides = overrides | {"checkpoint": str(tuned)}
    print(f"exporting {folder} -> {out}", file=sys.stderr, flush=True)
    run_export(
        load_config(config=config, overrides={"output": str(out), "force": True} | overrides),
        progress=Progress(quiet=True),
    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Export the fixture model (bf16, 8da4w, SpinQuant) and write its host benchmark tables."
    )
    p.add_argument(
        "--work", type=Path, default=ROOT / "out" / "host_tables", help="export folder (default out/host_tables)"
    )
    p.add_argument("--artifacts", type=Path, default=ROOT / "artifacts", help="where the tables go (default artifacts)")
    p.add_argument("--repetitions", type=int, default=5, help="measured runs per export (default 5)")
    ns = p.parse_args(argv)
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    from edge.core.errors import EdgeError

    try:
        folders = [export(folder, config, overrides, ns.work) for folder, config, overrides in EXPORTS]
    except EdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    command = [
        sys.executable,
        "-m",
        "android_bench",
        "--host",
        "--repetitions",
        str(ns.repetitions),
        "--output",
        str(ns.artifacts / "host_table"),
    ]
    import shutil

    for folder in folders:
        command += ["--pte", str(folder / "model.pte")]
        if (folder / "onnx").is_dir():
            command += ["--pte", str(folder / "onnx")]
        if (folder / "model.gguf").is_file() and shutil.which(
            "llama-completion"
        ):  # not in CI: llama.cpp is built by hand
            command += ["--pte", str(folder / "model.gguf")]
    print("$ python -m android_bench " + " ".join(command[3:]), file=sys.stderr, flush=True)
    code = subprocess.run(command, cwd=ROOT).returncode
    # The online Hadamard's share of SpinQuant's prefill and decode, from ExecuTorch's per-operator profile of
    # the same export (timing it against fixture_spinquant_no_r4 cannot resolve a cost this small).
    from hadamard_share import measure, render

    meta, rows = measure({"fixture": ns.work / "fixture_spinquant" / "model.pte"}, prompt=64, decode=32, repetitions=3)
    note = "The row is the `fixture_spinquant` export of this run (optimized R1/R2, online R4, GPTQ)."
    (ns.artifacts / "host_hadamard_share.md").write_text(
        render(meta, rows, rows_note=note, command="python benchmarks/host_tables.py")
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
