"""edge.quant.qat: the fake quantizers come from the export's scheme table, and what trains is what exports.

The guard against optimum-executorch#226: torchao's QAT convert step, edge's own export
quantization and the fake quantizer seen in training must round every weight identically.
"""

from __future__ import annotations

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig, WeightBits
from edge.core.errors import EdgeError
from edge.model import AttentionPath
from edge.quant.ptq import quantize_model
from edge.quant.qat import check_scale_agreement, convert_qat, prepare_qat
from edge.quant.scheme import LayerKind, scheme_config

torch.set_num_threads(1)
SCHEME = QuantizationConfig(linear=WeightBits.INT4, group_size=32, output=WeightBits.INT8, embedding=WeightBits.INT8)
TOKENS = torch.tensor([[0, 5, 17, 3, 250, 42, 99, 7, 8, 123, 64, 1]])


def _trained_like(ckpt, seed: int = 0):
    """A float model whose weights have moved (as after training), on the SEQUENCE path."""
    model = load_model(open_checkpoint(ckpt), max_context=16, dtype=torch.float32, full_logits=True)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * 0.01)
    model.set_attention_path(AttentionPath.SEQUENCE)
    return model


@pytest.mark.parametrize("kind", list(LayerKind))
def test_scheme_configs_round_the_same_in_training_and_export(kind):
    check_scale_agreement(scheme_config(SCHEME, kind), embedding=kind is LayerKind.EMBEDDING, group_size=32)


def test_a_scale_algorithm_changed_on_one_side_is_caught():
    """HQQ scales at export (ExecuTorch's and optimum-executorch's default) vs min/max in training."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup

    hqq = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(32), intx_choose_qparams_algorithm="hqq_scale_only"
    )
    with pytest.raises(EdgeError, match="choose different scales"):
        check_scale_agreement(hqq, embedding=False)


def test_prepare_refuses_a_table_whose_export_config_drifts(tiny_hf, monkeypatch):
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, PerGroup

    import edge.quant.qat

    drifted = Int8DynamicActivationIntxWeightConfig(
        weight_dtype=torch.int4, weight_granularity=PerGroup(32), intx_choose_qparams_algorithm="hqq_scale_only"
    )
    monkeypatch.setattr(edge.quant.qat, "scheme_config", lambda q, k: drifted if k is LayerKind.BLOCK_LINEAR else None)
    with pytest.raises(EdgeError, match="choose different scales"):
        prepare_qat(_trained_like(tiny_hf), SCHEME)


def test_every_layer_kind_is_fake_quantized_and_ties_kept(tiny_hf):
    from torchao.quantization.qat.embedding import FakeQuantizedEmbedding
    from torchao.quantization.qat.linear import FakeQuantizedLinear

    model = _trained_like(tiny_hf)
    assert prepare_qat(model, SCHEME) == list(LayerKind)
    fq = [n for n, m in model.named_modules() if isinstance(m, FakeQuantizedLinear)]
    assert len(fq) == 7 * len(model.layers) + 1 and "lm_head" in fq
    assert isinstance(model.embed_tokens, FakeQuantizedEmbedding)
    assert model.lm_head.weight is model.embed_tokens.weight  # tied checkpoint: one trained weight


def test_converted_model_equals_the_fake_quantized_forward(tiny_hf):
    model = _trained_like(tiny_hf)
    prepare_qat(model, SCHEME)
    with torch.no_grad():
        fake = model(TOKENS)  # [1, S, V]
    convert_qat(model, SCHEME)
    assert type(model.layers[0].mlp.up_proj.weight).__name__ == "IntxUnpackedToInt8Tensor"
    with torch.no_grad():
        real = model(TOKENS)
    torch.testing.assert_close(real, fake, rtol=0, atol=1e-4)


def test_export_quantization_equals_torchao_convert_bit_for_bit(tiny_hf):
    """edge.quant.ptq (what edge.export runs) and QATConfig(step="convert") give the same integers and per-channel
    scales, and the same group scales once rounded to bf16 (as XNNPACK stores them)."""
    a = _trained_like(tiny_hf, seed=3)
    b = _trained_like(tiny_hf, seed=3)
    prepare_qat(a, SCHEME)
    convert_qat(a, SCHEME)
    quantize_model(b, SCHEME, dtype=torch.float32)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
        if hasattr(pa, "qdata"):
            assert torch.equal(pa.qdata, pb.qdata), name
            grouped = pa.scale.dim() == 2 and pa.scale.shape[1] > 1
            assert torch.equal(pa.scale.bfloat16().float() if grouped else pa.scale, pb.scale), name
        else:
            assert torch.equal(pa, pb), name
