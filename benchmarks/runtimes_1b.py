"""The same 1B weights in ExecuTorch, ONNX Runtime and llama.cpp, measured in one run on this machine.

In:  --size 1b|tiny (tiny: a 2-layer smoke-run shape with the fixture's tokenizer), --work DIR (checkpoint,
     exports; default /tmp/edge-runtimes), --llama-cpp DIR (a llama.cpp source tree built with
     llama-completion and llama-quantize in build/bin; without it the llama.cpp rows are skipped),
     --repetitions N (3), --prompt-tokens (64 and 512), --max-new-tokens (64), --skip-exports.
Out: <--results>/runtimes_<size>.{md,json} (default benchmarks/results): decode, prefill, TTFT, peak RSS
     and file size for
       edge .pte        ExecuTorch (TextLLMRunner through android_bench.host_runner)
       edge ONNX        ONNX Runtime (onnxruntime-genai through android_bench.ort_host_runner)
       edge GGUF        llama.cpp's llama-completion, Q4_0/Q8_0 blocks holding edge's integers
       llama.cpp Q4_0   llama.cpp's own path (convert_hf_to_gguf.py --outtype f16, then
                        llama-quantize Q4_0): its rounding, its output layer at Q6_K and its
                        embedding at Q4_0 (a reference row: other bit widths than 8da4w)
     all from one random-weight Llama 3.2 1B checkpoint (Hugging Face layout; the Llama 3 tokenizer
     converted from the `bench` extra's tiktoken file), through `android_bench --host`, in one call.
     A runtime that is not installed here (onnxruntime-genai; llama.cpp without --llama-cpp) is
     skipped, with the reason in the results. Weights are random (no model hub here): speed and memory
     depend on shapes, not values.

    python benchmarks/runtimes_1b.py --llama-cpp ~/src/llama.cpp
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from common import (  # noqa: E402
    PARAMS,
    RESULTS,
    ROOT,
    config_size,
    llama3_tokenizer,
    machine,
    measure,
    write_random_checkpoint,
    write_random_hf_checkpoint,
)

METRICS = ("decode_tok_s", "prefill_tok_s", "ttft_s", "peak_rss_mb")
SPECIALS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
] + [f"<|reserved_special_token_{i}|>" for i in range(2, 247)]


def write_checkpoint(folder: Path, size: str) -> None:
    """-> folder: a random-weight checkpoint in Hugging Face's layout (llama.cpp's converter reads it) with a
    tokenizer.json: the fixture's at the tiny shape, else the Llama 3 tokenizer converted from the `bench` extra's
    tiktoken file."""
    if size == "tiny":
        write_random_checkpoint(folder, PARAMS[size])  # Hugging Face's layout at the fixture's vocabulary
        return
    from transformers.convert_slow_tokenizer import TikTokenConverter

    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "tokenizer.json").is_file():
        tok = TikTokenConverter(vocab_file=str(llama3_tokenizer()), extra_special_tokens=SPECIALS).converted()
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(
            json.dumps(
                {
                    "tokenizer_class": "PreTrainedTokenizerFast",
                    "bos_token": "<|begin_of_text|>",
                    "eos_token": "<|eot_id|>",
                    "clean_up_tokenization_spaces": True,
                    "model_max_length": 131072,
                },
                indent=2,
            )
        )
    write_random_hf_checkpoint(folder, PARAMS[size], bos_id=128000, eos_ids=[128001, 128008, 128009])


def skipped_runtimes(ns: argparse.Namespace) -> dict[str, str]:
    """Runtimes not installed here -> why they are left out ({} when all three run)."""
    import importlib.util

    out = {}
    if importlib.util.find_spec("onnxruntime_genai") is None:
        out["ONNX Runtime"] = "the onnxruntime-genai package is not installed"
    if ns.llama_cpp is None:
        out["llama.cpp"] = "no --llama-cpp DIR given (a llama.cpp source tree built with llama-completion)"
    return out


def export_steps(ns: argparse.Namespace, ckpt: Path) -> tuple[dict[str, list[str]], dict[str, Path], dict]:
    """-> ({step: command}, {step: the file it writes}, {row label: model path}) for the runtimes that run."""
    out = ns.work / f"edge_{ns.size}_8da4w"
    formats = ["pte"] + (["onnx"] if "ONNX Runtime" not in ns.skipped else [])
    models = {"edge .pte (ExecuTorch)": out / "model.pte"}
    if "onnx" in formats:
        models["edge ONNX (ONNX Runtime)"] = out / "onnx"
    steps: dict[str, list[str]] = {}
    outputs: dict[str, Path] = {}
    if "llama.cpp" not in ns.skipped:
        formats.append("gguf")
        bin_dir = ns.llama_cpp / "build" / "bin"
        f16, q4 = ns.work / f"llamacpp_{ns.size}_f16.gguf", ns.work / f"llamacpp_{ns.size}_q4_0.gguf"
        # with llama.cpp's own gguf-py, as its README runs it
        steps["convert_hf_to_gguf.py (f16)"] = [
            "env",
            f"PYTHONPATH={ns.llama_cpp / 'gguf-py'}",
            sys.executable,
            str(ns.llama_cpp / "convert_hf_to_gguf.py"),
            str(ckpt),
            "--outtype",
            "f16",
            "--outfile",
            str(f16),
        ]
        steps["llama-quantize Q4_0"] = [str(bin_dir / "llama-quantize"), str(f16), str(q4), "Q4_0"]
        outputs |= {"convert_hf_to_gguf.py (f16)": f16, "llama-quantize Q4_0": q4}
        models |= {"edge GGUF (llama.cpp)": out / "model.gguf", "llama.cpp Q4_0 (its own quantization)": q4}
    label = f"edge export ({', '.join(formats)})"
    config = f"llama3_2_{config_size(ns.size)}_8da4w"
    edge = [sys.executable, "-m", "edge.export", config, "--checkpoint", str(ckpt), "--output", str(out)]
    steps = {label: [*edge, "--formats", ",".join(formats), "--force", "--quiet"]} | steps
    return steps, {label: out / "model.pte"} | outputs, models


def exports(ns: argparse.Namespace, ckpt: Path) -> dict:
    """Run (or reuse) the exports -> {"models": {label: path}, "timed": {step: {wall_s, peak_rss_mb, ...}}}."""
    steps, outputs, models = export_steps(ns, ckpt)
    timed = {}
    if not ns.skip_exports:
        for label, cmd in steps.items():
            log = ns.work / f"{label.split()[0]}.log"
            if outputs[label].exists() and log.is_file():  # done by an earlier run of this script: its own measurement
                timed[label] = _from_log(log) | {"reused": True}
                continue
            print(f"{label}: {' '.join(cmd)}", file=sys.stderr, flush=True)
            r = measure(cmd, log=log)
            if r["returncode"] != 0:
                sys.exit(f"error: {label} failed (exit {r['returncode']}); see {log}")
            timed[label] = r
    return {"models": models, "timed": timed}


def _from_log(log: Path) -> dict:
    """An earlier step's GNU time log -> {wall_s, peak_rss_mb} as `measure` reported them."""
    import re

    text = log.read_text(errors="replace")
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (?:(\d+):)?(\d+):([\d.]+)", text)
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    seconds = None if not wall else int(wall.group(1) or 0) * 3600 + int(wall.group(2)) * 60 + float(wall.group(3))
    return {
        "wall_s": None if seconds is None else round(seconds, 1),
        "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
    }


def size_mib(path: Path) -> float:
    files = (
        [f for f in path.iterdir() if f.is_file() and not f.name.startswith("tokenizer")] if path.is_dir() else [path]
    )
    return round(sum(f.stat().st_size for f in files) / 2**20, 1)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=["1b", "tiny"], default="1b", help="tiny: a 2-layer shape for a smoke run")
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-runtimes"))
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument(
        "--llama-cpp",
        type=Path,
        help="llama.cpp source tree with build/bin/llama-completion and llama-quantize (without it: no llama.cpp rows)",
    )
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, action="append")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-exports", action="store_true")
    ns = ap.parse_args()
    ns.prompt_tokens = ns.prompt_tokens or [64, 512]
    ns.skipped = skipped_runtimes(ns)
    if ns.llama_cpp is not None and not (ns.llama_cpp / "build" / "bin" / "llama-completion").is_file():
        sys.exit(
            f"error: {ns.llama_cpp / 'build' / 'bin' / 'llama-completion'} is missing: build llama.cpp first "
            "(cmake -B build && cmake --build build --target llama-completion llama-quantize)"
        )
    return ns


def bench(ns: argparse.Namespace, models: dict, tokenizer: Path) -> tuple[int, list[dict]]:
    """One `android_bench --host` call over every model -> (its exit status, its records)."""
    stem = ns.work / f"runtimes_{ns.size}"
    cmd = [sys.executable, "-m", "android_bench", "--host", "--tokenizer", str(tokenizer)]
    cmd += ["--repetitions", str(ns.repetitions), "--max-new-tokens", str(ns.max_new_tokens)]
    cmd += ["--cooldown-temp-c", "200", "--output", str(stem), "--format", "jsonl"]
    if ns.llama_cpp is not None:
        cmd += ["--llamacpp-runner", str(ns.llama_cpp / "build" / "bin" / "llama-completion")]
    for n in ns.prompt_tokens:
        cmd += ["--prompt-tokens", str(n)]
    for label, path in models.items():
        cmd += ["--pte", str(path), "--label", label]
    print("$ python " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    return rc, [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]


def table_rows(records: list[dict], models: dict, prompts: list[int]) -> list[dict]:
    """Records -> one row per model and prompt length: medians of the measured runs (None where one missed it)."""
    measured = [r for r in records if r["phase"] == "measured" and r["status"] == "ok"]
    rows = []
    for label, path in models.items():
        for n in prompts:
            rs = [r for r in measured if r["label"] == label and r["prompt_tokens_requested"] == n]
            med = {
                m: round(statistics.median(r[m] for r in rs), 3) if rs and all(r[m] is not None for r in rs) else None
                for m in METRICS
            }
            rows.append(
                {
                    "label": label,
                    "prompt_tokens": n,
                    "runs": len(rs),
                    "size_mib": size_mib(path),
                    **med,
                    "runner_build": rs[0]["runner_build"] if rs else None,
                }
            )
    return rows


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ns = parse_args()
    for runtime, why in ns.skipped.items():
        print(f"skipping {runtime}: {why}", file=sys.stderr, flush=True)
    ckpt = ns.work / f"llama3_2_{ns.size}_random_hf"
    write_checkpoint(ckpt, ns.size)
    plan = exports(ns, ckpt)
    rc, records = bench(ns, plan["models"], ckpt / "tokenizer.json")
    flags = ("" if ns.size == "1b" else f" --size {ns.size}") + (" --llama-cpp LLAMA_CPP_DIR" if ns.llama_cpp else "")
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "size": ns.size,
        "machine": machine(),
        "repetitions": ns.repetitions,
        "max_new_tokens": ns.max_new_tokens,
        "exports": plan["timed"],
        "rows": table_rows(records, plan["models"], ns.prompt_tokens),
        "skipped": ns.skipped,
        "bench_exit_status": rc,
        "faults": [r["error"] for r in records if r["status"] != "ok"],
        "command": f"python benchmarks/runtimes_1b.py{flags}",
    }
    ns.results.mkdir(parents=True, exist_ok=True)
    (ns.results / f"runtimes_{ns.size}.json").write_text(json.dumps(result, indent=2) + "\n")
    (ns.results / f"runtimes_{ns.size}.md").write_text(render(result))
    print(render(result))
    return rc


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        f"# The same Llama 3.2 {result.get('size', '1b').upper()} weights in ExecuTorch, ONNX Runtime and llama.cpp "
        "(random weights, this machine)",
        "",
        f"{result['date']} · {m.get('cpu', '?')} · {m.get('cores', '?')} cores · "
        f"median of {result['repetitions']} runs after one "
        f"warm-up · {result['max_new_tokens']} new tokens · `android_bench --host`, "
        "one call, same prompts, threads and cool-down",
        "",
        "| model | prompt | decode tok/s | prefill tok/s | TTFT s | peak RSS MiB | file MiB | runner |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in result["rows"]:
        lines.append(
            f"| {r['label']} | {r['prompt_tokens']} | {f(r['decode_tok_s'], '.1f')} | {f(r['prefill_tok_s'], '.1f')} | "
            f"{f(r['ttft_s'], '.3f')} | {f(r['peak_rss_mb'], '.0f')} | {r['size_mib']} | {r['runner_build'] or '-'} |"
        )
    if result["exports"]:
        lines += ["", "| step | wall s | peak RSS MiB |", "|---|---:|---:|"]
        for label, t in result["exports"].items():
            lines.append(
                f"| {label}"
                + (" (an earlier run of this script, from its log)" if t.get("reused") else "")
                + f" | {t['wall_s']} | {t['peak_rss_mb']} |"
            )
    if result.get("skipped"):
        lines += ["", "Skipped: " + "; ".join(f"{k}: {v}" for k, v in result["skipped"].items())]
    if result["faults"]:
        lines += ["", "Faults: " + "; ".join(sorted(set(result["faults"])))]
    lines += [
        "",
        "Peak RSS of the ExecuTorch and ONNX Runtime rows includes their Python host runners' interpreters "
        "(torch's libraries for ExecuTorch); llama.cpp's is a C++ binary.",
        "",
        f"Reproduce: `{result['command']}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
