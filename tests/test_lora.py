"""edge.finetune.lora: adapters beside a linear compute base(x) + (alpha/r) B(A(x)), merge exactly, and refuse
misfits."""

from __future__ import annotations

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config.finetune import LORA_TARGETS
from edge.core.errors import EdgeError
from edge.finetune.lora import LoRALinear, LoraSpec, adapter_tensors, attach_lora, load_adapters, merge_lora

torch.set_num_threads(1)
TOKENS = torch.tensor([[0, 5, 17, 3, 250, 42, 99, 7]])


def _model(ckpt):
    return load_model(open_checkpoint(ckpt), max_context=16, dtype=torch.float32, full_logits=True)


def test_fresh_adapters_change_nothing_and_cover_every_target(tiny_hf):
    model = _model(tiny_hf)
    with torch.no_grad():
        ref = model(TOKENS)
    attach_lora(model, LoraSpec(rank=4, alpha=8.0), seed=0)
    wrapped = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(wrapped) == len(LORA_TARGETS) * len(model.layers)
    model.reset_cache()
    with torch.no_grad():
        assert torch.equal(model(TOKENS), ref)  # B = 0
    names = adapter_tensors(model)
    assert len(names) == 2 * len(wrapped)
    assert names["layers.1.mlp.down_proj.adaptor.A.weight"].shape == (4, model.args.hidden_dim)
    assert names["layers.0.self_attn.k_proj.adaptor.B.weight"].shape == (model.args.n_kv_heads * model.args.head_dim, 4)


def test_lora_linear_computes_base_plus_scaled_low_rank(tiny_hf):
    model = _model(tiny_hf)
    base = model.layers[0].self_attn.q_proj
    w = base.weight.detach().clone()
    attach_lora(model, LoraSpec(rank=4, alpha=12.0, targets=("q_proj",)), seed=1)
    lora = model.layers[0].self_attn.q_proj
    torch.nn.init.normal_(lora.adaptor.B.weight, std=0.2)
    x = torch.randn(3, w.shape[1])
    want = x @ w.T + 3.0 * (x @ lora.adaptor.A.weight.T) @ lora.adaptor.B.weight.T
    torch.testing.assert_close(lora(x), want, rtol=0, atol=1e-5)


def test_merge_equals_the_adapted_model(tiny_hf):
    model = _model(tiny_hf)
    attach_lora(model, LoraSpec(rank=8, alpha=16.0), seed=2)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            torch.nn.init.normal_(m.adaptor.B.weight, std=0.05)
    with torch.no_grad():
        adapted = model(TOKENS)
    assert merge_lora(model) == len(LORA_TARGETS) * len(model.layers)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    model.reset_cache()
    with torch.no_grad():
        merged = model(TOKENS)
    torch.testing.assert_close(merged, adapted, rtol=0, atol=1e-4)
    fresh = _model(tiny_hf)  # and the adapters mattered: the merged model is not the original
    with torch.no_grad():
        assert (fresh(TOKENS) - merged).abs().max() > 1e-2


def test_load_adapters_refuses_shapes_that_do_not_fit(tiny_hf):
    src = _model(tiny_hf)
    attach_lora(src, LoraSpec(rank=4, alpha=8.0), seed=0)
    tensors = adapter_tensors(src)
    ok = _model(tiny_hf)
    assert load_adapters(ok, tensors, LoraSpec(rank=4, alpha=8.0), source="t") == len(LORA_TARGETS) * 2
    bad = dict(tensors)
    bad["layers.0.mlp.up_proj.adaptor.B.weight"] = torch.zeros(7, 4)
    with pytest.raises(
        EdgeError, match=r"layers.0.mlp.up_proj.adaptor.B.weight has shape \[7, 4\]; this model needs \[128, 4\]"
    ):
        load_adapters(_model(tiny_hf), bad, LoraSpec(rank=4, alpha=8.0), source="t")
    with pytest.raises(EdgeError, match="has shape"):
        load_adapters(_model(tiny_hf), tensors, LoraSpec(rank=8, alpha=8.0), source="t")  # another rank
    missing = {k: v for k, v in tensors.items() if "layers.1.self_attn.v_proj" not in k}
    with pytest.raises(EdgeError, match="layers.1.self_attn.v_proj.adaptor.A.weight is missing"):
        load_adapters(_model(tiny_hf), missing, LoraSpec(rank=4, alpha=8.0), source="t")
    nan = dict(tensors)
    nan["layers.0.self_attn.q_proj.adaptor.A.weight"] = torch.full((4, 64), float("nan"))
    with pytest.raises(EdgeError, match="non-finite"):
        load_adapters(_model(tiny_hf), nan, LoraSpec(rank=4, alpha=8.0), source="t")
