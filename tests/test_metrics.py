"""compare_logits against the definitions, written out here."""

import math

import torch

from edge.evaluate.metrics import compare_logits


def test_identical_logits_agree_everywhere_with_zero_kl():
    logits = torch.randn(7, 11, generator=torch.Generator().manual_seed(0))
    targets = torch.arange(7)
    c = compare_logits(logits, logits.clone(), targets)
    assert c.agree == 7 and abs(c.kl) < 1e-6 and c.nll_ref == c.nll_got


def test_matches_hand_computed_values():
    ref = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    got = torch.tensor([[0.0, 1.0], [0.0, 3.0]])
    targets = torch.tensor([0, 1])
    c = compare_logits(ref, got, targets)
    p = ref.softmax(-1)
    want_kl = float((p * (p.log() - got.log_softmax(-1))).sum())
    assert math.isclose(c.kl, want_kl, rel_tol=1e-6)
    assert math.isclose(c.nll_ref, -(math.log(p[0, 0]) + math.log(p[1, 1])), rel_tol=1e-6)
    assert c.agree == 1  # row 0: argmax 0 vs 1; row 1: both 1
