"""Every product benchmark parses its flags and imports what it needs (`--help` runs the script's own code up
to argparse), and runs end to end at a tiny shape (or, for the fixture's quality tables, on a few windows and
steps) into a temporary folder, leaving benchmarks/results/ alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = sorted(
    p for p in (ROOT / "benchmarks").glob("*.py") if p.name not in ("common.py", "readme_tables.py", "arm_rounding.py")
)


@pytest.mark.parametrize("script", PRODUCT, ids=lambda p: p.name)
def test_product_benchmark_help(script):
    proc = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


def _row(rows: list[dict], label: str, prompt: int) -> dict:
    return next(r for r in rows if r["label"] == label and r["prompt_tokens"] == prompt)


# script -> (its flags for a smoke run, the JSON it writes, the numbers in it that must be > 0)
TINY = {
    "export_benchmark.py": (
        # ExecuTorch's exporter (~40 s at tiny) runs in executorch_comparison.py's case
        ["--size", "tiny", "--random-weights", "--skip-executorch"],
        "export_tiny.json",
        lambda r: (r["runs"][0]["pte_bytes"], r["runs"][0]["wall_s"], r["runs"][0]["stage_seconds"]["lower"]),
    ),
    "executorch_comparison.py": (
        ["--size", "tiny", "--repetitions", "1", "--prompt-tokens", "32", "--max-new-tokens", "8"]
        + ["--ptes", "executorch", "edge"],
        "executorch_comparison_tiny.json",
        lambda r: (
            r["ptes"]["executorch"]["bytes"],
            r["ptes"]["edge"]["bytes"],
            r["exports"]["executorch"]["wall_s"],
            r["runtime"]["edge"]["32"]["peak_rss_mb"],
            r["runtime"]["executorch"]["32"]["runs"],
        ),
    ),
    "runtimes_1b.py": (
        ["--size", "tiny", "--repetitions", "1", "--prompt-tokens", "32", "--max-new-tokens", "8"],
        "runtimes_tiny.json",
        lambda r: (
            _row(r["rows"], "edge .pte (ExecuTorch)", 32)["runs"],
            _row(r["rows"], "edge .pte (ExecuTorch)", 32)["peak_rss_mb"],
            _row(r["rows"], "edge ONNX (ONNX Runtime)", 32)["runs"],
            _row(r["rows"], "edge ONNX (ONNX Runtime)", 32)["size_mib"],
        ),
    ),
    "spinquant_1b.py": (
        # the gptq row passes every flag the other two rows do
        ["--size", "tiny", "--skip", "plain", "hadamard", "--gptq-samples", "2", "--gptq-seq-len", "64"],
        "spinquant_tiny.json",
        lambda r: (r["runs"][0]["pte_bytes"], r["runs"][0]["stage_seconds"]["quantize"]),
    ),
    "spinquant_gpu_1b.py": (
        ["--device", "cpu", "--size", "tiny", "--gptq-samples", "2", "--rotation-steps", "2"]
        + ["--rotation-batch", "2", "--seq-len", "64"],
        "spinquant_gpu_1b.json",
        lambda r: (r["stages"]["gptq"]["blocks_done"], r["stages"]["rotations"]["steps_done"]),
    ),
    "qat_lora_1b.py": (
        ["--size", "tiny", "--seq-len", "32", "--steps", "2"],
        "qat_lora_tiny.json",
        lambda r: (r["stages"]["lora"]["steady_step_s"], r["stages"]["qat"]["tokens_per_s"]),
    ),
    "hadamard_share.py": (
        ["--rows", "tiny", "--prompt", "16", "--decode", "4", "--repetitions", "1"],
        "hadamard_share.json",
        lambda r: (r["rows"]["tiny"]["prefill"]["execute_ms"], r["rows"]["tiny"]["decode"]["hadamard_ms"]),
    ),
    # the fixture's tables, first rows only (each row is an export: the whole tables take minutes)
    "quality_table.py": (
        ["--windows", "1", "--context", "64", "--rotation-steps", "1", "--gptq-samples", "2", "--rows", "3"],
        "quality_fixture.json",
        lambda r: (len(r), r[2]["pte_mib"], r[2]["pte_perplexity"]),
    ),
    "qat_quality_table.py": (
        ["--windows", "1", "--context", "64", "--steps", "1", "--rows", "4"],
        "quality_qat_fixture.json",
        lambda r: (len(r), r[3]["adapter_mib"], r[3]["finetune_s"]),
    ),
}


def _results_stamps() -> dict[str, int]:
    return {str(p): p.stat().st_mtime_ns for p in (ROOT / "benchmarks" / "results").rglob("*") if p.is_file()}


@pytest.mark.parametrize("script", list(TINY), ids=str)
def test_product_benchmark_runs_at_a_tiny_shape(script, tmp_path):
    flags, written, numbers = TINY[script]
    before = _results_stamps()
    cmd = [sys.executable, str(ROOT / "benchmarks" / script), *flags]
    cmd += ["--work", str(tmp_path / "work"), "--results", str(tmp_path / "results")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = numbers(json.loads((tmp_path / "results" / written).read_text()))
    assert all(v > 0 for v in values), values
    assert _results_stamps() == before  # nothing written into benchmarks/results/
