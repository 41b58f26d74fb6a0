"""python -m edge.finetune end to end on a tiny model: output layout and record, seed determinism, exact
resume, data parallelism, and edge.export of what was trained (adapters in the program, SQNR to the
converted model, the runner generates); every bad input is one error line with nothing written."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import TEXT, assert_runner_generates, read_json

torch.set_num_threads(1)
STEPS = 4


def _args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "fixture_qat_lora",
        "--checkpoint",
        str(ckpt),
        "--data",
        str(data),
        "--output",
        str(out),
        "--quiet",
        "--max-length",
        "32",
        "--qat-steps",
        str(STEPS),
        "--lora-steps",
        str(STEPS),
        "--qat-batch-size",
        "4",
        "--lora-batch-size",
        "4",
        "--lora-rank",
        "4",
        "--checkpoint-every",
        "2",
        "--qat-learning-rate",
        "1e-3",
        *extra,
    ]


def _finetune(*argv: str) -> int:
    from edge.finetune.__main__ import main

    return main(list(argv))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("data") / "train.txt"
    p.write_text(TEXT)
    return p


@pytest.fixture(scope="module")
def finetuned(tiny_hf, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft") / "out"
    assert _finetune(*_args(tiny_hf, data, out)) == 0
    return out


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


def test_output_is_an_hf_checkpoint_with_adapters_and_a_record(finetuned, tiny_hf, data):
    names = {p.name for p in finetuned.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer.json", "adapter_model.safetensors", "training.json"} <= names
    assert not (finetuned.parent / "out.resume").exists()
    rec = read_json(finetuned / "training.json")
    assert rec["steps"] == {"qat": STEPS, "lora": STEPS} and [len(v) for v in rec["losses"].values()] == [STEPS, STEPS]
    assert rec["data"]["sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    assert rec["fake_quant"] is True and rec["quantization"]["linear"] == "int4" and rec["lora"]["rank"] == 4
    weights = _tensors(finetuned / "model.safetensors")
    assert "model.layers.1.mlp.down_proj.weight" in weights and not any(
        ".base." in k or "adaptor" in k for k in weights
    )
    original = _tensors(tiny_hf / "model.safetensors")
    assert not torch.equal(
        weights["model.layers.0.self_attn.q_proj.weight"], original["model.layers.0.self_attn.q_proj.weight"]
    )
    adapters = _tensors(finetuned / "adapter_model.safetensors")
    assert len(adapters) == 2 * 7 * 2 and adapters["layers.0.mlp.up_proj.adaptor.B.weight"].abs().max() > 0  # B trained
    # the backbone is frozen in stage 2: every loss is finite and the LoRA stage starts where QAT ended
    losses = rec["losses"]["qat"] + rec["losses"]["lora"]
    assert all(0 < v < 20 for v in losses)


def test_same_seed_same_model_and_interrupted_run_resumes_exactly(finetuned, tiny_hf, data, tmp_path, monkeypatch):
    import edge.finetune.run as run

    again = tmp_path / "again"
    assert _finetune(*_args(tiny_hf, data, again)) == 0
    assert read_json(again / "training.json")["losses"] == read_json(finetuned / "training.json")["losses"]
    for name in ("model.safetensors", "adapter_model.safetensors"):
        a, b = _tensors(again / name), _tensors(finetuned / name)
        assert all(torch.equal(a[k], b[k]) for k in a)

    # Interrupted right after its second checkpoint (LoRA stage, step 2 of 4): nothing written but the checkpoint.
    real, saves = run.write_atomic, []

    def interrupting(path, write):
        real(path, write)
        saves.append(path)
        if len(saves) == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(run, "write_atomic", interrupting)
    cut = tmp_path / "cut"
    assert _finetune(*_args(tiny_hf, data, cut)) == 130
    assert not cut.exists() and (tmp_path / "cut.resume" / "state.pt").is_file()
    monkeypatch.setattr(run, "write_atomic", real)
    assert _finetune(*_args(tiny_hf, data, cut)) == 2  # refuses to start over silently
    assert _finetune(*_args(tiny_hf, data, cut, "--resume")) == 0
    assert read_json(cut / "training.json")["losses"] == read_json(finetuned / "training.json")["losses"]
    a, b = _tensors(cut / "adapter_model.safetensors"), _tensors(finetuned / "adapter_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut.resume").exists()


def _torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "--master_port",
            "29533",
            "-m",
            "edge.finetune",
            *argv,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


def test_two_processes_train_as_one(tiny_hf, data, tmp_path):
    """torchrun, world size 2, gloo on the CPU, FSDP2 fully_shard: the losses and gradient norms of one process.

    Compared in float (--no-fake-quant), where only summation order differs. With fake quantization the runs
    also agree at step 0, but a weight or activation within float noise of a rounding boundary may round the
    other way later, so the curves are compared loosely there.
    """
    runs = {}
    for fq in ("--no-fake-quant", "--fake-quant"):
        one, two = tmp_path / f"one{fq}", tmp_path / f"two{fq}"
        # LM loss: its values (~5) make a relative tolerance meaningful; the distillation KL starts near 0.
        assert _finetune(*_args(tiny_hf, data, one, fq, "--loss", "lm")) == 0
        r = _torchrun(*_args(tiny_hf, data, two, fq, "--loss", "lm"))
        assert r.returncode == 0, r.stderr[-3000:]
        runs[fq] = read_json(one / "training.json"), read_json(two / "training.json")
        assert (runs[fq][0]["world_size"], runs[fq][1]["world_size"]) == (1, 2)

    def curve(rec, key):
        return torch.tensor(rec[key]["qat"] + rec[key]["lora"])  # [2 * STEPS]

    for key in ("losses", "grad_norms"):
        a, b = (curve(r, key) for r in runs["--no-fake-quant"])
        assert a.shape == (2 * STEPS,)
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5)
        a, b = (curve(r, key) for r in runs["--fake-quant"])
        torch.testing.assert_close(b[0], a[0], rtol=0, atol=1e-5)
        torch.testing.assert_close(b, a, rtol=0.02, atol=0)


@pytest.fixture(scope="module")
def exported(finetuned, tmp_path_factory) -> Path:
    from edge.export.__main__ import main

    out = tmp_path_factory.mktemp("pte") / "o"
    assert (
        main(
            [
                "fixture_qat_lora",
                "--checkpoint",
                str(finetuned),
                "--output",
                str(out),
                "--max-context",
                "64",
                "--full-logits",
                "--quiet",
            ]
        )
        == 0
    )
    return out


def _converted(finetuned: Path):
    """The training side's own model, converted: float checkpoint -> fake quant -> adapters -> torchao convert."""
    from edge.checkpoint import load_model, open_checkpoint
    from edge.config import load_config
    from edge.finetune.lora import load_adapters, read_adapters
    from edge.model import AttentionPath
    from edge.quant.qat import convert_qat, prepare_qat

    quant = load_config(config="fixture_qat_lora", overrides={}).quantization
    model = load_model(open_checkpoint(finetuned), max_context=64, dtype=torch.float32, full_logits=True)
    model.set_attention_path(AttentionPath.SEQUENCE)
    prepare_qat(model, quant)
    tensors, spec = read_adapters(finetuned / "adapter_model.safetensors")
    load_adapters(model, tensors, spec, source="t")
    convert_qat(model, quant)
    return model


def test_pte_matches_the_converted_model_and_holds_the_adapters(finetuned, exported):
    from edge.evaluate.pte_model import load_pte
    from edge.quant.scheme import sqnr_db

    tokens = torch.randint(0, 300, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = _converted(finetuned)(tokens)
    got = load_pte(exported / "model.pte").forward(tokens, 0)
    assert sqnr_db(ref, got) > 30
    m = read_json(exported / "manifest.json")
    ad = m["finetune"]["adapters"]
    assert (
        ad["mode"] == "keep"
        and ad["rank"] == 4
        and ad["bytes"] == m["size_bytes"]["by_tensor_kind"]["lora_adapters (float)"]
    )
    # fp32, rank 4, 2 layers; (in + out) per linear: q 64+64, k 64+32, v 64+32, o 64+64, gate/up 64+128, down 128+64
    assert ad["bytes"] == 4 * 4 * 2 * (128 + 96 + 96 + 128 + 192 + 192 + 192)
    assert (
        m["finetune"]["training_record_sha256"]
        == hashlib.sha256((finetuned / "training.json").read_bytes()).hexdigest()
    )


def test_adapters_are_float_linears_in_the_exported_graph(finetuned):
    from edge.checkpoint import load_model, open_checkpoint
    from edge.config import load_config
    from edge.export.finetune_stage import attach, check_finetuned
    from edge.export.lower import export_program
    from edge.quant.ptq import quantize_model

    config = load_config(config="fixture_qat_lora", overrides={"checkpoint": str(finetuned)})
    ckpt = open_checkpoint(finetuned)
    model = load_model(ckpt, max_context=64, dtype=None)
    quantize_model(model, config.quantization, dtype=torch.float32)
    assert attach(model, check_finetuned(config, ckpt), quantized=True) == 14
    ep = export_program(model)
    params = {n: ep.state_dict[n] for n in ep.graph_signature.parameters if ".adaptor." in n}
    assert len(params) == 28 and all(p.dtype == torch.float32 and not hasattr(p, "qdata") for p in params.values())
    weight_inputs = {spec.arg.name for spec in ep.graph_signature.input_specs if spec.target in params}
    users = [
        n
        for n in ep.graph.nodes
        if n.op == "call_function"
        and "linear" in str(n.target)
        and any(getattr(a, "name", None) in weight_inputs for a in n.args)
    ]
    assert len(users) == 28  # one float linear per adapter matrix


def test_runner_generates_from_the_qat_lora_pte(finetuned, tmp_path):
    from edge.export.__main__ import main

    out = tmp_path / "o"
    assert (
        main(
            ["fixture_qat_lora", "--checkpoint", str(finetuned), "--output", str(out), "--max-context", "64", "--quiet"]
        )
        == 0
    )
    assert_runner_generates(out)


def test_merged_adapters_export_as_one_quantized_weight(finetuned, tmp_path):
    import yaml

    from edge.evaluate.pte_model import load_pte
    from edge.export.__main__ import main
    from edge.quant.scheme import sqnr_db

    cfg = yaml.safe_load(Path("export_configs/fixture_qat_lora.yaml").read_text())
    cfg["finetune"]["adapters"] = "merge"
    (tmp_path / "merge.yaml").write_text(yaml.safe_dump(cfg))
    out = tmp_path / "m"
    assert (
        main(
            [
                "--config",
                str(tmp_path / "merge.yaml"),
                "--checkpoint",
                str(finetuned),
                "--output",
                str(out),
                "--max-context",
                "64",
                "--full-logits",
                "--quiet",
            ]
        )
        == 0
    )
    m = read_json(out / "manifest.json")
    assert (
        m["finetune"]["adapters"]["mode"] == "merge"
        and "lora_adapters (float)" not in m["size_bytes"]["by_tensor_kind"]
    )
    # The merged .pte is the quantized merged model: W + (alpha/r) B A, then the scheme's round-to-nearest.
    from edge.checkpoint import load_model, open_checkpoint
    from edge.finetune.lora import load_adapters, merge_lora, read_adapters
    from edge.quant.ptq import quantize_model

    quant = load_config_quant()
    ref = load_model(open_checkpoint(finetuned), max_context=64, dtype=None, full_logits=True)
    load_adapters(ref, *read_adapters(finetuned / "adapter_model.safetensors"), source="t")
    assert merge_lora(ref) == 14
    quantize_model(ref, quant, dtype=torch.float32)
    plain = load_model(open_checkpoint(finetuned), max_context=64, dtype=None, full_logits=True)
    quantize_model(plain, quant, dtype=torch.float32)
    changed = sum(
        not torch.equal(a.qdata, b.qdata)
        for (n, a), (_, b) in zip(ref.named_parameters(), plain.named_parameters())
        if hasattr(a, "qdata") and ".layers." in f".{n}"
    )
    assert changed >= 7  # the adapters moved the integers of the linears they sit on
    tokens = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref(tokens, torch.tensor([0]))
    assert sqnr_db(want, load_pte(out / "model.pte").forward(tokens, 0)) > 30


def load_config_quant():
    from edge.config import load_config

    return load_config(config="fixture_qat_lora", overrides={}).quantization


# --- bad input: one error line, exit 2, nothing written --------------------------------------------------


def _export_rc(capsys, *argv: str) -> tuple[int, str]:
    from edge.export.__main__ import main

    rc = main(list(argv))
    return rc, capsys.readouterr().err


def test_export_needs_a_training_record(tiny_hf, tmp_path, capsys):
    rc, err = _export_rc(
        capsys, "fixture_qat_lora", "--checkpoint", str(tiny_hf), "--output", str(tmp_path / "o"), "--quiet"
    )
    assert rc == 2 and "has no training.json" in err and err.count("\n") == 1 and not (tmp_path / "o").exists()


def test_export_refuses_adapters_that_do_not_fit(finetuned, tmp_path, capsys):
    import shutil

    from edge.finetune.lora import read_adapters, save_adapters

    bad = tmp_path / "bad"
    shutil.copytree(finetuned, bad)
    tensors, spec = read_adapters(bad / "adapter_model.safetensors")
    tensors["layers.1.mlp.gate_proj.adaptor.A.weight"] = torch.zeros(4, 48)
    save_adapters(bad / "adapter_model.safetensors", tensors, spec)
    rc, err = _export_rc(
        capsys, "fixture_qat_lora", "--checkpoint", str(bad), "--output", str(tmp_path / "o"), "--quiet"
    )
    assert rc == 2 and "layers.1.mlp.gate_proj.adaptor.A.weight has shape [4, 48]; this model needs [4, 64]" in err
    assert not (tmp_path / "o").exists()


def test_export_without_finetune_section_refuses_to_drop_adapters(finetuned, tmp_path, capsys):
    rc, err = _export_rc(
        capsys, "llama3_2_1b_8da4w", "--checkpoint", str(finetuned), "--output", str(tmp_path / "o"), "--quiet"
    )
    assert rc == 2 and "holds LoRA adapters" in err and not (tmp_path / "o").exists()


@pytest.mark.parametrize("case", ["empty data", "missing data", "output under a file", "rotation"])
def test_finetune_bad_input(tiny_hf, data, tmp_path, capsys, case):
    out = tmp_path / "o"
    d = data
    if case == "empty data":
        d = tmp_path / "e.txt"
        d.write_text("")
    elif case == "missing data":
        d = tmp_path / "nope.jsonl"
    elif case == "output under a file":
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "o"
    args = _args(tiny_hf, d, out)
    if case == "rotation":  # a config that rotates cannot be fine-tuned: QAT rounds without rotations
        args[0] = str(_rotating(tmp_path))
    rc = _finetune(*args)
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not out.exists() and not (out.parent / "o.resume").exists()


def _rotating(tmp_path: Path) -> Path:
    import yaml

    cfg = yaml.safe_load(Path("export_configs/fixture_qat_lora.yaml").read_text())
    cfg["rotation"] = {"kind": "hadamard"}
    (tmp_path / "rot.yaml").write_text(yaml.safe_dump(cfg))
    return tmp_path / "rot.yaml"
