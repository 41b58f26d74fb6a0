"""edge against ExecuTorch's own exporter and .pte on the Llama 3.2 1B shape, everything in one run.

In:  --size 1b|tiny (tiny: a 2-layer smoke-run shape with the fixture's tokenizer), --work DIR (random-weight
     checkpoint and .ptes; default /tmp/edge-bench), --repetitions N (8), --prompt-tokens (64 and 512),
     --max-new-tokens (64), --ptes (which of the three below, default all), --skip-exports (reuse the .ptes in
     --work; the export rows are then left out).
Out: <--results>/executorch_comparison_<size>.{md,json} (default benchmarks/results):
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

from common import (  # noqa: E402
    ET_COMMAND,
    PARAMS,
    RESULTS,
    ROOT,
    config_size,
    machine,
    measure,
    tokenizer_in,
    write_random_checkpoint,
)

METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_s", "peak_rss_mb")
PTES = ("executorch", "edge_int4_output", "edge")  # the labels of exports()


def exports(work: Path, ckpt: Path, size: str) -> dict[str, tuple[list[str], Path]]:
    """label -> (command, .pte it writes)."""
    config = f"llama3_2_{config_size(size)}_8da4w"
    edge = [sys.executable, "-m", "edge.export", config, "--checkpoint", str(ckpt), "--force", "--quiet"]
    et_pte = work / f"executorch_{size}_8da4w.pte"
    return {
        "executorch": (
            [sys.executable] + [a.format(params=ckpt / "params.json", out=et_pte) for a in ET_COMMAND],
            et_pte,
        ),
        "edge_int4_output": (
            edge + ["--output", str(work / f"edge_{size}_int4_output"), "--output-layer", "int4"],
            work / f"edge_{size}_int4_output" / "model.pte",
        ),
        "edge": (edge + ["--output", str(work / f"edge_{size}_8da4w")], work / f"edge_{size}_8da4w" / "model.pte"),
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
    """Records -> {label: {prompt: {metric: median, None where no run measured it}}}."""
    out: dict = {}
    for label in labels:
        for n in prompts:
            rows = [r for r in records if r["label"] == label and r["prompt_tokens_requested"] == n]
            values = {m: [r[m] for r in rows if r.get(m) is not None] for m in METRICS}
            out.setdefault(label, {})[n] = {
                m: round(statistics.median(v), 4) if v else None for m, v in values.items()
            } | {"runs": len(rows)}
    return out


def _f(value: float | None, spec: str) -> str:
    """A number for the table, "-" where the runner measured none (a tiny model's call under its 1 ms clock)."""
    return "-" if value is None else format(value, spec)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def render(result: dict) -> str:
    """The JSON result -> the committed markdown."""
    size = result.get("size", "1b")
    L = [
        f"# edge vs ExecuTorch's exporter: Llama 3.2 {size.upper()} shape, random weights, host runner",
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
    L += render_speed(result) + render_memory(result) + render_exports(result)
    flag = "" if size == "1b" else f" --size {size}"
    L += ["", f'Reproduce: `python benchmarks/executorch_comparison.py{flag}` (needs `pip install -e ".[bench]"`).']
    return "\n".join(L) + "\n"


def render_speed(result: dict) -> list[str]:
    """The speed table and its ratios to ExecuTorch's .pte."""
    rt, prompts, labels = result["runtime"], result["prompt_tokens"], list(result["ptes"])
    L = [
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
            cells += [_f(m["decode_tok_s"], ".1f"), _f(m["prefill_tok_s"], ".1f"), _f(m["ttft_s"], ".3f")]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    L += [
        "",
        "Ratios to ExecuTorch's .pte, measured in this run (above 1.0: edge is faster):",
        "",
        "| .pte | " + " | ".join(f"decode @{n} | prefill @{n} | TTFT @{n}" for n in prompts) + " |",
        "|---|" + "---|" * (3 * len(prompts)),
    ]
    for label in labels:
        if label == "executorch":
            continue
        cells = []
        for n in prompts:
            a, b = rt[label][str(n)], rt["executorch"][str(n)]
            cells += [
                _f(_ratio(a["decode_tok_s"], b["decode_tok_s"]), ".3f"),
                _f(_ratio(a["prefill_tok_s"], b["prefill_tok_s"]), ".3f"),
                _f(_ratio(b["ttft_s"], a["ttft_s"]), ".3f"),
            ]
        L.append(f"| {label} | " + " | ".join(cells) + " |")
    return L


def render_memory(result: dict) -> list[str]:
    """Peak RSS of each .pte's runs, less the interpreter's, over its size."""
    rt, prompts, base = result["runtime"], result["prompt_tokens"], result["interpreter_baseline_mb"]
    L = [
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
        peak = max(rt[label][str(n)]["peak_rss_mb"] or 0 for n in prompts)
        L.append(f"| {label} | {peak:.0f} MiB | {peak - base:.0f} MiB | {(peak - base) / (p['bytes'] / 2**20):.2f}x |")
    return L


def render_exports(result: dict) -> list[str]:
    """The exports' wall time and peak RSS (none with --skip-exports and no earlier run)."""
    exports = result.get("exports")
    if not exports:
        return []
    when = (
        f", measured {result['exports_date']} (an earlier run of this script)"
        if result.get("exports_date")
        else ", measured in this run"
    )
    L = [
        "",
        "## Export",
        "",
        f"One export after the other{when}:",
        "",
        "| exporter | wall time | peak RSS | exit |",
        "|---|---|---|---|",
    ]
    for label, r in exports.items():
        L.append(f"| {label} | {r['wall_s']:.0f} s | {r['peak_rss_mb'] / 1024:.2f} GiB | {r['returncode']} |")
    if "edge" in exports and "executorch" in exports:
        e, x = exports["edge"], exports["executorch"]
        L += [
            "",
            f"edge (Meta's scheme) / ExecuTorch: wall time **{e['wall_s'] / x['wall_s']:.2f}x**, "
            f"peak RSS **{e['peak_rss_mb'] / x['peak_rss_mb']:.2f}x**.",
        ]
    return L + ["", "Commands:", ""] + [f"- `{r['command']}`" for r in exports.values()]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["1b", "tiny"], default="1b", help="tiny: a 2-layer shape for a smoke run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument("--repetitions", type=int, default=8)
    ap.add_argument("--prompt-tokens", type=int, action="append")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument(
        "--ptes",
        nargs="+",
        choices=list(PTES),
        default=list(PTES),
        help="which .ptes to export and run (default all; ExecuTorch's is the baseline, always in)",
    )
    ap.add_argument("--skip-exports", action="store_true")
    ns = ap.parse_args()
    ns.prompt_tokens = ns.prompt_tokens or [64, 512]
    ns.ptes = [p for p in PTES if p in ns.ptes or p == "executorch"]
    return ns


def run_exports(plan: dict, ns: argparse.Namespace) -> dict:
    """Each export in `plan`, one after the other -> {label: its measure() row and command}."""
    timed = {}
    for label, (cmd, _) in plan.items():
        print(f"export {label}:", " ".join(cmd[1:]), file=sys.stderr)
        r = measure(cmd, log=ns.work / f"compare_{label}.log")
        if r["returncode"] != 0:
            sys.exit(f"error: export {label} failed (exit {r['returncode']}); see {ns.work / f'compare_{label}.log'}")
        timed[label] = r | {"command": "python " + " ".join(cmd[1:])}
    return timed


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    from edge.export.lower import pte_structure

    ns = parse_args()
    ckpt = ns.work / f"llama3_2_{ns.size}_random"
    write_random_checkpoint(ckpt, PARAMS[ns.size])
    plan = {label: v for label, v in exports(ns.work, ckpt, ns.size).items() if label in ns.ptes}
    timed = {} if ns.skip_exports else run_exports(plan, ns)
    ptes = {label: pte for label, (_, pte) in plan.items()}
    for label, pte in ptes.items():
        if not pte.is_file():
            sys.exit(f"error: {pte} is missing: run without --skip-exports")
    baseline = interpreter_baseline_mb()
    t0 = time.monotonic()
    tok = tokenizer_in(ckpt)
    first = bench_round(ptes, tok, ns, ns.work / "compare_round1")
    second = bench_round(dict(reversed(list(ptes.items()))), tok, ns, ns.work / "compare_round2")
    runtime = summarize(first + second, list(ptes), ns.prompt_tokens)
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": ns.size,
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
    stem = ns.results / f"executorch_comparison_{ns.size}"
    if not timed and stem.with_suffix(".json").is_file():  # --skip-exports: keep the last measured export rows, dated
        last = json.loads(stem.with_suffix(".json").read_text())
        result["exports"], result["exports_date"] = last.get("exports", {}), last.get("exports_date", last.get("date"))
    ns.results.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    text = render(json.loads(json.dumps(result, default=str)))
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
