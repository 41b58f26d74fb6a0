"""SpinQuant through `edge.export` on tiny checkpoints: the .pte keeps the function, holds the online
Hadamard, runs in ExecuTorch's runner, records what it did, and bad input is refused up front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge.checkpoint import open_checkpoint
from edge.evaluate.pte_model import load_pte
from edge.spinquant.rotations import load_rotations
from tests.conftest import TEXT, assert_pte_matches_transformers, export_tiny, make_hf_checkpoint, read_json
from tests.export.test_export import _assert_refused, _cli


def program_ops(pte: Path) -> list[str]:
    """Every kernel call in the .pte's forward plan, by operator name (delegate calls not included)."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    program = deserialize_pte_binary(pte.read_bytes()).program
    plan = next(p for p in program.execution_plan if p.name == "forward")
    names = [op.name for op in plan.operators]
    calls = []
    for chain in plan.chains:
        for ins in chain.instructions:
            op_index = getattr(ins.instr_args, "op_index", None)
            if op_index is not None:
                calls.append(names[op_index])
    return calls


@pytest.fixture(scope="module")
def calib_text(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("calib") / "calib.txt"
    p.write_text(TEXT)
    return p


@pytest.fixture(scope="module")
def rotated_fp32(tiny_hf, tmp_path_factory) -> Path:
    """tiny_hf with random Hadamard R1/R2 and the online R4, unquantized fp32, every position's logits."""
    return export_tiny(
        tiny_hf,
        tmp_path_factory.mktemp("rot") / "out",
        "llama3_2_1b_bf16",
        dtype="fp32",
        full_logits=True,
        rotation={"kind": "hadamard", "seed": 7},
    )


def test_rotated_pte_matches_transformers_on_the_unrotated_weights(tiny_hf, rotated_fp32):
    assert_pte_matches_transformers(tiny_hf, rotated_fp32 / "model.pte")


def test_rotated_pte_runs_the_online_hadamard_once_per_layer(rotated_fp32):
    calls = program_ops(rotated_fp32 / "model.pte")
    assert calls.count("llama::fast_hadamard_transform") == 2  # two layers


def test_rotations_saved_recorded_and_reusable(tiny_hf, rotated_fp32, tmp_path):
    m = read_json(rotated_fp32 / "manifest.json")
    rec = m["quantization"]["spinquant"]
    rot = load_rotations(rotated_fp32 / "rotations.safetensors", open_checkpoint(tiny_hf).args)
    assert rec["rotation"]["kind"] == "hadamard" and rec["rotation"]["seed"] == 7 and rec["rotation"]["online_hadamard"]
    assert rec["rotation"]["sha256"] == rot.sha256() and rec["weight_rounding"] == "rtn"
    again = export_tiny(
        tiny_hf,
        tmp_path / "again",
        "llama3_2_1b_bf16",
        dtype="fp32",
        full_logits=True,
        rotation={"kind": "hadamard", "file": str(rotated_fp32 / "rotations.safetensors")},
    )
    tokens = torch.arange(5, 25)[None]
    assert torch.equal(
        load_pte(again / "model.pte").forward(tokens, 0), load_pte(rotated_fp32 / "model.pte").forward(tokens, 0)
    )
    import hashlib

    reused = read_json(again / "manifest.json")["quantization"]["spinquant"]["rotation"]
    assert reused["file_sha256"] == hashlib.sha256((rotated_fp32 / "rotations.safetensors").read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def optimized_fp32(tiny_hf, calib_text, tmp_path_factory) -> Path:
    """tiny_hf with Cayley-optimized R1/R2 (not Hadamard matrices any more) and R4, unquantized fp32."""
    return export_tiny(
        tiny_hf,
        tmp_path_factory.mktemp("opt") / "out",
        "llama3_2_1b_bf16",
        dtype="fp32",
        full_logits=True,
        rotation={
            "kind": "optimized",
            "seed": 7,
            "steps": 6,
            "samples": 8,
            "learning_rate": 100.0,
        },  # a long way from the start
        calibration={"text": str(calib_text), "seq_len": 32},
    )


def test_optimized_rotations_keep_the_function_eagerly_and_in_the_pte(tiny_hf, optimized_fp32):
    from edge.checkpoint import load_model
    from edge.config import QuantizationConfig
    from edge.quant.ptq import quantize_model
    from edge.spinquant.rotations import hadamard_rotations

    ckpt = open_checkpoint(tiny_hf)
    rot = load_rotations(optimized_fp32 / "rotations.safetensors", ckpt.args)
    start = hadamard_rotations(ckpt.args, seed=7)  # where Cayley SGD started from
    # entries of 1/8 (R1) and 1/4 (R2) moved by about 0.03: no longer Hadamard matrices (measured 0.038 / 0.032)
    assert float((rot.r1 - start.r1).abs().max()) > 0.01 and float((rot.r2[0] - start.r2[0]).abs().max()) > 0.01
    eye = torch.eye(ckpt.args.dim, dtype=torch.float64)
    assert float((rot.r1 @ rot.r1.T - eye).abs().max()) < 1e-9  # Cayley steps stay on the manifold (measured 8e-13)
    tokens = torch.randint(0, ckpt.args.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    models = [load_model(ckpt, max_context=64, dtype=torch.float32, full_logits=True) for _ in range(2)]
    quantize_model(models[1], QuantizationConfig(), dtype=torch.float32, rotations=rot, online_hadamard=True)
    with torch.no_grad():
        ref, got = (m(tokens, torch.tensor([0])) for m in models)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)
    assert_pte_matches_transformers(tiny_hf, optimized_fp32 / "model.pte")
    assert program_ops(optimized_fp32 / "model.pte").count("llama::fast_hadamard_transform") == 2
    rec = read_json(optimized_fp32 / "manifest.json")["quantization"]["spinquant"]["rotation"]
    assert rec["kind"] == "optimized" and rec["seed"] == 7 and rec["steps"] == 6 and rec["sha256"] == rot.sha256()


@pytest.fixture(scope="module")
def spinquant_export(tiny_hf, calib_text, tmp_path_factory) -> Path:
    """The full recipe on tiny_hf: optimized rotations, R4, GPTQ fitted to float targets, 8da4w."""
    return export_tiny(
        tiny_hf,
        tmp_path_factory.mktemp("sq") / "out",
        "llama3_2_1b_spinquant",
        rotation={"steps": 12, "samples": 8},
        gptq={"samples": 8, "float_targets": True},
        calibration={"text": str(calib_text), "seq_len": 32},
    )


def test_spinquant_manifest_records_rotation_and_gptq(spinquant_export, calib_text):
    import hashlib

    rec = read_json(spinquant_export / "manifest.json")["quantization"]["spinquant"]
    digest = hashlib.sha256(calib_text.read_bytes()).hexdigest()
    assert (
        rec["rotation"]["kind"] == "optimized"
        and rec["rotation"]["steps"] == 12
        and rec["rotation"]["calibration_sha256"] == digest
    )
    # Cayley SGD lowered the loss with 8-bit activations, measured on the same windows before and after
    assert rec["rotation"]["loss_after"] < rec["rotation"]["loss_before"]
    assert (
        rec["weight_rounding"] == "gptq" and rec["gptq"]["samples"] == 8 and rec["gptq"]["calibration_sha256"] == digest
    )
    assert rec["gptq"]["float_targets"] is True


def test_spinquant_pte_generates_in_the_stock_runner(spinquant_export):
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    assert program_ops(spinquant_export / "model.pte").count("llama::fast_hadamard_transform") == 2
    runner = TextLLMRunner(str(spinquant_export / "model.pte"), str(spinquant_export / "tokenizer.json"))
    stats = []
    runner.generate(
        "The quick brown fox",
        GenerationConfig(max_new_tokens=10, temperature=0.0, echo=False),
        stats_callback=stats.append,
    )
    s = json.loads(stats[0].to_json_string())
    assert s["prompt_tokens"] >= 4 and 1 <= s["generated_tokens"] <= 10


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def test_bad_input_rotation_file_for_another_shape(rotated_fp32, tmp_path, capsys):
    other = make_hf_checkpoint(tmp_path / "wide", hidden=128, heads=4, kv_heads=2, ffn=256)
    out = tmp_path / "o"
    code, err = _cli(
        [
            "--checkpoint",
            str(other),
            "--output",
            str(out),
            "--rotation-kind",
            "hadamard",
            "--rotation-file",
            str(rotated_fp32 / "rotations.safetensors"),
        ],
        capsys,
    )
    _assert_refused(
        code,
        err,
        r"was made for a model with dim 64, head_dim 16, n_layers 2; this model has dim 128, head_dim 32",
        out,
    )


def test_bad_input_rotation_file_of_another_kind(rotated_fp32, tiny_hf, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _cli(
        [
            "--checkpoint",
            str(tiny_hf),
            "--output",
            str(out),
            "--rotation-kind",
            "optimized",
            "--rotation-file",
            str(rotated_fp32 / "rotations.safetensors"),
        ],
        capsys,
    )
    _assert_refused(code, err, r"holds hadamard rotations but rotation.kind is optimized", out)


def test_bad_input_ffn_width_the_online_hadamard_cannot_take(tmp_path, capsys):
    ckpt = make_hf_checkpoint(tmp_path / "ffn1000", ffn=1000)  # 8 * 125: no m * 2^k with a Hadamard m
    out = tmp_path / "o"
    args = ["--checkpoint", str(ckpt), "--output", str(out), "--rotation-kind", "hadamard", "--group-size", "8"]
    code, err = _cli(args, capsys)  # group size 8 divides 1000: the width is refused for R4 alone
    _assert_refused(
        code, err, r"FFN width 1000 cannot take the online Hadamard \(R4\): it must be 2\^k or m\*2\^k", out
    )


def test_bad_input_calibration_text_too_short(tiny_hf, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text(TEXT[:400])
    out = tmp_path / "o"
    code, err = _cli(
        [
            "llama3_2_1b_spinquant",
            "--checkpoint",
            str(tiny_hf),
            "--output",
            str(out),
            "--calibration-text",
            str(short),
            "--calibration-seq-len",
            "64",
        ],
        capsys,
    )
    _assert_refused(code, err, r"calibration text .* windows of 64, fewer than the 800 asked for", out)


def test_bad_input_real_checkpoint_without_calibration_text(tiny_hf, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _cli(["llama3_2_1b_spinquant", "--checkpoint", str(tiny_hf), "--output", str(out)], capsys)
    _assert_refused(code, err, r"need calibration text: set calibration.text", out)
