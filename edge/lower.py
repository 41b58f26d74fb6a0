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
from torch import nn

from edge.io import HashingWriter, write_atomic
from edge.model import Transformer

# The runner's peak memory is its steady state plus the largest delegate's weights as the .pte stores
# them: XNNPACK packs a delegate's weights into its own layout while the stored copy is mapped, and the
# stored copy goes only once the whole delegate is built. On the 1B the output layer is by far the largest
# delegate: peak minus steady RSS measured 126 MiB with it at int4 (125 MiB) and 236 MiB at int8. Stored
# as chunks of rows, each its own delegate, it is packed a chunk at a time (at most 16 or 32 MiB).
OUTPUT_CHUNK_ROWS = 16384


class RowChunkedLinear(nn.Module):
    """x [..., D] -> cat over chunks k of x @ W_k^T [..., V]: one linear, its rows stored as separate linears."""

    def __init__(self, chunks: list[nn.Linear]) -> None:
        super().__init__()
        self.chunks = nn.ModuleList(chunks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([chunk(x) for chunk in self.chunks], dim=-1)  # [..., V]


def split_output_layer(model: Transformer, *, rows: int = OUTPUT_CHUNK_ROWS) -> int:
    """Transformer (quantized or not) -> its lm_head as a `RowChunkedLinear` of `rows`-row chunks, in place,
    for lowering (`lower_program` makes each chunk its own delegate). -> the number of chunks; 1: left as it was."""
    from edge.quantize import row_slice

    head = model.lm_head
    if not isinstance(head, nn.Linear) or head.out_features <= rows:
        return 1
    chunks = []
    for r0 in range(0, head.out_features, rows):
        weight = row_slice(head.weight.detach(), r0, min(r0 + rows, head.out_features))
        chunk = nn.Linear(head.in_features, weight.shape[0], bias=False, device="meta")
        chunk.weight = nn.Parameter(weight, requires_grad=False)
        chunks.append(chunk)
    model.lm_head = RowChunkedLinear(chunks)
    return len(chunks)


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


# XNNPACK's preprocess runs its 17 graph passes on every partition, each a full retrace with fake tensors.
# These rewrite only the ops named beside them; a pass is skipped for a partition that has none of those
# ops, where it could not change anything. The program's bytes are the same with and without the skips
# (tests/export/test_lowering.py); the lowering takes less time.
_SKIPPABLE_XNNPACK_PASSES = {
    "ConvertToUpsampleBilinear2d": ("upsample", "index"),
    "ConvertToSDPAPass": ("softmax", "scaled_dot_product"),
    "FuseBatchNormPass": ("batch_norm",),
    "DecomposeBatchNorm": ("batch_norm",),
    "DecomposeConcatenate": ("aten.cat",),
    "Conv1dUnsqueezePass": ("convolution",),
    "PReLUReshapePass": ("prelu",),
    "InsertPadQDQPass": ("pad",),
}


def _skip_idle_xnnpack_passes():
    """-> a context manager under which XNNPACK's preprocess leaves out the passes that cannot apply (a no-op
    context where this ExecuTorch's preprocess is not built the way this relies on)."""
    import contextlib
    from unittest import mock

    try:
        from executorch.backends.xnnpack import xnnpack_preprocess
        from executorch.backends.xnnpack._passes import XNNPACKPassManager
    except ImportError:
        return contextlib.nullcontext()
    if getattr(xnnpack_preprocess, "XNNPACKPassManager", None) is not XNNPACKPassManager:
        return contextlib.nullcontext()

    class PassManager(XNNPACKPassManager):
        def __init__(self, exported_program, passes=None) -> None:
            super().__init__(exported_program, passes)
            if passes is None:
                ops = " ".join(str(n.target).lower() for n in exported_program.graph.nodes if n.op == "call_function")
                self.passes = [p for p in self.passes if p.__name__ not in _SKIPPABLE_XNNPACK_PASSES
                               or any(k in ops for k in _SKIPPABLE_XNNPACK_PASSES[p.__name__])]

    return mock.patch.object(xnnpack_preprocess, "XNNPACKPassManager", PassManager)


def _in_output_chunk(node) -> bool:
    return any(".chunks." in f".{path}." and "lm_head" in path for path, _ in node.meta.get("nn_module_stack", {}).values())


def _partitioner():
    """-> ExecuTorch's XNNPACK partitioner, except that each output-layer chunk (`split_output_layer`) is a
    partition of its own (its linear and its input's dynamic quantization); everything else is grouped as usual."""
    import itertools

    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir.backend.canonical_partitioners.pattern_op_partitioner import (
        generate_grouped_partitions_from_list_of_nodes,
    )
    from torch.fx.passes.infra.partitioner import Partition

    class Partitioner(XnnpackPartitioner):
        def generate_partitions(self, ep):
            matched = self.get_matched_nodes_from_configs(ep)  # [nodes of one op and its deps], what the base groups
            chunks = [m for m in matched if any(_in_output_chunk(n) for n in m)]
            rest = [m for m in matched if not any(_in_output_chunk(n) for n in m)]
            parts = generate_grouped_partitions_from_list_of_nodes(ep.graph_module, rest)
            ids = itertools.count(max((p.id for p in parts), default=-1) + 1)
            return parts + [Partition(id=next(ids), nodes=list(dict.fromkeys(m))) for m in chunks]

    return Partitioner()


def lower_program(ep: torch.export.ExportedProgram, metadata: RunnerMetadata, *, skip_idle_passes: bool = True):
    """ExportedProgram -> ExecutorchProgramManager delegated to XNNPACK.

    skip_idle_passes: leave out XNNPACK passes that cannot apply to a partition (same bytes, faster).
    An output layer split by `split_output_layer` becomes one delegate per chunk.
    """
    import contextlib

    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    with _skip_idle_xnnpack_passes() if skip_idle_passes else contextlib.nullcontext():
        edge = to_edge_transform_and_lower(
            ep,
            partitioner=[_partitioner()],
            compile_config=EdgeCompileConfig(_check_ir_validity=False, _skip_dim_order=True),
            constant_methods=metadata.methods(),
        )
    return edge.to_executorch(
        ExecutorchBackendConfig(
            extract_delegate_segments=True,
            # Fuses torchao's dequantize_affine + embedding into quantized_decomposed::embedding_byte.
            do_quant_fusion_and_const_prop=True,
            memory_planning_pass=MemoryPlanningPass(alloc_graph_input=False),
            sym_shape_eval_pass=ConstraintBasedSymShapeEvalPass(),
        )
    )


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
    return {"delegate_calls": calls, "backends": dict(Counter(d.id for d in plan.delegates)), "kernels": dict(kernels),
            "planned_bytes": sum(plan.non_const_buffer_sizes)}  # activations + KV cache, allocated at load
