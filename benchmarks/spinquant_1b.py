"""SpinQuant at the full Llama 3.2 1B (or 3B) shape on this CPU: what rotation and GPTQ cost the exporter.

In:  --work DIR; a random-weight 1B (--size 3b: 3B; tiny: a 2-layer smoke-run shape with the fixture's
     tokenizer) checkpoint in Meta's layout is written there (no hub here; the same writer as
     export_benchmark.py, Llama 3 tokenizer from the `bench` extra);
     --gptq-samples / --gptq-seq-len for the GPTQ run's calibration (default 8 x 512: Meta's
     128 x 2048 is GPU work: 64x the tokens of the Hessian passes), calibrated on the fixture's
     calibration.txt.
Out: <--results>/spinquant_<size>.{md,json} (default benchmarks/results): wall time, peak RSS (GNU time) and stage times
     of three exports run one after the other in one session:
       1. plain 8da4w (round-to-nearest), the baseline;
       2. random Hadamard R1/R2 + online R4, round-to-nearest;
       3. random Hadamard + R4 + GPTQ (its `quantize` stage is GPTQ's time).
     Random weights: these are costs, not quality.

    python benchmarks/spinquant_1b.py
    python benchmarks/spinquant_1b.py --size 3b --skip gptq
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, ROOT, config_size, machine, measure, write_random_checkpoint  # noqa: E402


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--size", choices=sorted(PARAMS), default="1b")
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument("--gptq-samples", type=int, default=8)
    ap.add_argument("--gptq-seq-len", type=int, default=512)
    ap.add_argument("--skip", nargs="*", default=[], help="row names to skip (plain, hadamard, gptq)")
    ap.add_argument(
        "--from-logs",
        action="store_true",
        help=(
            "no new runs: rebuild the results from the logs in --work "
            "(a run stopped early keeps its last progress line)"
        ),
    )
    ap.add_argument("--note", default="", help="a sentence about the conditions, printed under the table")
    ns = ap.parse_args()
    ckpt = ns.work / f"llama3_2_{ns.size}_random"
    if not ns.from_logs:
        print(f"writing random {ns.size} checkpoint to {ckpt}", file=sys.stderr, flush=True)
        write_random_checkpoint(ckpt, PARAMS[ns.size])
    base, runs = plan(ns, ckpt)
    rows = []
    for key, (label, extra) in runs.items():
        if key in ns.skip:
            continue
        out = ns.work / f"edge_{ns.size}_{key}"
        cmd = [*base, "--output", str(out), *extra]
        log = ns.work / f"spinquant_{ns.size}_{key}.log"
        if ns.from_logs:
            if not log.is_file():
                continue
            r = from_log(log)
        else:
            print(f"running {key}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            r = measure(cmd, log=log)
        r |= {"row": key, "label": label, "command": "python " + " ".join(cmd[1:])}
        if r["returncode"] == 0:
            m = json.loads((out / "manifest.json").read_text())
            r |= {
                "pte_bytes": m["size_bytes"]["pte"],
                "stage_seconds": m["stage_seconds"],
                "stage_peak_rss_mb": m["stage_peak_rss_mb"],
            }
        else:
            progress = [line for line in log.read_text(errors="replace").splitlines() if "blocks (" in line]
            r["last_progress"] = progress[-1].split("\r")[-1].strip() if progress else None
        rows.append(r)
    if not rows:
        print(
            f"error: no runs{' logged in ' + str(ns.work) if ns.from_logs else ''}: nothing to write", file=sys.stderr
        )
        return 2
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "runs": rows,
        "note": ns.note,
        "size": ns.size,
    }
    ns.results.mkdir(parents=True, exist_ok=True)
    (ns.results / f"spinquant_{ns.size}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = render(result)
    (ns.results / f"spinquant_{ns.size}.md").write_text(md)
    print(md)
    return 0 if all(r["returncode"] == 0 for r in rows) else 1


def plan(ns: argparse.Namespace, ckpt: Path) -> tuple[list[str], dict[str, tuple[str, list[str]]]]:
    """-> (the export command every row shares, {row: (label, its extra flags)})."""
    calib = ROOT / "edge" / "assets" / "fixture" / "calibration.txt"
    config = f"llama3_2_{config_size(ns.size)}_8da4w"
    base = [sys.executable, "-m", "edge.export", config, "--checkpoint", str(ckpt), "--force"]
    return base, {
        "plain": ("8da4w, round-to-nearest (baseline)", []),
        "hadamard": ("random Hadamard R1/R2 + online R4, round-to-nearest", ["--rotation-kind", "hadamard"]),
        "gptq": (
            f"random Hadamard + R4 + GPTQ ({ns.gptq_samples} x {ns.gptq_seq_len} calibration tokens)",
            [
                "--rotation-kind",
                "hadamard",
                "--rounding",
                "gptq",
                "--gptq-samples",
                str(ns.gptq_samples),
                "--calibration-text",
                str(calib),
                "--calibration-seq-len",
                str(ns.gptq_seq_len),
            ],
        ),
    }


def from_log(log: Path) -> dict:
    """A finished or stopped run's log (GNU time -v output at its end, if it finished) -> the row's measurements."""
    import re

    text = log.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    code = re.search(r"Exit status: (\d+)", text)
    if not (wall and rss and code):
        return {"wall_s": None, "peak_rss_mb": None, "returncode": "stopped before the end (no GNU time summary)"}
    h, m, sec = wall.groups()
    return {
        "wall_s": round(int(h or 0) * 3600 + int(m) * 60 + float(sec), 1),
        "peak_rss_mb": round(int(rss.group(1)) / 1024, 1),
        "returncode": int(code.group(1)),
    }


def render(result: dict) -> str:
    mc = result["machine"]
    size = result.get("size", "1b")
    lines = [
        f"# SpinQuant at the Llama 3.2 {size.upper()} shape (random weights), max context 2048",
        "",
        f"Measured {result['date']} on {mc['cpu']}, {mc['cores']} cores, {mc['memory']}; "
        "one run each, one after the other.",
        "",
        "| export | wall time | peak RSS (GNU time) | .pte | rotate+quantize stage | vs plain wall time |",
        "|---|---|---|---|---|---|",
    ]
    plain = next((r for r in result["runs"] if r["row"] == "plain" and r["returncode"] == 0), None)
    for r in result["runs"]:
        if r["returncode"] != 0:
            lines.append(f"| {r['label']} | {r['returncode']}; last progress: `{r.get('last_progress')}` | | | | |")
            continue
        q = r["stage_seconds"].get("quantize", 0) + r["stage_seconds"].get("rotations", 0)
        ratio = f"{r['wall_s'] / plain['wall_s']:.2f}x" if plain else "-"
        lines.append(
            f"| {r['label']} | {r['wall_s'] / 60:.1f} min | {r['peak_rss_mb'] / 1024:.2f} GiB | "
            f"{r['pte_bytes'] / 2**20:.0f} MiB | {q:.0f} s | {ratio} |"
        )
    if result.get("note"):
        lines += ["", result["note"]]
    lines += ["", "Stage times (s):", ""]
    lines += [
        f"- {r['row']}: " + ", ".join(f"{k} {v}" for k, v in r.get("stage_seconds", {}).items())
        for r in result["runs"]
        if r.get("stage_seconds")
    ]
    lines += ["", "Commands:", ""] + [f"- `{r['command']}`" for r in result["runs"]]
    skipped = [k for k in ("plain", "hadamard", "gptq") if k not in {r["row"] for r in result["runs"]}]
    lines += [
        "",
        "Reproduce: `python benchmarks/spinquant_1b.py"
        + ("" if size == "1b" else f" --size {size}")
        + (f" --skip {' '.join(skipped)}" if skipped else "")
        + "`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
