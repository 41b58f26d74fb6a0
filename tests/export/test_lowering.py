"""edge.export.lower: the lowering's shortcuts (XNNPACK passes that cannot apply skipped, one decomposition
instead of two,
preprocess copies sharing the weights) leave the program byte for byte the same; the delegate table is reversed."""

from __future__ import annotations

import sys
from unittest import mock

import pytest
import torch

from edge.checkpoint import load_model, open_checkpoint
from edge.config import QuantizationConfig, WeightBits
from edge.export.lower import RunnerMetadata, export_program, lower_program
from edge.quant.ptq import quantize_model


def _tiny_model(tiny_hf, *, quantized: bool):
    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=None if quantized else torch.float32)
    if quantized:
        quantize_model(
            model,
            QuantizationConfig(linear=WeightBits.INT4, output=WeightBits.INT8, embedding=WeightBits.INT8),
            dtype=torch.float32,
        )
    meta = RunnerMetadata(
        max_seq_len=32,
        max_context_len=64,
        vocab_size=model.args.vocab_size,
        n_layers=len(model.layers),
        bos_id=0,
        eos_ids=(1,),
    )
    return model, meta


@pytest.mark.parametrize("quantized", [True, False], ids=["8da4w", "fp32"])
def test_lowering_shortcuts_keep_the_program_bytes(tiny_hf, quantized):
    import executorch.backends.xnnpack._passes as xnnpack_passes
    from torch.export import ExportedProgram

    import edge.export.executorch_patches as patches

    model, meta = _tiny_model(tiny_hf, quantized=quantized)
    data, passes_run, decompositions, shared = {}, {}, {}, {True: [], False: []}
    real_copy = patches.copy_sharing_weights

    def copying(program):  # records whether each copy handed to XNNPACK's preprocess shares the weights
        copied = real_copy(program)
        assert copied.graph_module is not program.graph_module and copied.state_dict is not program.state_dict
        shared[fast].append(all(copied.state_dict[k] is v for k, v in program.state_dict.items()))
        return copied

    real_decompose = ExportedProgram.run_decompositions

    def decomposing(program, *args, **kwargs):  # counts the decompositions of the whole program
        if sys._getframe(1).f_code.co_name == "_gen_edge_manager_for_partitioners":
            decompositions[fast] = decompositions.get(fast, 0) + 1
        return real_decompose(program, *args, **kwargs)

    for fast in (True, False):
        ep = export_program(model, max_prefill=32)  # (lowering consumes the program's constants)
        with (
            mock.patch.object(xnnpack_passes, "_transform", wraps=xnnpack_passes._transform) as transform,
            mock.patch.object(ExportedProgram, "run_decompositions", decomposing),
            mock.patch.object(patches, "copy_sharing_weights", side_effect=copying),
        ):
            data[fast] = bytes(
                lower_program(ep, meta, skip_idle_passes=fast, single_decomposition=fast, share_weights=fast).buffer
            )
        passes_run[fast] = transform.call_count
    assert data[True] == data[False]
    # XNNPACK runs 17 passes per partition; 13 of them cannot apply to edge's graph and are skipped in each
    partitions = passes_run[False] // 17
    assert (
        passes_run[False] == 17 * partitions and passes_run[True] == 4 * partitions and partitions >= len(model.layers)
    ), passes_run
    # functionalize + two decompositions (EDGE_DO_NOT_DECOMP) against functionalize + one
    assert decompositions == {False: 3, True: 2} if quantized else decompositions[True] <= decompositions[False], (
        decompositions
    )
    # every partition's preprocess copy shares the weights (and none is made that way without the shortcut)
    assert len(shared[True]) == partitions and all(shared[True]) and not shared[False], shared


def test_delegates_are_built_last_first_and_run_in_order(tiny_hf, tmp_path):
    """The forward's delegate table is reversed (the runtime builds delegates in table order, so the output
    layer's, the largest and last to run, is packed first while little else is resident); the calls still run
    in execution order, and the program computes what the unreversed one computes."""
    from executorch.exir._serialize._program import deserialize_pte_binary

    from edge.evaluate.pte_model import load_pte
    from edge.export.lower import write_pte

    model, meta = _tiny_model(tiny_hf, quantized=True)
    paths = {}
    for reverse in (False, True):
        with (
            mock.patch("edge.export.lower.init_last_delegate_first", side_effect=lambda e, c: e.to_executorch(c))
            if not reverse
            else mock.MagicMock()
        ):
            paths[reverse] = tmp_path / f"reverse{reverse}.pte"
            write_pte(lower_program(export_program(model, max_prefill=32), meta), paths[reverse])
    calls = {}
    for reverse, path in paths.items():
        loaded = deserialize_pte_binary(path.read_bytes())
        plan = next(p for p in getattr(loaded, "program", loaded).execution_plan if p.name == "forward")
        calls[reverse] = [
            i.instr_args.delegate_index
            for c in plan.chains
            for i in c.instructions
            if type(i.instr_args).__name__ == "DelegateCall"
        ]
    n = len(calls[False])
    assert n >= len(model.layers) and calls[False] == list(range(n)) and calls[True] == list(range(n))[::-1]
    tokens = torch.randint(2, model.args.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        load_pte(paths[True]).forward(tokens, 0), load_pte(paths[False]).forward(tokens, 0), rtol=0, atol=0
    )


def test_a_patch_that_no_longer_applies_warns_once_and_lowers_as_executorch_does(tiny_hf, monkeypatch, capsys):
    """When ExecuTorch is not built the way a patch relies on (here: preprocess builds its passes with another class,
    and XNNPACK copies its partitions its own way), the export warns once per patch, naming the
    ExecuTorch version, and the program is the one ExecuTorch's stock lowering makes."""
    from importlib import metadata

    from executorch.backends.xnnpack import xnnpack_preprocess

    import edge.export.executorch_patches as patches

    model, meta = _tiny_model(tiny_hf, quantized=True)
    stock = bytes(lower_program(export_program(model, max_prefill=32), meta, skip_idle_passes=False).buffer)
    monkeypatch.setattr(patches, "_warned", set())
    other = type("OtherPassManager", (xnnpack_preprocess.XNNPACKPassManager,), {})
    monkeypatch.setattr(xnnpack_preprocess, "XNNPACKPassManager", other)
    capsys.readouterr()
    lowered = [bytes(lower_program(export_program(model, max_prefill=32), meta).buffer) for _ in range(2)]
    err = capsys.readouterr().err
    assert lowered == [stock, stock]
    version = metadata.version("executorch")
    assert err.count("warning: edge's skip-idle-XNNPACK-passes patch does not apply") == 1, err
    assert f"executorch {version}" in err and "stock behaviour" in err

    import copy

    from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend

    own = classmethod(lambda cls, program, compile_specs: copy.deepcopy(program))  # a backend that copies its own way
    monkeypatch.setattr(XnnpackBackend, "copy_exported_program_for_preprocess", own, raising=False)
    capsys.readouterr()
    assert bytes(lower_program(export_program(model, max_prefill=32), meta).buffer) == stock
    err = capsys.readouterr().err
    assert err.count("share-weights-in-preprocess-copies patch does not apply") == 1, err
