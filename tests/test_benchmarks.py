"""Every product benchmark parses its flags and imports what it needs (`--help` runs the script's own code up
to argparse); the one with a tiny shape runs at it."""

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


def test_spinquant_gpu_benchmark_runs_at_a_tiny_shape_on_the_cpu(tmp_path):
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "spinquant_gpu_1b.py"),
        "--device",
        "cpu",
        "--size",
        "tiny",
        "--work",
        str(tmp_path / "work"),
        "--results",
        str(tmp_path),
        "--gptq-samples",
        "2",
        "--rotation-steps",
        "2",
        "--rotation-batch",
        "2",
        "--seq-len",
        "64",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "spinquant_gpu_1b.json").read_text())
    assert result
