"""SpinQuant's online R4 on FFN widths m * 2^k beyond the op's own (2^k, 28 * 2^k): the op on the 2^k part, then an
m x m mix H_m^T / sqrt(m). M is orthogonal, the program path equals the differentiable one, a rotated FFN-1536 Llama
keeps its logits eagerly and in the .pte, and a width with no such factorisation is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig
from edge.core.errors import EdgeError
from edge.export.lower import pte_structure
from edge.model import AttentionPath, OnlineHadamard, fast_hadamard_accepts, hadamard_transform, online_hadamard_accepts
from edge.quant.ptq import quantize_model
from edge.spinquant.fold import hadamard_fold
from edge.spinquant.hadamard import hadamard_matrix, online_mix
from edge.spinquant.rotations import hadamard_rotations
from tests.conftest import assert_pte_matches_transformers, export_tiny, make_hf_checkpoint


def _r4(n: int) -> tuple[torch.Tensor | None, torch.Tensor]:
    """FFN width n -> (R4's mix, its matrix M [n, n] float64 through the differentiable path)."""
    mix = online_mix(n)
    return mix, hadamard_transform(torch.eye(n, dtype=torch.float64), mix)


@pytest.mark.parametrize("n, m", [(1536, 12), (1280, 20)])
def test_new_widths_are_orthogonal_and_the_program_path_computes_them(n, m):
    mix, M = _r4(n)
    assert mix is not None and mix.shape == (m, m) and not fast_hadamard_accepts(n)
    eye = torch.eye(n, dtype=torch.float64)
    assert float((M @ M.T - eye).abs().max()) < 1e-6  # measured 2e-14
    torch.testing.assert_close(M, hadamard_matrix(n) / n**0.5, rtol=0, atol=1e-12)  # kron(H_m, Sylvester) / sqrt(n)
    x = torch.randn(1, 9, n, dtype=torch.float64, generator=torch.Generator().manual_seed(n))
    # the program path (op on [1, S, m, 2^k], then the m x m linear) in float64, and in float32 as it is exported
    torch.testing.assert_close(OnlineHadamard(mix)(x), x @ M, rtol=0, atol=1e-12)
    module = OnlineHadamard(mix.float())
    torch.testing.assert_close(module(x.float()).double(), x @ M, rtol=0, atol=1e-5)
    module.path = AttentionPath.SEQUENCE  # the training path: same M, with a backward
    xs = x.float().requires_grad_()
    y = module(xs)
    torch.testing.assert_close(y.double(), x @ M, rtol=0, atol=1e-5)
    g = torch.randn_like(y)
    y.backward(g)
    torch.testing.assert_close(xs.grad.double(), g.double() @ M.T, rtol=0, atol=1e-5)


def test_28_times_a_power_of_two_is_the_op_alone_as_before():
    """3584 = 28 * 128: no mix; the op's own M with M M^T = 28 I (it normalises only the 2^k part), folded / 28."""
    n = 3584
    mix, M = _r4(n)
    assert mix is None and fast_hadamard_accepts(n) and OnlineHadamard().mix is None
    eye = torch.eye(n, dtype=torch.float64)
    assert float((M @ M.T - 28 * eye).abs().max()) < 1e-6
    assert float((M @ M.T / 28 - eye).abs().max()) < 1e-6  # orthogonal up to that scale
    torch.testing.assert_close(OnlineHadamard()(eye[:7]), M[:7], rtol=0, atol=1e-12)  # the op itself


@pytest.mark.parametrize("n", [1536, 1280, 3584, 8192])
def test_the_fold_undoes_r4(n):
    """down_proj' = W M^-T: down'(h @ M) == down(h), whatever M's scale."""
    mix, M = _r4(n)
    w = torch.randn(16, n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(hadamard_fold(w, mix) @ M.T, w, rtol=0, atol=1e-12)


def test_accepted_and_refused_widths():
    assert all(online_hadamard_accepts(n) for n in (1536, 1280, 3584, 8192, 3072, 96, 140 * 64))
    assert not any(online_hadamard_accepts(n) for n in (1000, 1001, 0, 13 * 64))
    with pytest.raises(EdgeError, match=r"FFN width 1000 cannot take the online Hadamard \(R4\): it must be m\*2\^k"):
        online_mix(1000)
    with pytest.raises(ValueError, match="not 1000"):
        hadamard_transform(torch.zeros(2, 1000))


@pytest.fixture(scope="module")
def ffn1536(tmp_path_factory) -> Path:
    """SmolLM2-135M's FFN width 1536 = 12 * 128 on a tiny Llama: dim 64, 4 heads, 2 kv heads, 2 layers, vocab 256."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("ffn1536") / "ckpt", ffn=1536, vocab=256)


def test_rotated_ffn1536_keeps_the_logits_eagerly(ffn1536):
    ckpt = open_checkpoint(ffn1536)
    tokens = torch.randint(0, ckpt.args.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    models = [load_model(ckpt, max_context=64, dtype=torch.float32, full_logits=True) for _ in range(2)]
    rot = hadamard_rotations(ckpt.args, seed=3)
    quantize_model(models[1], QuantizationConfig(), dtype=torch.float32, rotations=rot, online_hadamard=True)
    assert all(b.mlp.down_proj_input.mix.shape == (12, 12) for b in models[1].layers)
    with torch.no_grad():
        ref, got = (m(tokens, torch.tensor([0])) for m in models)
        torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)
        for m in models:
            m.set_attention_path(AttentionPath.SEQUENCE)
        ref, got = (m(tokens) for m in models)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)


def _xnnpack_linear_shapes(pte: Path) -> list[tuple[int, ...]]:
    """Every fully-connected weight shape inside the .pte's XNNPACK delegates."""
    from tests.xnnpack_blob import _xnnpack_graphs

    shapes = []
    for _, graph, _ in _xnnpack_graphs(pte):
        values = {}
        for v in graph["xvalues"]:
            t = v["xvalue_union"].get("tensor_value", v["xvalue_union"])
            values[t["id_out"]] = tuple(t["dims"])
        shapes += [
            values[n["xnode_union"]["filter_id"]]
            for n in graph["xnodes"]
            if n["xnode_union_type"] == "XNNFullyConnected"
        ]
    return shapes


def test_rotated_ffn1536_pte_matches_the_unrotated_model(ffn1536, tmp_path):
    out = export_tiny(
        ffn1536,
        tmp_path / "out",
        "llama3_2_1b_bf16",
        dtype="fp32",
        full_logits=True,
        rotation={"kind": "hadamard", "seed": 7},
    )
    assert_pte_matches_transformers(ffn1536, out / "model.pte")
    s = pte_structure(out / "model.pte")
    # The m x m mix lowers into XNNPACK with down_proj (transpose, 12 x 12 fully-connected, transpose): outside
    # the delegates only the op per layer, and as many delegate calls as a 2^k model's R4 makes.
    assert s["kernels"]["llama::fast_hadamard_transform"] == 2 and s["delegate_calls"] == 5
    assert not {"aten::permute_copy", "aten::mm", "aten::linear", "aten::view_copy", "aten::clone"} & set(s["kernels"])
    assert _xnnpack_linear_shapes(out / "model.pte").count((12, 12)) == 2
