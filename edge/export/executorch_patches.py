"""Where edge changes how ExecuTorch lowers a program: each a shortcut that leaves the program's bytes the same.

In:  ExecuTorch's XNNPACK preprocess, partitioner and program manager, as executorch==1.5.1 builds them.
Out: context managers and a partitioner that `edge.export.lower.lower_program` uses:
       skip_idle_xnnpack_passes            XNNPACK passes that cannot apply to a partition are left out (faster)
       share_weights_in_preprocess_copies  preprocess copies share the partition's weights (less memory)
       xnnpack_partitioner                 one decomposition instead of two where the second changes nothing
       init_last_delegate_first            the delegate table reversed (lower peak RSS when a runner loads it)
     Each checks that it applied. Where this ExecuTorch is not built as a patch relies on, it warns once on stderr,
     naming the ExecuTorch version, and the export goes on with ExecuTorch's stock behaviour.
     The upstream-ready descriptions are in docs/performance.md.
"""

from __future__ import annotations

import contextlib
import sys
from importlib import metadata

import torch

_warned: set[str] = set()


def not_applied(patch: str, why: str) -> None:
    """Warn once per patch (on stderr) that it did not apply to this ExecuTorch; the caller goes on stock behaviour."""
    if patch in _warned:
        return
    _warned.add(patch)
    try:
        version = metadata.version("executorch")
    except metadata.PackageNotFoundError:
        version = "(version unknown)"
    print(
        f"warning: edge's {patch} patch does not apply to executorch {version} ({why}); "
        "exporting with ExecuTorch's stock behaviour (the same program, more time or memory)",
        file=sys.stderr,
    )


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


@contextlib.contextmanager
def skip_idle_xnnpack_passes():
    """Context under which XNNPACK's preprocess leaves out the passes that cannot apply; where this ExecuTorch's
    preprocess is not built the way this relies on, or the replacement was never used, a warning (stock passes)."""
    from unittest import mock

    try:
        from executorch.backends.xnnpack import xnnpack_preprocess
        from executorch.backends.xnnpack._passes import XNNPACKPassManager
    except ImportError as e:
        not_applied("skip-idle-XNNPACK-passes", f"cannot import {e.name}")
        yield
        return
    if getattr(xnnpack_preprocess, "XNNPACKPassManager", None) is not XNNPACKPassManager:
        not_applied(
            "skip-idle-XNNPACK-passes", "xnnpack_preprocess no longer builds its passes with XNNPACKPassManager"
        )
        yield
        return
    used = []

    class PassManager(XNNPACKPassManager):
        def __init__(self, exported_program, passes=None) -> None:
            super().__init__(exported_program, passes)
            used.append(True)
            if passes is None:
                graph = exported_program.graph
                ops = " ".join(str(n.target).lower() for n in graph.nodes if n.op == "call_function")
                self.passes = [p for p in self.passes if _pass_applies(p.__name__, ops, graph)]

    with mock.patch.object(xnnpack_preprocess, "XNNPACKPassManager", PassManager):
        yield
    if not used:
        not_applied("skip-idle-XNNPACK-passes", "XNNPACK's preprocess never built its pass manager through it")


@contextlib.contextmanager
def share_weights_in_preprocess_copies():
    """Context under which the copy ExecuTorch makes of each partition for XNNPACK's preprocess shares
    the partition's weight tensors instead of copying them; a warning (stock copies) where ExecuTorch is not built
    as this relies on, or the hook was never called.

    `lower_all_submodules_to_backend` deep-copies every partition's program, weights included, before preprocessing
    any of them, so the whole model's weights are held twice (1B: +1.1 GiB, the lowering's peak). The copy guards
    against a backend changing the graph; XNNPACK's preprocess reads the weights and packs new buffers, and never
    writes to the tensors it reads, so the graph and its containers are still copied and only the tensors are shared.
    """
    from unittest import mock

    try:
        from executorch.backends.xnnpack.xnnpack_preprocess import XnnpackBackend
    except ImportError as e:
        not_applied("share-weights-in-preprocess-copies", f"cannot import {e.name}")
        yield
        return
    hook = "copy_exported_program_for_preprocess"
    if hook in vars(XnnpackBackend) or not hasattr(XnnpackBackend, hook):  # XNNPACK copies its own way: leave it be
        not_applied(
            "share-weights-in-preprocess-copies", f"XnnpackBackend.{hook} is not the inherited hook it replaces"
        )
        yield
        return
    calls = []

    def copy(cls, program, compile_specs):
        calls.append(True)
        return copy_sharing_weights(program)

    with mock.patch.object(XnnpackBackend, hook, classmethod(copy), create=True):
        yield
    if not calls:
        not_applied("share-weights-in-preprocess-copies", f"ExecuTorch never called {hook}")


def copy_sharing_weights(program: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """ExportedProgram -> a deep copy of it whose weights and constants are the original's tensor objects."""
    import copy

    tensors = [*program.state_dict.values(), *program.constants.values()]
    return copy.deepcopy(program, {id(t): t for t in tensors if isinstance(t, torch.Tensor)})


def xnnpack_partitioner(*, single_decomposition: bool):
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
        not_applied("delegates-built-last-first", "executorch.exir.program._program has no serialize_for_executorch")
        return edge.to_executorch(backend_config)
    with mock.patch.object(_program, "serialize_for_executorch", lambda *_args, **_kwargs: (None, {})):
        program = edge.to_executorch(backend_config)
    output = getattr(program, "_emitter_output", None)
    if output is None or not hasattr(program, "_data_serializer") or not hasattr(program, "_named_data"):
        not_applied("delegates-built-last-first", "ExecutorchProgramManager lacks _emitter_output/_data_serializer")
        return edge.to_executorch(backend_config)  # not the manager this expects: made again, unchanged
    for plan in output.program.execution_plan:
        n = len(plan.delegates)
        plan.delegates = plan.delegates[::-1]
        for chain in plan.chains:
            for instruction in chain.instructions:
                if isinstance(instruction.instr_args, DelegateCall):
                    instruction.instr_args.delegate_index = n - 1 - instruction.instr_args.delegate_index
    program._pte_data, program._tensor_data = serialize(
        output, backend_config, program._data_serializer, program._named_data
    )
    return program
