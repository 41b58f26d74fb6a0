"""Read back the quantized weight constants XNNPACK serialized into a .pte (a test helper).

In:  a .pte path. Out: one small record per quantized weight found in the XNNPACK delegate blobs, holding
the integers and scales as XNNPACK will use them, undoing the serialization in
executorch/backends/xnnpack/operators/node_visitor.py:
- qb4w (xnn_datatype_qbint4, PerChannelGroupQuant): int4 values v in [-8, 7] stored as the nibble v + 8,
  two per byte along the input dim, even column in the low nibble, odd in the high one, rows padded to an
  even width (`convert_to_qc4w`); the scales [out, in / group] row-major in bfloat16 (`get_quant_params`).
- qc8w (xnn_datatype_qcint8, PerChannelQuant): int8 values [out, in] as they are; one fp32 scale per row.
Each constant is either in the blob's constant segment (offset/size) or in the .pte's named data (named_key).
"""

from __future__ import annotations

import importlib.resources
import json
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

XNNPACK_ID = "XnnpackBackend"
UINT64_MAX = 2**64 - 1


@dataclass(frozen=True, eq=False)
class QB4Weight:
    """A blockwise int4 weight: qdata int8 [out, in] in -8..7, scale fp32 [out, in / group_size]."""

    dims: tuple[int, int]  # (out, in)
    group_size: int
    qdata: torch.Tensor
    scale: torch.Tensor
    delegate: int  # which XNNPACK blob of the .pte (in program order) it came from


@dataclass(frozen=True, eq=False)
class QC8Weight:
    """A per-channel int8 weight: qdata int8 [out, in], scale fp32 [out]."""

    dims: tuple[int, int]
    qdata: torch.Tensor
    scale: torch.Tensor
    delegate: int


def unpack_int4(packed: torch.Tensor, in_features: int) -> torch.Tensor:
    """XNNPACK's packed bytes uint8 [out, ceil(in / 2)] -> int8 [out, in] in -8..7 (the inverse of convert_to_qc4w)."""
    low, high = (packed & 0x0F), (packed >> 4)
    both = torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)  # column 2j low, 2j + 1 high
    return (both[:, :in_features].to(torch.int16) - 8).to(torch.int8)


def _graph_json(flatbuffer: bytes) -> dict:
    """An XNNGraph flatbuffer (schema.fbs) -> its JSON as a dict, through the flatc ExecuTorch ships."""
    flatc = importlib.resources.files("executorch.data.bin").joinpath("flatc")
    schema = importlib.resources.files("executorch.backends.xnnpack.serialization").joinpath("schema.fbs")
    with (
        tempfile.TemporaryDirectory() as d,
        importlib.resources.as_file(flatc) as exe,
        importlib.resources.as_file(schema) as fbs,
    ):
        (Path(d) / "graph.bin").write_bytes(flatbuffer)
        subprocess.run(
            [
                str(exe),
                "--json",
                "--strict-json",
                "--defaults-json",
                "--raw-binary",
                "-o",
                d,
                str(fbs),
                "--",
                str(Path(d) / "graph.bin"),
            ],
            check=True,
            capture_output=True,
        )
        return json.loads((Path(d) / "graph.json").read_text())


def _xnnpack_graphs(pte_path):
    """.pte path -> [(delegate index, graph dict, constant index -> bytes)] for every XNNPACK blob."""
    from executorch.backends.xnnpack.serialization.xnnpack_graph_serialize import XNNHeader
    from executorch.exir._serialize._program import deserialize_pte_binary

    pte = deserialize_pte_binary(Path(pte_path).read_bytes())
    named = pte.named_data
    out = []
    delegates = [d for plan in pte.program.execution_plan for d in plan.delegates if d.id == XNNPACK_ID]
    for i, d in enumerate(delegates):
        blob = pte.program.backend_delegate_data[d.processed.index].data
        header = XNNHeader.from_bytes(blob[: XNNHeader.EXPECTED_LENGTH])
        graph = _graph_json(blob[header.flatbuffer_offset : header.flatbuffer_offset + header.flatbuffer_size])
        base = header.constant_data_offset

        def data(idx: int, graph=graph, blob=blob, base=base) -> bytes:
            c = graph["constant_data"][idx]
            size, key = int(c["size"]), c.get("named_key") or ""
            if key:
                assert int(c["offset"]) == UINT64_MAX, c
                return bytes(named.buffers[named.pte_data[key].buffer_index])[:size]
            return bytes(blob[base + int(c["offset"]) : base + int(c["offset"]) + size])

        out.append((i, graph, data))
    return out


def _quantized_values(pte_path, datatype: str, params: str):
    """-> [(delegate, dims, quant params dict, weight bytes, scale bytes)] for constants of that XNN datatype."""
    found = []
    for i, graph, data in _xnnpack_graphs(pte_path):
        for v in graph["xvalues"]:
            if v["xvalue_union_type"] != "XNNQuantizedTensorValue":
                continue
            t, q = v["xvalue_union"]["tensor_value"], v["xvalue_union"]
            if t["datatype"] != datatype or t["constant_buffer_idx"] == 0:
                continue
            assert q["quant_params_type"] == params, q["quant_params_type"]
            qp = q["quant_params"]
            assert qp["channel_dim"] == 0 and len(t["dims"]) == 2, (qp, t["dims"])
            found.append((i, tuple(t["dims"]), qp, data(t["constant_buffer_idx"]), data(qp["scale_buffer_idx"])))
    return found


def quantized_weights(pte_path) -> list[QB4Weight]:
    """.pte path -> every blockwise int4 (qb4w) weight in its XNNPACK blobs, in blob and value order."""
    result = []
    for i, (n, k), qp, raw, scale_raw in _quantized_values(pte_path, "xnn_datatype_qbint4", "PerChannelGroupQuant"):
        g = int(qp["group_size"])
        packed = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        assert packed.numel() == n * ((k + 1) // 2) and qp["num_scales"] == n * (k // g), (n, k, g, packed.numel())
        scale = torch.frombuffer(bytearray(scale_raw), dtype=torch.bfloat16).float().reshape(n, k // g)
        result.append(QB4Weight((n, k), g, unpack_int4(packed.reshape(n, -1), k), scale, i))
    return result


def quantized_int8_weights(pte_path) -> list[QC8Weight]:
    """.pte path -> every per-channel int8 (qc8w) weight in its XNNPACK blobs, in blob and value order."""
    result = []
    for i, (n, k), qp, raw, scale_raw in _quantized_values(pte_path, "xnn_datatype_qcint8", "PerChannelQuant"):
        qdata = torch.frombuffer(bytearray(raw), dtype=torch.int8).reshape(n, k)
        scale = torch.frombuffer(bytearray(scale_raw), dtype=torch.float32)
        assert scale.numel() == n == qp["num_scales"], (scale.numel(), n)
        result.append(QC8Weight((n, k), qdata, scale, i))
    return result


def claim(unclaimed: list[QB4Weight], qdata: torch.Tensor, *, name: str) -> QB4Weight:
    """Remove from `unclaimed` and return the one weight whose integers equal `qdata` (matched by value: the
    blobs are not in layer order, since partitions are cut at the attention op and come last layer first)."""
    hits = [w for w in unclaimed if w.dims == tuple(qdata.shape) and torch.equal(w.qdata, qdata)]
    assert len(hits) == 1, f"{name}: {len(hits)} .pte weights with its integers"
    unclaimed.remove(hits[0])
    return hits[0]
