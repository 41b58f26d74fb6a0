"""edge.export end to end on tiny checkpoints: the .pte against transformers, against the eager
quantized model, in ExecuTorch's own runner, and every bad input the CLI must refuse."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from edge.checkpoint import load_model, open_checkpoint
from edge.config import load_config
from edge.core.io import sha256_file
from edge.core.progress import Progress
from edge.evaluate.pte_model import load_pte
from edge.export.__main__ import main
from edge.export.pipeline import run_export
from edge.quant.ptq import quantize_model
from edge.quant.scheme import sqnr_db
from tests.conftest import MAX_CONTEXT, assert_pte_matches_transformers, make_hf_checkpoint, read_json
from tests.conftest import export_tiny as _export

# --- against an independent implementation -------------------------------------------------


def test_fp32_pte_matches_transformers_prefill_and_decode(tiny_hf, fp32_export):
    assert_pte_matches_transformers(tiny_hf, fp32_export / "model.pte")


def test_fp32_pte_greedy_32_tokens_equal_transformers(tiny_hf, fp32_export):
    hf = LlamaForCausalLM.from_pretrained(tiny_hf).eval()
    prompt = [0, 17, 42, 99, 7, 150, 3, 64]
    with torch.no_grad():
        ids = torch.tensor([prompt])
        ref = hf.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=32,
            min_new_tokens=32,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=None,
        )
    ours = load_pte(fp32_export / "model.pte").greedy(prompt, max_new_tokens=32)
    assert ours == ref[0, len(prompt) :].tolist()


def test_metadata_methods_for_the_stock_runner(tiny_hf, q_export):
    md = load_pte(q_export / "model.pte").metadata
    # get_max_seq_len is the prefill chunk (128 by default); a program taking max_context - 1 says max_context
    assert md["get_max_seq_len"] == MAX_CONTEXT and md["get_max_context_len"] == MAX_CONTEXT
    assert md["get_vocab_size"] == open_checkpoint(tiny_hf).args.vocab_size and md["get_n_layers"] == 2
    assert md["get_bos_id"] == 0 and md["get_eos_ids"] == [1]
    assert md["use_kv_cache"] and md["use_sdpa_with_kv_cache"] and md["enable_dynamic_shape"]


# --- quantized ----------------------------------------------------------------------------


def test_quantized_pte_matches_eager_torchao_model(tiny_hf, q_export):
    cfg = load_config(config="llama3_2_1b_8da4w", overrides={"output": "unused"})
    eager = load_model(open_checkpoint(tiny_hf), max_context=MAX_CONTEXT, dtype=None)
    quantize_model(eager, cfg.quantization, dtype=torch.float32)
    pte = load_pte(q_export / "model.pte")
    tokens = torch.randint(0, eager.args.vocab_size, (1, 20), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = [eager(tokens[:, :12], torch.tensor([0]))] + [
            eager(tokens[:, i : i + 1], torch.tensor([i])) for i in range(12, 20)
        ]
    got = [pte.forward(tokens[:, :12], 0)] + [pte.forward(tokens[:, i : i + 1], i) for i in range(12, 20)]
    # XNNPACK packs scales as bf16 and uses its own int8 GEMMs: close to torchao's eager math, not bit-equal.
    assert sqnr_db(torch.cat(ref), torch.cat(got)) > 30


def test_quantized_pte_is_smaller_and_delegated(fp32_export, q_export):
    manifest = read_json(q_export / "manifest.json")
    fp32 = read_json(fp32_export / "manifest.json")
    assert manifest["size_bytes"]["pte"] < 0.5 * fp32["size_bytes"]["pte"]
    scheme = manifest["quantization"]["scheme"]
    assert "int4" in scheme["transformer_block_linears"] and "groups of 32" in scheme["transformer_block_linears"]
    assert "int8" in scheme["output_layer"] and "per channel" in scheme["output_layer"]
    assert scheme["embedding"].startswith("int8")


def test_one_xnnpack_partition_per_layer(tiny_hf, fp32_export, q_export):
    """Norms, rope and reshapes stay inside XNNPACK: only the KV-cache ops, the embedding lookup,
    the rope-table slices and the last-position select run outside a delegate."""
    from edge.export.lower import pte_structure

    n_layers = read_json(tiny_hf / "config.json")["num_hidden_layers"]
    q = pte_structure(q_export / "model.pte")
    assert q["backends"] == {"XnnpackBackend": n_layers + 2}  # + the final norm after the last-position select
    assert q["delegate_calls"] == n_layers + 2
    outside = {k: v for k, v in q["kernels"].items() if not k.startswith("executorch_prim::")}
    assert outside == {
        "llama::update_cache": 2 * n_layers,
        "llama::custom_sdpa": n_layers,
        "quantized_decomposed::embedding_byte": 1,
        "aten::slice_copy": 2,
        "aten::select_copy": 2,
        "aten::sym_size": 1,
        "aten::_local_scalar_dense": 1,
    }, q["kernels"]
    full = pte_structure(fp32_export / "model.pte")  # every position's logits: no select, one partition fewer
    assert full["delegate_calls"] == n_layers + 1


def test_max_prefill_chunks_prompts_and_plans_less_memory(tiny_hf, q_export, tmp_path):
    """max_prefill 16: one call takes at most 16 tokens, a 40-token prompt is fed in chunks (by edge's
    runtime and by ExecuTorch's runner) with the same logits as one call of the unchunked program."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from edge.export.lower import pte_structure

    out = _export(tiny_hf, tmp_path / "chunked", "llama3_2_1b_8da4w", max_prefill=16)
    chunked, whole = load_pte(out / "model.pte"), load_pte(q_export / "model.pte")
    assert (
        chunked.metadata["get_max_seq_len"] == 16 and chunked.max_context == MAX_CONTEXT and chunked.max_prefill == 16
    )
    with pytest.raises(Exception, match="rejected 17 tokens"):
        chunked._call(torch.zeros((1, 17), dtype=torch.long), 0)
    tokens = torch.randint(0, chunked.vocab_size, (1, 40), generator=torch.Generator().manual_seed(5))
    a, b = chunked.forward(tokens, 0), whole.forward(tokens, 0)
    assert sqnr_db(b, a) > 60, sqnr_db(b, a)  # same weights and math; only the GEMM row blocking differs
    assert pte_structure(out / "model.pte")["planned_bytes"] < pte_structure(q_export / "model.pte")["planned_bytes"]
    stats = []
    TextLLMRunner(str(out / "model.pte"), str(out / "tokenizer.json")).generate(
        "word " * 9, GenerationConfig(max_new_tokens=4, temperature=0.0, echo=False), stats_callback=stats.append
    )
    run = json.loads(stats[0].to_json_string())
    assert run["prompt_tokens"] > 16 and run["generated_tokens"] >= 1, run  # the runner had to chunk the prompt


def test_text_llm_runner_generates_from_quantized_pte(q_export):
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    runner = TextLLMRunner(str(q_export / "model.pte"), str(q_export / "tokenizer.json"))
    stats = []
    # No token callback: random tiny models emit partial UTF-8 pieces the callback cannot decode.
    runner.generate(
        "The quick brown fox",
        GenerationConfig(max_new_tokens=12, temperature=0.0, echo=False),
        stats_callback=stats.append,
    )
    s = json.loads(stats[0].to_json_string())
    assert s["prompt_tokens"] >= 4
    assert 1 <= s["generated_tokens"] <= 12
    assert s["inference_end_ms"] >= s["first_token_ms"] >= s["inference_start_ms"]


# --- outputs ------------------------------------------------------------------------------


def test_output_folder_and_manifest(tiny_hf, q_export):
    assert sorted(p.name for p in q_export.iterdir()) == ["NOTICE", "manifest.json", "model.pte", "tokenizer.json"]
    m = read_json(q_export / "manifest.json")
    assert m["sha256"]["output"]["model.pte"] == sha256_file(q_export / "model.pte")
    assert m["sha256"]["inputs"]["model.safetensors"] == sha256_file(tiny_hf / "model.safetensors")
    assert set(m["versions"]) >= {"torch", "executorch", "torchao"}
    assert m["versions"]["executorch"] == "1.5.1" and m["versions"]["torchao"] == "0.18.0"
    assert m["model"]["n_layers"] == 2 and m["config"]["quantization"]["group_size"] == 32
    kinds = m["size_bytes"]["by_tensor_kind"]
    assert {"embedding", "output_layer", "attention_linears", "ffn_linears", "norms"} <= set(kinds)
    assert m["quantization"]["min_weight_sqnr_db"]["lm_head"] > 35
    assert set(m["stage_seconds"]) >= {"load", "quantize", "export", "lower"}
    notice = (q_export / "NOTICE").read_text()
    assert "Llama 3.2 Community License" in notice and "Built with Llama" in notice


def test_bf16_export_runs_close_to_eager_bf16(tiny_hf, tmp_path):
    out = _export(tiny_hf, tmp_path / "bf16", "llama3_2_1b_bf16")
    eager = load_model(open_checkpoint(tiny_hf), max_context=MAX_CONTEXT, dtype=torch.bfloat16)
    tokens = torch.randint(0, eager.args.vocab_size, (1, 10), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = eager(tokens, torch.tensor([0]))
    got = load_pte(out / "model.pte").forward(tokens, 0)
    assert got.dtype == torch.float32 and sqnr_db(ref, got) > 25  # bf16 arithmetic on both sides, different kernels


# --- bad input: one line, exit 2, nothing written -------------------------------------------


def _cli(args, capsys):
    capsys.readouterr()  # drop what setting up the case printed
    code = main([*args, "--quiet"])
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_refused(code, err, pattern, out: Path):
    import re

    assert code == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert re.search(pattern, err), err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*"))  # no temp leftovers


def test_bad_input_missing_checkpoint(tmp_path, capsys):
    out = tmp_path / "o"
    _assert_refused(
        *_cli(["--checkpoint", str(tmp_path / "missing"), "--output", str(out)], capsys), "does not exist", out
    )


def test_bad_input_shape_mismatch(tiny_hf, tmp_path, capsys):
    import shutil

    c = tmp_path / "c"
    shutil.copytree(tiny_hf, c)
    cfg = json.loads((c / "config.json").read_text())
    cfg["hidden_size"] = 128
    (c / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o"
    _assert_refused(
        *_cli(["--checkpoint", str(c), "--output", str(out)], capsys),
        "has shape .* but the checkpoint's config implies",
        out,
    )


def test_bad_input_group_size(tiny_hf, tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _cli(
        ["llama3_2_1b_8da4w", "--checkpoint", str(tiny_hf), "--output", str(out), "--group-size", "128"], capsys
    )
    _assert_refused(
        code, err, r"group size 128 does not divide the input width 64 of layers\.0\.self_attn\.q_proj", out
    )


def test_bad_input_not_llama(tiny_hf, tmp_path, capsys):
    import shutil

    c = tmp_path / "c"
    shutil.copytree(tiny_hf, c)
    cfg = json.loads((c / "config.json").read_text()) | {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}
    (c / "config.json").write_text(json.dumps(cfg))
    out = tmp_path / "o"
    _assert_refused(*_cli(["--checkpoint", str(c), "--output", str(out)], capsys), "GPT2LMHeadModel is not Llama", out)


def test_bad_input_output_exists(tiny_hf, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    code, err = _cli(["--checkpoint", str(tiny_hf), "--output", str(out)], capsys)
    assert code == 2 and "already exists (pass --force" in err and len(err.splitlines()) == 1
    assert (out / "keep.txt").read_text() == "mine"


def test_bad_input_context_too_long(tmp_path, capsys):
    ckpt = make_hf_checkpoint(tmp_path / "short", max_positions=256)
    out = tmp_path / "o"
    code, err = _cli(["--checkpoint", str(ckpt), "--output", str(out), "--max-context", "4096"], capsys)
    _assert_refused(code, err, "max context 4096 is longer than the 256 tokens the model supports", out)


def test_bad_input_truncated_safetensors(tiny_hf, tmp_path, capsys):
    import shutil

    c = tmp_path / "c"
    shutil.copytree(tiny_hf, c)
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[:-1000])
    out = tmp_path / "o"
    _assert_refused(
        *_cli(["--checkpoint", str(c), "--output", str(out)], capsys), "not a readable safetensors file", out
    )


@pytest.mark.parametrize("config", ["llama3_2_1b_8da4w", "llama3_2_3b_spinquant"])
def test_a_llama_config_without_checkpoint_is_refused_not_the_fixture(tmp_path, capsys, config):
    """Only fixture_* configs fall back to the embedded fixture; a Llama config without weights names the flag."""
    out = tmp_path / "o"
    _assert_refused(
        *_cli([config, "--output", str(out)], capsys),
        rf"^error: {config} needs the model's weights: "
        r"pass --checkpoint",
        out,
    )


def test_a_finetune_of_a_llama_config_without_checkpoint_is_refused(tmp_path, capsys):
    from edge.finetune.__main__ import main as finetune_main

    out = tmp_path / "o"
    code = finetune_main(["llama3_2_1b_qat_lora", "--output", str(out), "--quiet"])
    err = capsys.readouterr().err
    _assert_refused(code, err, r"^error: llama3_2_1b_qat_lora needs the model's weights: pass --checkpoint", out)


def test_bad_config_values_listed_together(tmp_path, capsys):
    out = tmp_path / "o"
    code, err = _cli(["--output", str(out), "--max-context", "1", "--group-size", "24"], capsys)
    _assert_refused(code, err, r"max_context: 1 is less than 2", out)
    assert "group_size: 24 is not a power of two" in err


def test_cli_process_exit_code_and_no_traceback(tmp_path):
    """The real process: exit status 2 and a single line on stderr, no Python traceback."""
    out = tmp_path / "o"
    proc = subprocess.run(
        [sys.executable, "-m", "edge.export", "--checkpoint", str(tmp_path / "nope"), "--output", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint")
    assert not out.exists()


def test_force_replaces_existing_output(tiny_hf, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    cfg = load_config(
        config="llama3_2_1b_bf16",
        overrides={"checkpoint": str(tiny_hf), "output": str(out), "max_context": 32, "dtype": "fp32", "force": True},
    )
    run_export(cfg, progress=Progress(quiet=True))
    assert not (out / "stale.txt").exists() and (out / "model.pte").is_file()
    assert not list(tmp_path.glob(".o.*"))


def test_interrupted_export_leaves_nothing(tiny_hf, tmp_path, monkeypatch):
    import edge.export.manifest as manifest

    def boom(program, path):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(manifest, "write_pte", boom)
    out = tmp_path / "o"
    cfg = load_config(
        config="llama3_2_1b_bf16",
        overrides={"checkpoint": str(tiny_hf), "output": str(out), "max_context": 32, "dtype": "fp32"},
    )
    with pytest.raises(KeyboardInterrupt):
        run_export(cfg, progress=Progress(quiet=True))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_rotation_with_round_to_nearest_warns_once(tiny_hf, tmp_path, capsys):
    import io

    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    overrides = {"checkpoint": str(tiny_hf), "output": str(tmp_path / "h"), "max_context": 64}
    stream = io.StringIO()
    config = load_config(config="llama3_2_1b_8da4w", overrides=overrides | {"rotation": {"kind": "hadamard"}})
    run_export(config, progress=Progress(quiet=True, stream=stream))
    assert stream.getvalue().count("warning: rotations with round-to-nearest") == 1
    stream = io.StringIO()
    config = load_config(config="llama3_2_1b_8da4w", overrides=overrides | {"output": str(tmp_path / "p")})
    run_export(config, progress=Progress(quiet=True, stream=stream))
    assert "warning" not in stream.getvalue()
