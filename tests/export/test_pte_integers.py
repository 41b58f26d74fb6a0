"""The integers and scales inside an 8da4w .pte's XNNPACK blobs are exactly the eager torchao model's.

In: a tiny checkpoint (3 layers, FFN 96, so q/k/v/o/gate/up/down differ in shape) exported with the
shipped llama3_2_1b_8da4w config, and the same checkpoint quantized eagerly as the export does.
Out: tests/xnnpack_blob.py reads each int4 weight back bit-exactly, and the .pte holds no other.
"""

from __future__ import annotations

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import load_config
from edge.model import block_linears
from edge.quant.ptq import quantize_model
from tests.conftest import MAX_CONTEXT, export_tiny, make_hf_checkpoint
from tests.xnnpack_blob import claim, quantized_int8_weights, quantized_weights, unpack_int4

LAYERS = 3
CONFIG = "llama3_2_1b_8da4w"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_hf_checkpoint(tmp_path_factory.mktemp("ints") / "ckpt", layers=LAYERS, ffn=96)


@pytest.fixture(scope="module")
def pte(ckpt, tmp_path_factory):
    return export_tiny(ckpt, tmp_path_factory.mktemp("ints") / "out", CONFIG) / "model.pte"


@pytest.fixture(scope="module")
def eager(ckpt):
    """The same checkpoint quantized as the export quantizes it (tests/formats/conftest.py `eager`)."""
    cfg = load_config(config=CONFIG, overrides={"output": "unused"})
    model = load_model(open_checkpoint(ckpt), max_context=MAX_CONTEXT, dtype=None)
    quantize_model(model, cfg.quantization, dtype=torch.float32)
    return model


def test_unpack_inverts_executorchs_own_packing():
    """Odd width (a padded last nibble) and every int4 value, through node_visitor's convert_to_qc4w."""
    from executorch.backends.xnnpack.operators.node_visitor import NodeVisitor

    x = torch.randint(-8, 8, (6, 33), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    x[0, :16] = torch.arange(-8, 8, dtype=torch.int8)
    packed = NodeVisitor.convert_to_qc4w(x.clone())
    assert packed.dtype == torch.uint8 and packed.shape == (6, 17)
    assert int(packed[0, 0]) == 0x10  # -8 -> nibble 0 (low), -7 -> nibble 1 (high)
    assert torch.equal(unpack_int4(packed, 33), x)


def test_int4_integers_and_scales_equal_eager_torchao(pte, eager):
    got = quantized_weights(pte)
    assert len(got) == 7 * LAYERS
    for w in got:
        assert w.qdata.dtype == torch.int8 and w.qdata.shape == w.dims
        assert int(w.qdata.min()) >= -8 and int(w.qdata.max()) <= 7
        assert w.group_size == 32 and w.scale.dtype == torch.float32 and w.scale.shape == (w.dims[0], w.dims[1] // 32)
    # Matching is by value: each eager linear claims the one unclaimed .pte weight whose dims and integers are
    # identical (random weights make a collision practically impossible), so a wrong nibble order, offset or
    # layout finds no partner; each pair's scales must then be equal too, and every .pte weight be claimed.
    # Order would not do: partitions are cut at the SDPA custom op, so a blob holds layer i's o_proj and MLP
    # with layer i+1's q/k/v, and the blobs come last layer first.
    unclaimed = list(got)
    for i, block in enumerate(eager.layers):
        for name, linear in block_linears(block):
            ref = linear.weight
            assert torch.count_nonzero(ref.zero_point) == 0  # symmetric: XNNPACK's qb4w has no zero points
            w = claim(unclaimed, ref.qdata, name=f"layers.{i}.{name}")
            assert torch.equal(w.scale, ref.scale.float()), f"layers.{i}.{name} scales differ"
    assert not unclaimed


def test_int8_output_layer_equals_eager_torchao(pte, eager):
    got = quantized_int8_weights(pte)
    assert len(got) == 1  # the output layer; the int8 embedding is ExecuTorch's embedding_byte, not XNNPACK
    ref = eager.lm_head.weight
    assert got[0].dims == tuple(ref.qdata.shape)
    assert torch.equal(got[0].qdata, ref.qdata)
    assert torch.equal(got[0].scale, ref.scale.float().reshape(-1))
