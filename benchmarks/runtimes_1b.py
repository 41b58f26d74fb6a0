"""The same 1B weights in ExecuTorch, ONNX Runtime and llama.cpp, measured in one run on this machine.

In:  --work DIR (checkpoint, exports; default /tmp/edge-runtimes), --llama-cpp DIR (a llama.cpp
     source tree built with llama-completion and llama-quantize in build/bin), --repetitions N (3),
     --prompt-tokens (64 and 512), --max-new-tokens (64), --skip-exports.
Out: benchmarks/results/runtimes_1b.{md,json}: decode, prefill, TTFT, peak RSS and file size for
       edge .pte        ExecuTorch (TextLLMRunner through android_bench.host_runner)
       edge ONNX        ONNX Runtime (onnxruntime-genai through android_bench.ort_host_runner)
       edge GGUF        llama.cpp's llama-completion, Q4_0/Q8_0 blocks holding edge's integers
       llama.cpp Q4_0   llama.cpp's own path (convert_hf_to_gguf.py --outtype f16, then
                        llama-quantize Q4_0): its rounding, its output layer at Q6_K and its
                        embedding at Q4_0 (a reference row: other bit widths than 8da4w)
     all from one random-weight Llama 3.2 1B checkpoint (Hugging Face layout; the Llama 3 tokenizer
     converted from the `bench` extra's tiktoken file), through `android_bench --host`, in one call.
     Weights are random (no model hub here): speed and memory depend on shapes, not values.

    python benchmarks/runtimes_1b.py --llama-cpp ~/src/llama.cpp
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, ROOT, llama3_tokenizer, machine, measure  # noqa: E402

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


def write_random_hf_checkpoint(folder: Path) -> None:
    """-> folder with config.json, model.safetensors (random bf16, tied embedding), tokenizer.json/_config.json."""
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaConfig
    from transformers.convert_slow_tokenizer import TikTokenConverter

    from edge.checkpoint import expected_shapes, meta_args

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
    if (folder / "model.safetensors").is_file():
        return
    p = PARAMS["1b"]
    args = meta_args(p, folder / "params.json")
    LlamaConfig(
        architectures=["LlamaForCausalLM"],
        hidden_size=args.dim,
        intermediate_size=args.hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        head_dim=args.head_dim,
        vocab_size=args.vocab_size,
        rms_norm_eps=args.norm_eps,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
        bos_token_id=128000,
        eos_token_id=[128001, 128008, 128009],
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        torch_dtype="bfloat16",
    ).save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    shapes = expected_shapes(args)
    state = {
        ("" if n.startswith("lm_head") else "model.") + n: torch.ones(s, dtype=torch.bfloat16)
        if len(s) == 1
        else (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16)
        for n, s in shapes.items()
    }
    save_file(state, str(folder / "model.safetensors.tmp"), metadata={"format": "pt"})
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")


def exports(ns: argparse.Namespace, ckpt: Path) -> dict:
    """Run (or reuse) the exports -> {label: {"model": path, "seconds": ..., "peak_rss_mib": ...}}."""
    out = ns.work / "edge_1b_8da4w"
    bin_dir = ns.llama_cpp / "build" / "bin"
    f16, q4 = ns.work / "llamacpp_1b_f16.gguf", ns.work / "llamacpp_1b_q4_0.gguf"
    steps = {
        "edge export (pte, onnx, gguf)": [
            sys.executable,
            "-m",
            "edge.export",
            "llama3_2_1b_8da4w",
            "--checkpoint",
            str(ckpt),
            "--output",
            str(out),
            "--formats",
            "pte,onnx,gguf",
            "--force",
            "--quiet",
        ],
        # with llama.cpp's own gguf-py, as its README runs it
        "convert_hf_to_gguf.py (f16)": [
            "env",
            f"PYTHONPATH={ns.llama_cpp / 'gguf-py'}",
            sys.executable,
            str(ns.llama_cpp / "convert_hf_to_gguf.py"),
            str(ckpt),
            "--outtype",
            "f16",
            "--outfile",
            str(f16),
        ],
        "llama-quantize Q4_0": [str(bin_dir / "llama-quantize"), str(f16), str(q4), "Q4_0"],
    }
    timed = {}
    outputs = {
        "edge export (pte, onnx, gguf)": out / "model.pte",
        "convert_hf_to_gguf.py (f16)": f16,
        "llama-quantize Q4_0": q4,
    }
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
    return {
        "models": {
            "edge .pte (ExecuTorch)": out / "model.pte",
            "edge ONNX (ONNX Runtime)": out / "onnx",
            "edge GGUF (llama.cpp)": out / "model.gguf",
            "llama.cpp Q4_0 (its own quantization)": q4,
        },
        "timed": timed,
    }


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


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-runtimes"))
    ap.add_argument(
        "--llama-cpp",
        type=Path,
        required=True,
        help="llama.cpp source tree with build/bin/llama-completion and llama-quantize",
    )
    ap.add_argument("--repetitions", type=int, default=3)
    ap.add_argument("--prompt-tokens", type=int, action="append")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--skip-exports", action="store_true")
    ns = ap.parse_args()
    ns.prompt_tokens = ns.prompt_tokens or [64, 512]
    completion = ns.llama_cpp / "build" / "bin" / "llama-completion"
    if not completion.is_file():
        sys.exit(
            f"error: {completion} is missing: build llama.cpp first "
            "(cmake -B build && cmake --build build --target llama-completion llama-quantize)"
        )
    ckpt = ns.work / "llama3_2_1b_random_hf"
    write_random_hf_checkpoint(ckpt)
    plan = exports(ns, ckpt)
    models = plan["models"]
    stem = ns.work / "runtimes_1b"
    cmd = [
        sys.executable,
        "-m",
        "android_bench",
        "--host",
        "--tokenizer",
        str(ckpt / "tokenizer.json"),
        "--repetitions",
        str(ns.repetitions),
        "--max-new-tokens",
        str(ns.max_new_tokens),
        "--cooldown-temp-c",
        "200",
        "--llamacpp-runner",
        str(completion),
        "--output",
        str(stem),
        "--format",
        "jsonl",
    ]
    for n in ns.prompt_tokens:
        cmd += ["--prompt-tokens", str(n)]
    for label, path in models.items():
        cmd += ["--pte", str(path), "--label", label]
    print("$ python " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
    rc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.DEVNULL).returncode
    records = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    measured = [r for r in records if r["phase"] == "measured" and r["status"] == "ok"]
    import statistics

    rows = []
    for label, path in models.items():
        for n in ns.prompt_tokens:
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
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "repetitions": ns.repetitions,
        "max_new_tokens": ns.max_new_tokens,
        "exports": plan["timed"],
        "rows": rows,
        "bench_exit_status": rc,
        "faults": [r["error"] for r in records if r["status"] != "ok"],
        "command": "python benchmarks/runtimes_1b.py --llama-cpp LLAMA_CPP_DIR",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "runtimes_1b.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / "runtimes_1b.md").write_text(render(result))
    print(render(result))
    return rc


def render(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# The same Llama 3.2 1B weights in ExecuTorch, ONNX Runtime and llama.cpp (random weights, this machine)",
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
