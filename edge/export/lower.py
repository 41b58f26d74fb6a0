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


# XNNPACK's preprocess runs its 17 graph passes on every partition, each a full retrace with fake tensors.
# These rewrite only the ops named beside them (or, for PropagateCustomMetaPass, only q/dq nodes whose
# parent carries a "custom" meta entry); a pass is skipped for a partition that has none of them, where it
# could not change anything. The program's bytes are the same with and without the skips
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
    "ConvertToLinearPass": ("aten.mm.", "addmm", "bmm"),
    "FuseActivationPass": ("relu", "hardtanh"),
    "RemoveGetItemPass": ("max_pool2d_with_indices", "aten.max.dim"),
    "RemoveRedundantCopyPass": ("_to_copy",),
    "PropagateCustomMetaPass": (),  # decided by _has_custom_meta
}


def _has_custom_meta(graph) -> bool:
    """-> whether any node feeding a node carries meta["custom"] (what PropagateCustomMetaPass copies onto q/dq)."""
    return any("custom" in arg.meta for n in graph.nodes for arg in n.all_input_nodes)


def _pass_applies(name: str, ops: str, graph) -> bool:
    if name not in _SKIPPABLE_XNNPACK_PASSES:
        return True
    if name == "PropagateCustomMetaPass":
        return _has_custom_meta(graph)
    return any(k in ops for k in _SKIPPABLE_XNNPACK_PASSES[name])


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
                graph = exported_program.graph
                ops = " ".join(str(n.target).lower() for n in graph.nodes if n.op == "call_function")
                self.passes = [p for p in self.passes if _pass_applies(p.__name__, ops, graph)]

    return mock.patch.object(xnnpack_preprocess, "XNNPACKPassManager", PassManager)


def _share_weights_in_preprocess_copies():
    """-> a context manager under which the copy ExecuTorch makes of each partition for XNNPACK's preprocess shares
    the partition's weight tensors instead of copying them (a no-op context where ExecuTorch is not built as this
    relies on).

    `lower_all_submodules_to_backend` deep-copies every partition's program, weights included, before preprocessing
    any of them, so the whole model's weights are held twice (1B: +1.1 GiB, the lowering's peak). The copy guards
    against a backend changing the graph; XNNPACK's preprocess reads the weights and packs new buffers, and never
    writes to the tensors it reads, so the graph and its containers are still copied and only the tensors are shared.
    """
    import contextlib
    from unittest import mock

    try:
        from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend
    except ImportError:
        return contextlib.nullcontext()
    hook = "copy_exported_program_for_preprocess"
    if hook in vars(XnnpackBackend) or not hasattr(XnnpackBackend, hook):  # XNNPACK copies its own way: leave it be
        return contextlib.nullcontext()

    copy = classmethod(lambda cls, program, compile_specs: copy_sharing_weights(program))
    return mock.patch.object(XnnpackBackend, hook, copy, create=True)


def copy_sharing_weights(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """ExportedProgram -> a deep copy of it whose weights and constants are the original's tensor objects."""
    import copy

    tensors = [*program.state_dict.values(), *program.constants.values()]
    return copy.deepcopy(program, {id(t): t for t in tensors if isinstance(t, torch.Tensor)})


def _xnnpack_partitioner(*, single_decomposition: bool):
    """-> XNNPACK's partitioner; with single_decomposition, one that lets `to_edge_transform_and_lower` decompose
    the program once instead of twice where that cannot change the result.

    XNNPACK hands back a per-node check with the ops it wants kept whole (aten.linear here), and a partitioner
    with a check sends ExecuTorch down its EDGE_DO_NOT_DECOMP path: decompose keeping those ops, re-tag the nodes
    that pass the check, decompose again with the full table (a full retrace each, about 15 s at 1B). When every
    such node in the program passes the check, the second decomposition would keep all of them anyway, so the
    check is withheld and ExecuTorch takes its one-decomposition path. Otherwise XNNPACK's answer is returned as it is.
    """
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner

    class Partitioner(XnnpackPartitioner):
        def ops_to_not_decompose(self, ep):
            ops, check = super().ops_to_not_decompose(ep)
            if check is None or not single_decomposition:
                return ops, check
            keep = set(ops)
            kept = [n for n in ep.graph.nodes if n.op == "call_function" and n.target in keep]
            try:
                every_node_kept = all(check(n) for n in kept)
            except Exception:  # a check written for the decomposed graph may not read this one: ExecuTorch's path
                every_node_kept = False
            return (ops, None) if every_node_kept else (ops, check)

    return Partitioner()


def lower_program(ep: torch.export.ExportedProgram, metadata: RunnerMetadata, *, skip_idle_passes: bool = True,
                  single_decomposition: bool = True, share_weights: bool = True):
    """ExportedProgram -> ExecutorchProgramManager delegated to XNNPACK.

    skip_idle_passes: leave out XNNPACK passes that cannot apply to a partition (same bytes, faster).
    single_decomposition: decompose once where the second decomposition could not change anything (same bytes, faster).
    share_weights: XNNPACK's preprocess copies of the partitions share their weights (same bytes, less memory).
    """
    import contextlib

    from executorch.exir import EdgeCompileConfig, ExecutorchBackendConfig, to_edge_transform_and_lower
    from executorch.exir.passes import MemoryPlanningPass
    from executorch.exir.passes.sym_shape_eval_pass import ConstraintBasedSymShapeEvalPass

    with (_skip_idle_xnnpack_passes() if skip_idle_passes else contextlib.nullcontext(),
          _share_weights_in_preprocess_copies() if share_weights else contextlib.nullcontext()):
        edge = to_edge_transform_and_lower(
            ep,
            partitioner=[_xnnpack_partitioner(single_decomposition=single_decomposition)],
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


def init_last_delegate_first(edge, backend_config):
    """EdgeProgramManager (lowered) -> its ExecutorchProgramManager, with the forward's delegate table reversed.

    The runtime builds delegates in table order (`Method::init`), and XNNPACK packs a delegate's weights
    while the stored copy in the mapped .pte is still resident, releasing the copy once that delegate is
    built. So the runner's peak RSS is its steady state plus the stored weights of the delegate built
    last, and in execution order that is the output layer, by far the largest (1B: peak minus steady RSS
    measured 126 MiB with it at int4, 236 MiB at int8). Built first, its transient comes while little
    else is resident. The instructions (what runs, in which order) are unchanged; only DelegateCall
    indices are renumbered. The manager serializes the program when it is made, so that is held back
    and done once, after the reordering. Where this ExecuTorch is not built as this relies on, the
    program is made and returned as ExecuTorch makes it.
    """
    from unittest import mock

    from executorch.exir.program import _program
    from executorch.exir.schema import DelegateCall

    serialize = getattr(_program, "serialize_for_executorch", None)
    if serialize is None:
        return edge.to_executorch(backend_config)
    with mock.patch.object(_program, "serialize_for_executorch", lambda *_args, **_kwargs: (None, {})):
        program = edge.to_executorch(backend_config)
    output = getattr(program, "_emitter_output", None)
    if output is None or not hasattr(program, "_data_serializer") or not hasattr(program, "_named_data"):
        return edge.to_executorch(backend_config)  # not the manager this expects: made again, unchanged
    for plan in output.program.execution_plan:
        n = len(plan.delegates)
        plan.delegates = plan.delegates[::-1]
        for chain in plan.chains:
            for instruction in chain.instructions:
                if isinstance(instruction.instr_args, DelegateCall):
                    instruction.instr_args.delegate_index = n - 1 - instruction.instr_args.delegate_index
    program._pte_data, program._tensor_data = serialize(output, backend_config, program._data_serializer, program._named_data)
    return program


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
