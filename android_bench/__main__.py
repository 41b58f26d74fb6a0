"""`python -m android_bench [--host | --serial S ...] --pte X.pte [--pte Y.pte] [flags]`

In:  flags, each one field of `android_bench.config.BenchConfig` (`--max-new-tokens` is
     `max_new_tokens`), and optionally `--config bench.yaml` with the same keys (flags win).
     Phone:  --runner llama_main (arm64-v8a) and --pte; --serial picks devices (repeatable;
             default $ANDROID_SERIAL, else the only device attached).
     Host:   --host --pte X.pte --tokenizer T is enough.
Out: the table (markdown by default, `--format`) on stdout; progress on stderr; with
     `--output STEM`, STEM.md, STEM.csv, STEM.jsonl and STEM.json (atomic writes).
     Exit 0 when every configuration measured; exit 2 with one `error:` line per fault
     otherwise (bad input, no adb, no device, push failure, runner crash, unreadable output,
     disconnect), after writing whatever was measured. Ctrl-C kills the runner on the phone and
     exits 130, also after writing. `python -m android_bench.farm` runs the same on AWS Device Farm.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from edge.core.errors import EdgeError
from android_bench.config import FIELDS, BenchConfig, LengthFlag, OutputFormat, Target


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m android_bench",
        description="Benchmark ExecuTorch .pte files on Android phones over adb, or on this machine (--host).",
    )
    p.add_argument("--config", type=Path, help="YAML file with any of the keys below (flags override it)")
    t = p.add_argument_group("where")
    t.add_argument("--target", choices=[x.value for x in Target], help="android (default) or host")
    t.add_argument("--host", dest="target", action="store_const", const=Target.HOST.value, help="same as --target host")
    t.add_argument("--serial", action="append", help="device serial (repeatable: benchmarked in turn); default: the only one attached")
    t.add_argument("--runner", type=Path, help="llama_main built for arm64-v8a (on --host: optional, a host-built llama_main)")
    t.add_argument("--onnx-runner", type=Path, help="onnxruntime-genai's model_benchmark, for ONNX models (on --host: default "
                   "android_bench.ort_host_runner)")
    t.add_argument("--llamacpp-runner", type=Path, help="llama.cpp's llama-completion, for .gguf models (on --host: default the one on PATH)")
    t.add_argument("--device-dir", help="work folder on the phone (default /data/local/tmp/edge_bench)")
    m = p.add_argument_group("what")
    m.add_argument("--pte", "--model", dest="pte", action="append", type=Path,
                   help="model to measure (repeatable): a .pte, an ONNX folder or a .gguf, each in its own runtime")
    m.add_argument("--label", action="append", help="row name for each --pte, in order (default: the .pte's folder name)")
    m.add_argument("--tokenizer", type=Path, help="tokenizer for every .pte (default: tokenizer.json/.model beside each)")
    m.add_argument("--baseline", help="label of the row the ratios are against (default: the bf16 export)")
    r = p.add_argument_group("how")
    r.add_argument("--prompt-tokens", action="append", type=int, help="prompt length in tokens (repeatable; default 64)")
    r.add_argument("--max-new-tokens", type=int, help="tokens to generate (default 128)")
    r.add_argument("--length-flag", choices=[x.value for x in LengthFlag], help="runner flag for the length: auto (default: max_new_tokens where the runner has it), max_new_tokens, seq_len")
    r.add_argument("--repetitions", type=int, help="measured runs per configuration (default 5)")
    r.add_argument("--warmup", type=int, help="warm-up runs before them (default 1)")
    r.add_argument("--threads", type=int, help="llama_main --cpu_threads (default: the mask's size, else the runner's choice)")
    r.add_argument("--pin-big-cores", action="store_true", default=None, help="taskset to the cores that are not little (A53/A55/A57/A510/A520)")
    r.add_argument("--taskset", help="explicit taskset CPU mask in hex (e.g. f0)")
    r.add_argument("--cooldown-temp-c", type=float, help="before each run, wait until the battery is cooler than this (default 40)")
    r.add_argument("--cooldown-timeout-s", type=float, help="longest cool-down wait (default 120)")
    r.add_argument("--cooldown-poll-s", type=float, help="seconds between temperature readings (default 5)")
    r.add_argument("--max-temp-rise-c", type=float, help="warn when a run heats the battery by more than this (default 5)")
    r.add_argument("--run-timeout-s", type=float, help="a run taking longer fails (default 1800)")
    r.add_argument("--reconnect-wait-s", type=float, help="after a disconnect, wait this long to kill the runner left on the phone (default 30)")
    r.add_argument("--rss-interval-s", type=float, help="seconds between /proc/<pid>/status samples (default 0.2)")
    o = p.add_argument_group("output")
    o.add_argument("--output", type=Path, help="write STEM.md, STEM.csv, STEM.jsonl, STEM.json")
    o.add_argument("--format", choices=[x.value for x in OutputFormat], help="what stdout gets (default md)")
    o.add_argument("--quiet", action="store_true", default=None, help="no progress on stderr")
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict[str, Any]:
    """Parsed flags -> the config keys they set (unset flags set nothing)."""
    out = {}
    for name in FIELDS:
        value = getattr(ns, name, None)
        if value is None:
            continue
        out[name] = str(value) if isinstance(value, Path) else ([str(v) for v in value] if name == "pte" else value)
    return out


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    from android_bench.bench import Session
    from android_bench.models import describe_models, pick_baseline
    from android_bench.config import load_bench_config
    from android_bench.report import render, write_all
    from android_bench.targets import make_targets
    from edge.core.progress import Progress

    session = None
    baseline = None
    targets: list = []
    try:
        config: BenchConfig = load_bench_config(config=ns.config, overrides=overrides_from_args(ns))
        progress = Progress(quiet=config.quiet)
        models = describe_models(config)
        baseline = pick_baseline(config, models)
        targets = make_targets(config)
        session = Session(config=config, models=models, progress=progress)
        session.run(targets)
    except EdgeError as e:  # BenchError and edge.io errors alike
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        if session is None:
            print("error: interrupted; nothing was measured", file=sys.stderr)
            return 130
        session.faults.append("interrupted")
    except Exception:
        # A bug, not a fault: keep what was measured, then let the traceback show.
        if session is not None and session.records and config.output is not None:
            write_all(session.result(baseline=baseline), config.output)
        raise
    finally:
        for target in targets:
            target.close()
        if session is not None:
            session.close()
    result = session.result(baseline=baseline)
    if config.output is not None:
        try:
            paths = write_all(result, config.output)
        except OSError as e:
            print(f"error: cannot write {config.output}.*: {e.strerror}", file=sys.stderr)
            return 2
        progress.info("wrote " + ", ".join(str(p) for p in paths))
    sys.stdout.write(render(result, config.format))
    sys.stdout.flush()
    for fault in result.faults:
        print(f"error: {fault}", file=sys.stderr)
    if "interrupted" in result.faults:
        return 130
    return 2 if result.faults else 0


if __name__ == "__main__":
    sys.exit(main())
