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


@pytest.mark.parametrize("output", [WeightBits.INT4, WeightBits.INT8])
def test_output_layer_in_row_chunks_is_one_delegate_per_chunk_with_the_same_logits(tiny_hf, tmp_path, output):
    """split_output_layer: the output layer's rows as chunks, each packed by its own XNNPACK delegate (so the
    runner holds one chunk's stored weights at a time while packing): one more delegate call per chunk, nothing
    left outside XNNPACK that was not before, and the logits of the unsplit program to float rounding."""
    from edge.lower import pte_structure, split_output_layer, write_pte
    from edge.runtime import load_pte

    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=None)
    quantize_model(model, QuantizationConfig(linear=WeightBits.INT4, output=output, embedding=WeightBits.INT8),
                   dtype=torch.float32)
    meta = RunnerMetadata(max_seq_len=32, max_context_len=64, vocab_size=model.args.vocab_size, n_layers=len(model.layers),
                          bos_id=0, eos_ids=(1,))
    vocab = model.args.vocab_size
    paths = {}
    for rows in (vocab, 96):
        n = split_output_layer(model, rows=rows)
        assert n == (1 if rows == vocab else -(-vocab // 96))
        paths[n] = tmp_path / f"chunks{n}.pte"
        write_pte(lower_program(export_program(model, max_prefill=32), meta), paths[n])
    (one, many), chunks = sorted(paths), max(paths)
    s1, sk = pte_structure(paths[one]), pte_structure(paths[many])
    # a delegate per chunk, and one for the cat of their outputs (measured: 4 -> 9 with 4 chunks)
    assert sk["delegate_calls"] - s1["delegate_calls"] in (chunks, chunks + 1), (s1, sk)
    assert set(sk["kernels"]) <= set(s1["kernels"]) | {"aten::cat"}, (s1["kernels"], sk["kernels"])
    tokens = torch.randint(2, vocab, (1, 12), generator=torch.Generator().manual_seed(0))
    ref, got = load_pte(paths[one]).forward(tokens, 0), load_pte(paths[many]).forward(tokens, 0)
    assert got.shape == ref.shape == (1, vocab)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
