"""edge.finetune.train: the loss (LM and distillation) over masked targets, batches as a pure function of the step."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from edge.checkpoint import load_model, open_checkpoint
from edge.finetune.train import batch_indices, lr_at, masked_loss
from edge.model import AttentionPath

torch.set_num_threads(1)


def _model(ckpt):
    m = load_model(open_checkpoint(ckpt), max_context=16, dtype=torch.float32, full_logits=True)
    m.set_attention_path(AttentionPath.SEQUENCE)
    return m


def test_lm_loss_is_cross_entropy_on_masked_targets_only(tiny_hf):
    model = _model(tiny_hf)
    tokens = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, 3:6] = mask[1, 8] = True
    loss, total = masked_loss(model, tokens, mask, denominator=4)
    with torch.no_grad():
        logp = F.log_softmax(model(tokens[:, :-1]), -1)  # [2, 8, V]
    want = -(logp[0, 2, tokens[0, 3]] + logp[0, 3, tokens[0, 4]] + logp[0, 4, tokens[0, 5]] + logp[1, 7, tokens[1, 8]])
    torch.testing.assert_close(loss, want / 4, rtol=1e-6, atol=1e-6)
    assert abs(total - float(want)) < 1e-4


def test_distillation_from_itself_is_zero_and_from_another_model_is_kl(tiny_hf, tmp_path):
    from tests.conftest import make_hf_checkpoint

    model = _model(tiny_hf)
    tokens = torch.randint(0, 300, (1, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(1, 9, dtype=torch.bool)
    loss, _ = masked_loss(model, tokens, mask, denominator=8, teacher=_model(tiny_hf))
    assert abs(float(loss)) < 1e-6
    other = _model(make_hf_checkpoint(tmp_path / "other", seed=5))
    loss, _ = masked_loss(model, tokens, mask, denominator=8, teacher=other)
    with torch.no_grad():
        p, q = F.log_softmax(other(tokens[:, :-1]), -1), F.log_softmax(model(tokens[:, :-1]), -1)
    torch.testing.assert_close(loss, (p.exp() * (p - q)).sum(-1).mean(), rtol=1e-5, atol=1e-6)


def test_batches_depend_only_on_seed_stage_and_step():
    a = [batch_indices(10, batch=4, step=s, seed=3, stage="qat") for s in range(5)]
    assert a == [batch_indices(10, batch=4, step=s, seed=3, stage="qat") for s in range(5)]
    flat = [i for b in a for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(
        range(10)
    )  # epochs cover every window once
    assert a != [batch_indices(10, batch=4, step=s, seed=4, stage="qat") for s in range(5)]
    assert a != [batch_indices(10, batch=4, step=s, seed=3, stage="lora") for s in range(5)]


def test_schedule_warms_up_then_decays_to_a_tenth():
    lrs = [lr_at(s, steps=100, peak=1.0) for s in range(100)]
    assert lrs[0] == 0.1 and lrs[9] == 1.0 and max(lrs) == 1.0
    assert all(x >= y for x, y in zip(lrs[9:], lrs[10:])) and abs(lrs[-1] - 0.1) < 0.01
