"""Meta's QLORA_INT4_EO8 layout: int4 integers kept bit for bit, bf16 adapters `{linear}.adaptor.A/B.weight`
with `lora_args` (rank, scale), no rotation; the .pte runs 8da4w(x) + scale * B(A(x)) and the runner generates."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config.finetune import LORA_TARGETS
from edge.core.errors import EdgeError
from edge.export.prequantized import load_prequantized_model, prequantized_report
from edge.finetune.lora import LoRALinear, LoraSpec, load_adapters
from edge.model import OnlineHadamard
from edge.quant.scheme import sqnr_db
from tests.conftest import assert_runner_generates, make_hf_checkpoint
from tests.test_prequantized import META, dequantize, to_meta_rope, write_spinquant

torch.set_num_threads(1)
RANK, SCALE = 4, 2.0
TOKENS = torch.tensor([[5, 17, 3, 250, 42, 99, 7, 8, 123, 64, 1, 200]])


@pytest.fixture(scope="module")
def qlora(tmp_path_factory):
    """(HF float checkpoint, its QLoRA version, the integers written, the adapters in HF layout); read-only."""
    root = tmp_path_factory.mktemp("qlora")
    hf = make_hf_checkpoint(root / "hf", tie=False, seed=2)
    folder = root / "q"
    written = write_spinquant(hf, folder, rotate=False)
    args = open_checkpoint(hf).args
    sd = torch.load(folder / "consolidated.00.pth")
    gen = torch.Generator().manual_seed(3)
    adapters = {}
    for i in range(args.n_layers):
        for proj in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ):
            out_f, in_f = written[f"layers.{i}.{proj}"][0].shape
            a = (torch.randn(RANK, in_f, generator=gen) * 0.1).to(torch.bfloat16)
            b = (torch.randn(out_f, RANK, generator=gen) * 0.1).to(torch.bfloat16)
            adapters[f"layers.{i}.{proj}.adaptor.A.weight"] = a
            adapters[f"layers.{i}.{proj}.adaptor.B.weight"] = b
            if proj.endswith(("q_proj", "k_proj")):  # B's rows are output rows: Meta's rope order
                b = to_meta_rope(b, args.n_heads if proj.endswith("q_proj") else args.n_kv_heads)
            sd[f"layers.{i}.{META[proj]}.adaptor.A.weight"] = a
            sd[f"layers.{i}.{META[proj]}.adaptor.B.weight"] = b
    torch.save(sd, folder / "consolidated.00.pth")
    params = json.loads((folder / "params.json").read_text())
    params["quantization_args"].pop("spinquant")
    params["lora_args"] = {"rank": RANK, "scale": SCALE}
    (folder / "params.json").write_text(json.dumps(params))
    return hf, folder, written, adapters


def test_integers_bit_identical_adapters_exact_and_no_rotation(qlora):
    _, folder, written, adapters = qlora
    model = load_prequantized_model(open_checkpoint(folder), max_context=32)
    assert not any(isinstance(m, OnlineHadamard) for m in model.modules())
    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    assert len(wrapped) == len(LORA_TARGETS) * model.args.n_layers and all(m.scale == SCALE for m in wrapped.values())
    for name, (q, s) in written.items():
        w = model.get_submodule(name + (".base" if name in wrapped else "")).weight
        assert torch.equal(w.qdata, q) and torch.equal(w.scale, s), name
    for name, t in adapters.items():
        stem, _, ab = name.removesuffix(".weight").rpartition(".adaptor.")
        got = getattr(wrapped[stem].adaptor, ab).weight
        assert got.dtype == torch.float32 and torch.equal(got, t.float()), name  # bf16 -> fp32 exactly
    scheme = prequantized_report(open_checkpoint(folder)).scheme
    assert "down_proj_input" not in scheme and f"rank {RANK}, scale 2" in scheme["lora_adapters"]


def test_forward_is_dequantized_weights_plus_scaled_adapters(qlora):
    hf, folder, written, adapters = qlora
    model = load_prequantized_model(open_checkpoint(folder), max_context=32, full_logits=True)
    ref = load_model(open_checkpoint(hf), max_context=32, dtype=torch.float32, full_logits=True)
    with torch.no_grad():
        for name, (q, s) in written.items():
            ref.get_submodule(name).weight.copy_(dequantize(q, s))
        load_adapters(
            ref, {k: v.float() for k, v in adapters.items()}, LoraSpec(rank=RANK, alpha=SCALE * RANK), source="t"
        )
        want, got = ref(TOKENS), model(TOKENS, torch.tensor([0]))
        ref.reset_cache()
        for m in ref.modules():
            if isinstance(m, LoRALinear):
                m.scale = 0.0
        without = ref(TOKENS)
    assert sqnr_db(want[0], got[0]) > 30  # only the 8-bit dynamic activations differ
    assert sqnr_db(without[0], got[0]) < sqnr_db(want[0], got[0]) - 10  # and the adapters are really in it


def test_export_ships_integers_and_adapters_and_the_runner_generates(qlora, tmp_path):
    from edge.evaluate.pte_model import load_pte
    from edge.export.__main__ import main

    _, folder, _, _ = qlora
    out = tmp_path / "o"
    assert (
        main(["llama3_2_1b_8da4w", "--checkpoint", str(folder), "--output", str(out), "--max-context", "64", "--quiet"])
        == 0
    )
    m = json.loads((out / "manifest.json").read_text())
    args = open_checkpoint(folder).args
    per_layer = sum(
        RANK * (i + o) for o, i in ((64, 64), (32, 64), (32, 64), (64, 64), (128, 64), (128, 64), (64, 128))
    )
    assert m["size_bytes"]["by_tensor_kind"]["lora_adapters (float)"] == 4 * per_layer * args.n_layers
    eager = load_prequantized_model(open_checkpoint(folder), max_context=64)
    with torch.no_grad():
        ref = eager(TOKENS[:, :8], torch.tensor([0]))
    assert sqnr_db(ref, load_pte(out / "model.pte").forward(TOKENS[:, :8], 0)) > 30
    assert_runner_generates(out)


def test_adapters_of_the_wrong_rank_are_named(qlora, tmp_path):
    _, folder, _, _ = qlora
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    params = json.loads((bad / "params.json").read_text())
    params["lora_args"]["rank"] = 8
    (bad / "params.json").write_text(json.dumps(params))
    with pytest.raises(
        EdgeError,
        match=r"adapter layers.0.self_attn.q_proj.adaptor.A.weight has shape \[4, 64\]; this model needs \[8, 64\]",
    ):
        load_prequantized_model(open_checkpoint(bad), max_context=32)


def test_adapters_without_lora_args_are_refused(qlora, tmp_path):
    _, folder, _, _ = qlora
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    params = json.loads((bad / "params.json").read_text())
    del params["lora_args"]
    params["quantization_args"]["spinquant"] = False
    (bad / "params.json").write_text(json.dumps(params))
    with pytest.raises(EdgeError, match="params.json has no lora_args"):
        load_prequantized_model(open_checkpoint(bad), max_context=32)
