"""Every product benchmark parses its flags and imports what it needs (`--help` runs the script's own code up
to argparse), and runs end to end at a tiny shape (or, for the fixture's quality tables, on a few windows and
steps) into a temporary folder, leaving benchmarks/results/ alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import load_benchmark

ROOT = Path(__file__).resolve().parent.parent
PRODUCT = sorted(
    p for p in (ROOT / "benchmarks").glob("*.py") if p.name not in ("common.py", "readme_tables.py", "arm_rounding.py")
)


# Runs every script's `--help` in one fresh interpreter (torch and friends imported once, not once per script):
# {script name: [exit status, its stdout, the traceback or ""]}.
HELP_DRIVER = """
import contextlib, io, json, runpy, sys, traceback
out = {}
sys.path.insert(0, sys.argv[1].rsplit("/", 1)[0])  # as `python benchmarks/x.py` puts the script's folder first
for path in sys.argv[1:]:
    sys.argv, buf, err = [path, "--help"], io.StringIO(), ""
    try:
        with contextlib.redirect_stdout(buf):
            runpy.run_path(path, run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code or 0
    except BaseException:
        code, err = 1, traceback.format_exc()
    out[path.rsplit("/", 1)[-1]] = [code, buf.getvalue(), err]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def helps() -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", HELP_DRIVER, *map(str, PRODUCT)], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


@pytest.mark.parametrize("script", PRODUCT, ids=lambda p: p.name)
def test_product_benchmark_help(script, helps):
    code, stdout, err = helps[script.name]
    assert code == 0, err[-2000:]
    assert "usage:" in stdout


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


def test_r4_mix_is_timed_alone_from_a_program_that_computes_it(tmp_path):
    """hadamard_share's chain of R4s at a width with a 12 x 12 mix (96 = 12 x 8): the delegated program computes the
    same rotation as edge's eager R4, and ETDump times both the mixes (delegate calls) and the op."""
    import torch
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (llama:: ops)
    from executorch.runtime import Runtime

    from edge.model import hadamard_transform
    from edge.spinquant.hadamard import online_mix

    mod = load_benchmark(ROOT / "benchmarks" / "hadamard_share.py")
    pte = tmp_path / "chain.pte"
    pte.write_bytes(mod.mix_chain_program(96, 2, 3).buffer)
    x = torch.randn(1, 3, 96, generator=torch.Generator().manual_seed(0))
    got = Runtime.get().load_program(str(pte)).load_method("forward").execute([x])[0]
    mix = online_mix(96).float()
    torch.testing.assert_close(got, hadamard_transform(hadamard_transform(x, mix), mix), rtol=0, atol=1e-5)
    cost = mod.mix_cost(96, 2, prompt=4, calls=3, work=tmp_path)
    assert (cost["m"], cost["layers"]) == (12, 2)
    for kind in ("decode", "prefill"):
        assert cost[kind]["mix_ms"] > 0 and cost[kind]["op_ms"] > 0, cost


def test_real_model_decode_times_each_program_and_its_share(q_export, tmp_path):
    """real_model_decode.py on three copies of one tiny 8da4w program: each gets a speed in every round, its share is
    1 - speed / PTQ's speed of the same round, and the page renders from the JSON; a missing program is one error."""
    import shutil

    script = ROOT / "benchmarks" / "real_model_decode.py"
    mod = load_benchmark(script)
    before = _results_stamps()
    cmd = [sys.executable, str(script), "--work", str(tmp_path / "work"), "--results", str(tmp_path / "out" / "rmd")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 2 and proc.stderr.startswith("error: missing "), proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()

    for key in ("ptq", "had_gptq", "qat_lora"):
        shutil.copytree(q_export, tmp_path / "work" / "grid" / key)
    cmd += ["--rounds", "2", "--repetitions", "1", "--warmup", "0", "--threads", "1"]
    cmd += ["--prompt-tokens", "80", "--max-new-tokens", "40"]  # each phase over the runner's 1 ms clock (context 128)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "out" / "rmd.json").read_text())
    assert (tmp_path / "out" / "rmd.md").read_text() == mod.render(results)
    programs = results["programs"]
    assert len({p["pte_mib"] for p in programs.values()}) == 1 and programs["ptq"]["pte_mib"] > 0
    for key in ("had_gptq", "qat_lora"):
        for phase in ("decode", "prefill"):
            speeds = [(r[phase], base[phase]) for r, base in zip(programs[key]["rounds"], programs["ptq"]["rounds"])]
            assert len(speeds) == 2 and all(s > 0 and b > 0 for s, b in speeds)
            assert results["shares"][key][phase] == pytest.approx([1 - s / b for s, b in speeds])
    assert _results_stamps() == before
