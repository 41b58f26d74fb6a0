"""edge against ExecuTorch's own exporter and .pte on the Llama 3.2 1B shape, everything in one run.

In:  --work DIR (random-weight checkpoint and .ptes; default /tmp/edge-bench), --repetitions N (8),
     --prompt-tokens (64 and 512), --max-new-tokens (64), --skip-exports (reuse the .ptes in --work;
     the export rows are then left out).
Out: benchmarks/results/executorch_comparison_1b.{md,json}:
       exports   wall time and peak RSS of edge and of ExecuTorch's `export_llama`, one after the other;
       programs  delegate calls, kernels left outside XNNPACK and planned memory of each .pte;
       runtime   decode, prefill and TTFT at each prompt length and peak RSS, from `android_bench --host`
                 (ExecuTorch's TextLLMRunner), N runs per .pte in two rounds of opposite order;
       memory    the runner's interpreter baseline measured in the same run, and RSS less it over .pte size.

Three .ptes: ExecuTorch's example export (8da4w g32, 8-bit embedding, its output layer at 4 bits);
edge with the same bit widths (--output-layer int4); edge with Meta's scheme (8-bit output layer).
Weights are random (no model hub here): speed and memory depend on shapes, not values.

    python benchmarks/executorch_comparison.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from common import ET_COMMAND, PARAMS, RESULTS, ROOT, machine, measure, write_random_meta_checkpoint  # noqa: E402

METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_s", "peak_rss_mb")


def exports(work: Path, ckpt: Path) -> dict[str, tuple[list[str], Path]]:
    """label -> (command, .pte it writes)."""
    edge = [sys.executable, "-m", "edge.export", "llama3_2_1b_8da4w", "--checkpoint", str(ckpt), "--force", "--quiet"]
    et_pte = work / "executorch_1b_8da4w.pte"
    return {
        "executorch": (
            [sys.executable] + [a.format(params=ckpt / "params.json", out=et_pte) for a in ET_COMMAND],
            et_pte,
        ),
        "edge_int4_output": (
            edge + ["--output", str(work / "edge_1b_int4_output"), "--output-layer", "int4"],
            work / "edge_1b_int4_output" / "model.pte",
        ),
        "edge": (edge + ["--output", str(work / "edge_1b_8da4w")], work / "edge_1b_8da4w" / "model.pte"),
    }


def interpreter_baseline_mb() -> float:
    """Peak RSS of the host runner's process with its libraries loaded and no model (MiB)."""
    code = (
        "from android_bench.host_runner import load_llm_kernels; load_llm_kernels(); "
        "from executorch.extension.llm.runner import TextLLMRunner; import re, pathlib; "
        "print(int(re.search(r'VmHWM:\\s+(\\d+)', pathlib.Path('/proc/self/status').read_text()).group(1)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    return int(out.strip().splitlines()[-1]) / 1024


def bench_round(ptes: dict[str, Path], tokenizer: Path, ns: argparse.Namespace, out: Path) -> list[dict]:
    """One android_bench --host invocation over `ptes` in the given order -> its measured records."""
    cmd = [
        sys.executable,
        "-m",
        "android_bench",
        "--host",
        "--tokenizer",
        str(tokenizer),
        "--repetitions",
        str(ns.repetitions),
        "--warmup",
        "1",
        "--max-new-tokens",
        str(ns.max_new_tokens),
        "--baseline",
        "executorch",
        "--output",
        str(out),
    ]
    for label, pte in ptes.items():
        cmd += ["--pte", str(pte), "--label", label]
    for n in ns.prompt_tokens:
        cmd += ["--prompt-tokens", str(n)]
    print("running:", " ".join(cmd[1:]), file=sys.stderr)
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    records = [json.loads(line) for line in Path(f"{out}.jsonl").read_text().splitlines() if line.strip()]
    return [r for r in records if r.get("phase") == "measured" and r.get("status") == "ok"]


def summarize(records: list[dict], labels: list[str], prompts: list[int]) -> dict:
    """Records -> {label: {prompt: {metric: median}}}."""
    out: dict = {}
    for label in labels:
        for n in prompts:
            rows = [r for r in records if r["label"] == label and r["prompt_tokens_requested"] == n]
            out.setdefault(label, {})[n] = {
                m: round(statistics.median(r[m] for r in rows if r.get(m) is not None), 4) if rows else None
                for m in METRICS
            } | {"runs": len(rows)}
    return out


def render(result: dict) -> str:
    """The JSON result -> the committed markdown."""
    rt, prompts, labels = result["runtime"], result["prompt_tokens"], list(result["ptes"])
    L = [
        "# edge vs ExecuTorch's exporter: Llama 3.2 1B shape, random weights, host runner",
        "",
        f"Measured {result['date']} on {result['machine']['cpu']}, {result['machine']['cores']} cores, "
        f"{result['machine']['memory']}; ExecuTorch's `TextLLMRunner` through `android_bench --host`, "
        f"{result['repetitions']} runs per .pte and prompt length in each of two rounds (opposite order), "
        "medians of all "
        f"{2 * result['repetitions']}; {result['max_new_tokens']} new tokens.",
        "",
    ]
    head = ["| .pte | size | delegate calls | kernels outside XNNPACK | planned memory |", "|---|---|---|---|---|"]
    L += ["## Programs", ""] + head
    for label, p in result["ptes"].items():
        s = p["structure"]
        outside = sum(v for k, v in s["kernels"].items() if not k.startswith("executorch_prim::"))
        L.append(
            f"| {label} | {p['bytes'] / 2**20:.0f} MiB | {s['delegate_calls']} | {outside} | "
            f"{s['planned_bytes'] / 2**20:.0f} MiB |"
        )
    L += [
        "",
        "## Speed",
        "",
        "| .pte | " + " | ".join(f"decode tok/s @{n} | prefill tok/s @{n} | TTFT s @{n}" for n in prompts) + " |",
        "|---|" + "---|" * (3 * len(prompts)),
    ]
    for label in labels:
        cells = []
        for n in prompts:
            m = rt[label][str(n)]
            cells += [f"{m['decode_tok_s']:.1f}", f"{m['prefill_tok_s']:.1f}", f"{m['ttft_s']:.3f}"]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Ratios to ExecuTorch's .pte, measured in this run (above 1.0: edge is faster):",
        "",
        "| .pte | " + " | ".join(f"decode @{n} | prefill @{n} | TTFT @{n}" for n in prompts) + " |",
        "|---|" + "---|" * (3 * len(prompts)),
    ]
    for label in labels[1:]:
        cells = []
        for n in prompts:
            a, b = rt[label][str(n)], rt["executorch"][str(n)]
            cells += [
                f"{a['decode_tok_s'] / b['decode_tok_s']:.3f}",
                f"{a['prefill_tok_s'] / b['prefill_tok_s']:.3f}",
                f"{b['ttft_s'] / a['ttft_s']:.3f}",
            ]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    base = result["interpreter_baseline_mb"]
    L += [
        "",
        "## Memory",
        "",
        f"The runner's interpreter with ExecuTorch's libraries loaded and no model: {base:.0f} MiB peak RSS "
        "(measured in this run).",
        "",
        "| .pte | peak RSS | less the interpreter | over .pte size |",
        "|---|---|---|---|",
    ]
    for label, p in result["ptes"].items():
        peak = max(rt[label][str(n)]["peak_rss_mb"] for n in prompts)
        L.append(f"| {label} | {peak:.0f} MiB | {peak - base:.0f} MiB | {(peak - base) / (p['bytes'] / 2**20):.2f}x |")
    if result.get("exports"):
        when = (
            f", measured {result['exports_date']} (an earlier run of this script)"
            if result.get("exports_date")
            else ", measured in this run"
        )
        L += [
            "",
            "## Export",
            "",
            f"One export after the other{when}:",
            "",
            "| exporter | wall time | peak RSS | exit |",
            "|---|---|---|---|",
        ]
        for label, r in result["exports"].items():
            L.append(f"| {label} | {r['wall_s']:.0f} s | {r['peak_rss_mb'] / 1024:.2f} GiB | {r['returncode']} |")
        e, x = result["exports"]["edge"], result["exports"]["executorch"]
        L += [
            "",
            f"edge (Meta's scheme) / ExecuTorch: wall time **{e['wall_s'] / x['wall_s']:.2f}x**, "
            f"peak RSS **{e['peak_rss_mb'] / x['peak_rss_mb']:.2f}x**.",
        ]
        L += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in result["exports"].values()]
    L += ["", 'Reproduce: `python benchmarks/executorch_comparison.py` (needs `pip install -e ".[bench]"`).']
    return "\n".join(L) + "\n"


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    from edge.export.lower import pte_structure

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--repetitions", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, action="append")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-exports", action="store_true")
    ns = ap.parse_args()
    ns.prompt_tokens = ns.prompt_tokens or [64, 512]
    ckpt = ns.work / "llama3_2_1b_random"
    write_random_meta_checkpoint(ckpt, PARAMS["1b"])
    plan = exports(ns.work, ckpt)
    timed = {}
    if not ns.skip_exports:
        for label, (cmd, _) in plan.items():
            print(f"export {label}:", " ".join(cmd[1:]), file=sys.stderr)
            r = measure(cmd, log=ns.work / f"compare_{label}.log")
            if r["returncode"] != 0:
                sys.exit(
                    f"error: export {label} failed (exit {r['returncode']}); see {ns.work / f'compare_{label}.log'}"
                )
            timed[label] = r | {"command": "python " + " ".join(cmd[1:])}
    ptes = {label: pte for label, (_, pte) in plan.items()}
    for label, pte in ptes.items():
        if not pte.is_file():
            sys.exit(f"error: {pte} is missing: run without --skip-exports")
    baseline = interpreter_baseline_mb()
    t0 = time.monotonic()
    first = bench_round(ptes, ckpt / "tokenizer.model", ns, ns.work / "compare_round1")
    second = bench_round(dict(reversed(list(ptes.items()))), ckpt / "tokenizer.model", ns, ns.work / "compare_round2")
    runtime = summarize(first + second, list(ptes), ns.prompt_tokens)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "repetitions": ns.repetitions,
        "max_new_tokens": ns.max_new_tokens,
        "prompt_tokens": ns.prompt_tokens,
        "interpreter_baseline_mb": round(baseline, 1),
        "runtime_seconds": round(time.monotonic() - t0),
        "ptes": {
            label: {"path": str(p), "bytes": p.stat().st_size, "structure": pte_structure(p)}
            for label, p in ptes.items()
        },
        "runtime": {label: {str(n): v for n, v in rows.items()} for label, rows in runtime.items()},
        "rounds": {
            "1": summarize(first, list(ptes), ns.prompt_tokens),
            "2": summarize(second, list(ptes), ns.prompt_tokens),
        },
        "exports": timed,
    }
    previous = RESULTS / "executorch_comparison_1b.json"
    if not timed and previous.is_file():  # --skip-exports: keep the last measured export rows, dated
        last = json.loads(previous.read_text())
        result["exports"], result["exports_date"] = last.get("exports", {}), last.get("exports_date", last.get("date"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "executorch_comparison_1b.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = render(json.loads(json.dumps(result, default=str)))
    (RESULTS / "executorch_comparison_1b.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
