"""torch.export -> ExecuTorch: the program the stock LLM runner loads.

In:  a (quantized) `edge.model.Transformer` and the `RunnerMetadata` to embed.
Out: `export_program` -> `torch.export.ExportedProgram` with a dynamic prompt length;
     `lower_program` -> `ExecutorchProgramManager`, every supported op delegated
     to XNNPACK, the metadata as constant methods, the KV cache as mutable buffers;
     `write_pte` -> the .pte, written atomically (and hashed as it is written).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edge.core.io import HashingWriter, write_atomic
from edge.export.executorch_patches import (
    init_last_delegate_first,
    share_weights_in_preprocess_copies,
    skip_idle_xnnpack_passes,
    xnnpack_partitioner,
)
from edge.model import Transformer


@dataclass(frozen=True)
class RunnerMetadata:
    """The constant methods ExecuTorch's LLM runner reads from a .pte."""

    max_seq_len: int
    max_context_len: int
    vocab_size: int
    n_layers: int
    bos_id: int
    eos_ids: tuple[int, ...]

    def methods(self) -> dict[str, object]:
        """-> {method name: value}, ExecuTorch's names (extension/llm/runner/constants.h)."""
        return {
            "get_max_seq_len": self.max_seq_len,
            "get_max_context_len": self.max_context_len,
            "get_vocab_size": self.vocab_size,
            "get_n_layers": self.n_layers,
            "get_bos_id": self.bos_id,
            "get_eos_ids": list(self.eos_ids),
            "use_kv_cache": True,
            "use_sdpa_with_kv_cache": True,
            "enable_dynamic_shape": True,
        }


def export_program(model: Transformer, *, max_prefill: int | None = None) -> torch.export.ExportedProgram:
    """Transformer -> ExportedProgram of forward(tokens[1, S], input_pos[1]), S in 1..max_prefill.

    max_prefill (None: max_context - 1) bounds the tokens per call; the runner prefills a longer
    prompt in chunks of that many. Memory planning sizes every activation for it. torchao's tensor
    subclasses stay in the program: `lower_program`'s first decomposition unwraps them.
    """
    seq = torch.export.Dim("seq_len", min=1, max=max_prefill or model.max_context - 1)
    example = (torch.zeros((1, 2), dtype=torch.long), torch.tensor([0], dtype=torch.long))
    with torch.no_grad():
        return torch.export.export(model, example, dynamic_shapes=({1: seq}, None), strict=False)


def lower_program(
    ep: torch.export.ExportedProgram,
    metadata: RunnerMetadata,
    *,
    skip_idle_passes: bool = True,
    single_decomposition: bool = True,
    share_weights: bool = True,
):
    """ExportedProgram -> ExecutorchProgramManager delegated to XNNPACK.

    skip_idle_passes: leave out XNNPACK passes that cannot apply to a partition (same bytes, faster).
    single_decomposition: decompose once where the second decomposition could not change anything (same bytes, faster).
    share_weights: XNNPACK's preprocess copies of the partitions share their weights (same bytes, less memory).
    """
    import contextlib

    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    with (
        skip_idle_xnnpack_passes() if skip_idle_passes else contextlib.nullcontext(),
        share_weights_in_preprocess_copies() if share_weights else contextlib.nullcontext(),
    ):
        edge = to_edge_transform_and_lower(
            ep,
            partitioner=[xnnpack_partitioner(single_decomposition=single_decomposition)],
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
            constant_methods=metadata.methods(),
        )
    backend_config = ExecutorchBackendConfig(
        extract_delegate_segments=True,
        # Fuses torchao's dequantize_affine + embedding into quantized_decomposed::embedding_byte.
        do_quant_fusion_and_const_prop=True,
        memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
        sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
    )
    return init_last_delegate_first(edge, backend_config)


def pte_nbytes(program) -> int | None:
    """ExecutorchProgramManager -> the size its .pte will have, or None where this ExecuTorch cannot say."""
    try:
        return len(program._get_pte_data())  # the serialized Cord; private, so guarded
    except Exception:
        return None


def write_pte(program, path: Path) -> tuple[int, str]:
    """ExecutorchProgramManager -> .pte at `path` (temp file + rename); returns (its size in bytes, its sha256),
    the digest computed from the bytes as they are written."""
    digest = ""

    def write(f) -> None:
        nonlocal digest
        hashing = HashingWriter(f)
        program.write_to_file(hashing)
        digest = hashing.hexdigest()

    write_atomic(Path(path), write)
    return Path(path).stat().st_size, digest


def pte_structure(path: Path) -> dict:
    """A .pte -> what its forward runs: delegate calls, backends, and the kernels left outside a delegate.

    {"delegate_calls": int, "backends": {id: n}, "kernels": {op name: n}, "planned_bytes": int} - how fragmented the
    partitioning is (each delegate call is a boundary where XNNPACK hands tensors back).
    """
    from collections import Counter

    from executorch.exir._serialize._program import deserialize_pte_binary

    loaded = deserialize_pte_binary(Path(path).read_bytes())
    program = getattr(loaded, "program", loaded)  # newer ExecuTorch wraps it with its named data
    plan = next(p for p in program.execution_plan if p.name == "forward")
    kernels: Counter[str] = Counter()
    calls = 0
    for chain in plan.chains:
        for instruction in chain.instructions:
            args = instruction.instr_args
            if type(args).__name__ == "DelegateCall":
                calls += 1
            elif type(args).__name__ == "KernelCall":
                kernels[plan.operators[args.op_index].name] += 1
    return {
        "delegate_calls": calls,
        "backends": dict(Counter(d.id for d in plan.delegates)),
        "kernels": dict(kernels),
        "planned_bytes": sum(plan.non_const_buffer_sizes),
    }  # activations + KV cache, allocated at load
