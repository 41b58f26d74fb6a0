"""edge.quant.ptq: Meta's scheme through torchao, with weight error bounds."""

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig, WeightBits
from edge.core.errors import EdgeError
from edge.quant.ptq import quantize_model
from edge.quant.scheme import sqnr_db
from tests.conftest import make_hf_checkpoint

SCHEME = QuantizationConfig(linear=WeightBits.INT4, group_size=32, output=WeightBits.INT8, embedding=WeightBits.INT8)


def test_weight_sqnr_bounds(tiny_hf):
    model = load_model(open_checkpoint(tiny_hf), max_context=32, dtype=None)
    report = quantize_model(model, SCHEME, dtype=torch.float32)
    # Gaussian weights: int4 symmetric groups of 32 give ~20 dB, int8 per channel ~40 dB.
    assert 17 < report.min_sqnr("self_attn") < 24 and 17 < report.min_sqnr("mlp") < 24
    assert report.min_sqnr("lm_head") > 35 and report.min_sqnr("embed_tokens") > 35
    assert len(report.weight_sqnr_db) == 2 * 7 + 2


def test_quantized_model_stays_close_to_float(tiny_hf):
    ref = load_model(open_checkpoint(tiny_hf), max_context=32, dtype=torch.float32, full_logits=True)
    model = load_model(open_checkpoint(tiny_hf), max_context=32, dtype=None, full_logits=True)
    quantize_model(model, SCHEME, dtype=torch.float32)
    tokens = torch.randint(0, ref.args.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = ref(tokens, torch.tensor([0])), model(tokens, torch.tensor([0]))
    assert 8 < sqnr_db(a, b) < 40  # quantized: close, but not identical


def test_group_size_must_divide_each_linear(tmp_path):
    ckpt = make_hf_checkpoint(tmp_path / "c", hidden=64, ffn=96)  # down_proj input 96 % 64 != 0
    model = load_model(open_checkpoint(ckpt), max_context=16, dtype=None)
    with pytest.raises(
        EdgeError, match=r"group size 64 does not divide the input width 96 of layers\.0\.mlp\.down_proj"
    ):
        quantize_model(model, QuantizationConfig(linear=WeightBits.INT4, group_size=64), dtype=torch.float32)


@pytest.mark.parametrize("bits,group", [(WeightBits.INT4, 32), (WeightBits.INT8, None)])
def test_row_chunked_quantization_equals_one_piece(bits, group):
    from torchao.quantization import quantize_

    from edge.quant.ptq import quantize_rows
    from edge.quant.scheme import QuantReport, bf16_exact, linear_config

    w = torch.randn(300, 64, generator=torch.Generator().manual_seed(0))
    whole = torch.nn.Linear(64, 300, bias=False)
    whole.weight = torch.nn.Parameter(w.clone(), requires_grad=False)
    quantize_(whole, linear_config(bits, group))
    torchao_scale = whole.weight.scale.clone()
    whole.weight.scale.copy_(bf16_exact(torchao_scale))  # edge rounds group scales to bf16, as XNNPACK stores them
    chunked = torch.nn.Linear(64, 300, bias=False)
    chunked.weight = torch.nn.Parameter(w.clone(), requires_grad=False)
    report = QuantReport()
    quantize_rows(
        chunked, linear_config(bits, group), name="x", report=report, rows_per_chunk=64
    )  # 5 chunks, last partial
    for field in ("qdata", "scale", "zero_point"):
        assert torch.equal(getattr(chunked.weight, field), getattr(whole.weight, field))
    rel = ((chunked.weight.scale - torchao_scale).abs() / torchao_scale).max()
    if group is None:  # per-channel scales stay fp32, as XNNPACK keeps them
        assert rel == 0
    else:  # group scales rounded to bf16 (8 significant bits: half an ulp is 2^-8 relative)
        assert 0 < rel <= 2**-8 and torch.equal(chunked.weight.scale.to(torch.bfloat16).float(), chunked.weight.scale)
    x = torch.randn(4, 64)
    torch.testing.assert_close(chunked(x), whole(x), rtol=0, atol=0)
    assert report.weight_sqnr_db["x.weight"] == pytest.approx(sqnr_db(w, whole.weight), abs=1e-3)


def test_gptq_with_float_targets_ends_closer_to_the_float_logits(tiny_hf):
    """GPTQ, then GPTQ fitting each linear and the output layer to the float model's outputs
    (gptq.float_targets): on tokens it was not calibrated on, the second is closer to float."""
    from edge.quant.ptq import GPTQInputs

    gen = torch.Generator().manual_seed(0)
    ref = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=torch.float32, full_logits=True)
    calib = torch.randint(0, ref.args.vocab_size, (16, 48), generator=gen)
    held_out = torch.randint(0, ref.args.vocab_size, (1, 48), generator=gen)
    scheme = QuantizationConfig(
        linear=WeightBits.INT4, group_size=32, output=WeightBits.INT8, embedding=WeightBits.INT8
    )
    db = {}
    for float_targets in (False, True):
        model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=None, full_logits=True)
        quantize_model(
            model, scheme, dtype=torch.float32, gptq=GPTQInputs(tokens=calib, damp=0.01, float_targets=float_targets)
        )
        with torch.no_grad():
            db[float_targets] = sqnr_db(ref(held_out, torch.tensor([0])), model(held_out, torch.tensor([0])))
    assert db[True] > db[False] + 0.3, db  # measured 12.07 dB against 11.48 (random weights: small errors to undo)


def test_sum_of_squares_matches_float64():
    """The float32 dot product behind every SQNR agrees with a float64 sum to 5e-4 (a 0.002 dB change at most).

    Measured on these 8M values: 1.9e-4 with one torch thread (as the test workers run), under 1e-4 with two."""
    from edge.quant.scheme import sum_of_squares

    x = torch.randn(4096, 2048, generator=torch.Generator().manual_seed(0)) * 0.02
    exact = float(x.double().pow(2).sum())
    assert abs(sum_of_squares(x) - exact) / exact < 5e-4
    assert sum_of_squares(x.to(torch.bfloat16)) > 0
