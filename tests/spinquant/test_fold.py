"""Rotations folded into the weights keep the model's function (no quantization), eagerly and in the .pte."""

from __future__ import annotations

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig, RotationKind
from edge.model import ModelArgs, OnlineHadamard
from edge.quant.ptq import quantize_model
from edge.spinquant.hadamard import hadamard_matrix, random_hadamard
from edge.spinquant.rotations import hadamard_rotations


@pytest.mark.parametrize("n", [12, 20, 28, 36, 44, 60, 64, 448, 3072])
def test_hadamard_matrices_are_hadamard(n):
    h = hadamard_matrix(n)
    assert bool((h.abs() == 1).all())
    torch.testing.assert_close(h @ h.T, n * torch.eye(n, dtype=torch.float64), rtol=0, atol=0)


def test_random_hadamard_is_orthogonal_and_seeded():
    a, b, c = random_hadamard(3072, seed=0), random_hadamard(3072, seed=0), random_hadamard(3072, seed=1)
    torch.testing.assert_close(a @ a.T, torch.eye(3072, dtype=torch.float64), rtol=0, atol=1e-12)
    assert torch.equal(a, b) and not torch.equal(a, c)


def _logits(model, tokens):
    with torch.no_grad():
        model.reset_cache()
        return model(tokens, torch.tensor([0]))


@pytest.mark.parametrize("online_hadamard", [True, False])
def test_folded_rotations_preserve_logits(tiny_hf, online_hadamard):
    ckpt = open_checkpoint(tiny_hf)
    assert ckpt.args.tie_word_embeddings  # the case SpinQuant#13 is about
    tokens = torch.randint(0, ckpt.args.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    ref = _logits(load_model(ckpt, max_context=64, dtype=torch.float32, full_logits=True), tokens)
    model = load_model(ckpt, max_context=64, dtype=torch.float32, full_logits=True)
    rot = hadamard_rotations(ckpt.args, seed=3)
    quantize_model(model, QuantizationConfig(), dtype=torch.float32, rotations=rot, online_hadamard=online_hadamard)
    got = _logits(model, tokens)
    torch.testing.assert_close(got, ref, rtol=0, atol=2e-5)
    # the weights really moved, and the tie is broken
    assert model.lm_head.weight is not model.embed_tokens.weight
    # every norm is folded to 1, except layer 0's input norm, 1 +- 2^-12 per channel (break_embedding_ties)
    assert all(
        torch.equal(b.input_layernorm.weight, torch.ones_like(b.input_layernorm.weight)) for b in model.layers[1:]
    )
    assert 0 < float((model.layers[0].input_layernorm.weight - 1).abs().max()) <= 2.0**-12
    assert all(isinstance(b.mlp.down_proj_input, OnlineHadamard) == online_hadamard for b in model.layers)
    fresh = load_model(ckpt, max_context=64, dtype=torch.float32)
    assert (model.layers[0].self_attn.q_proj.weight - fresh.layers[0].self_attn.q_proj.weight).abs().max() > 0.05


def test_rotation_spreads_an_outlier_channel(tiny_hf):
    """What rotations are for: a weight column 20x the others is spread over all columns (lower max/rms)."""
    ckpt = open_checkpoint(tiny_hf)
    model = load_model(ckpt, max_context=16, dtype=torch.float32)
    with torch.no_grad():
        model.layers[0].mlp.up_proj.weight[:, 5] *= 20
    w = model.layers[0].mlp.up_proj.weight.detach().clone()
    quantize_model(model, QuantizationConfig(), dtype=torch.float32, rotations=hadamard_rotations(ckpt.args, seed=0))
    r = model.layers[0].mlp.up_proj.weight.detach()
    peak = lambda t: float(t.abs().max() / t.pow(2).mean().sqrt())  # noqa: E731
    assert peak(r) < 0.5 * peak(w)


def test_rotation_kinds_are_the_config_enum():
    assert (
        hadamard_rotations(
            ModelArgs(  # a 3B-shaped R1: 3072 = 12 * 256
                dim=3072,
                n_layers=1,
                n_heads=24,
                n_kv_heads=8,
                head_dim=128,
                hidden_dim=8192,
                vocab_size=8,
                norm_eps=1e-5,
                rope_theta=5e5,
                rope_scaling=None,
                max_position_embeddings=16,
                tie_word_embeddings=True,
            ),
            seed=0,
        ).kind
        is RotationKind.HADAMARD
    )


def test_break_embedding_ties_keeps_the_block_function_and_moves_the_norm_off_one(tiny_hf):
    """Layer 0's norm weight becomes 1 +- 2^-12 per channel and q/k/v absorb its inverse: the same outputs in float."""
    import copy

    from edge.spinquant.fold import TIE_JITTER, break_embedding_ties, fuse_block_norms

    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=torch.float32, full_logits=True)
    fuse_block_norms(model.layers[0])
    before = copy.deepcopy(model)
    break_embedding_ties(model.layers[0])
    w = model.layers[0].input_layernorm.weight
    assert 0 < float((w - 1).abs().max()) <= TIE_JITTER and int((w == 1).sum()) == 0
    tokens = torch.randint(0, model.args.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(_logits(model, tokens), _logits(before, tokens), rtol=0, atol=1e-5)  # float32 rounding
