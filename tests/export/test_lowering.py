"""edge.lower: skipping XNNPACK passes that cannot apply leaves the program byte for byte the same."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig, WeightBits
from edge.lower import RunnerMetadata, export_program, lower_program
from edge.quantize import quantize_model


@pytest.mark.parametrize("quantized", [True, False], ids=["8da4w", "fp32"])
def test_skipping_idle_xnnpack_passes_keeps_the_program_bytes(tiny_hf, quantized):
    import executorch.backends.xnnpack._passes as xnnpack_passes

    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=None if quantized else torch.float32)
    if quantized:
        quantize_model(model, QuantizationConfig(linear=WeightBits.INT4, output=WeightBits.INT8, embedding=WeightBits.INT8),
                       dtype=torch.float32)
    meta = RunnerMetadata(max_seq_len=32, max_context_len=64, vocab_size=model.args.vocab_size, n_layers=len(model.layers),
                          bos_id=0, eos_ids=(1,))
    data, passes_run = {}, {}
    for skip in (True, False):
        ep = export_program(model, max_prefill=32)  # (lowering consumes the program's constants)
        with mock.patch.object(xnnpack_passes, "_transform", wraps=xnnpack_passes._transform) as transform:
            data[skip] = bytes(lower_program(ep, meta, skip_idle_passes=skip).buffer)
        passes_run[skip] = transform.call_count
    assert data[True] == data[False]
    # XNNPACK runs 17 passes per partition; 8 of them cannot apply to edge's graph and are skipped in each
    partitions = passes_run[False] // 17
    assert passes_run[False] == 17 * partitions and passes_run[True] == 9 * partitions and partitions >= len(model.layers), passes_run
