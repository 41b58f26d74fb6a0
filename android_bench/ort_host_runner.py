"""`python -m android_bench.ort_host_runner`: onnxruntime-genai's `model_benchmark` on the host.

In:  model_benchmark's flags: `-i/--input_folder`, `--prompt_file` (or `--prompt`), `-g`, `-r`, `-w`.
Out: what model_benchmark prints (benchmark/c/main.cpp), timed the same way around the same calls
     (AppendTokens, the first GenerateNextToken, each later one), through onnxruntime-genai's
     Python package: the same C++ generator and ONNX Runtime kernels. Exit 1 with "Exception: ..."
     on stderr when the model cannot be loaded, as model_benchmark does.

`--host` benchmarks of an ONNX model run this, so the host and a phone are parsed the same way.
Its RSS includes the Python interpreter.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time


def _per_token(label: str, samples_s: list[float], tokens: int) -> str:
    if not samples_s:
        return (
            f"{label}:\n\tavg (us):       nan\n\tavg (tokens/s): nan\n\tp50 (us):       nan\n"
            f"\tstddev (us):    nan\n\tn:              0 * {tokens} token(s)\n"
        )
    avg = statistics.fmean(samples_s) * 1e6
    sd = statistics.stdev(samples_s) * 1e6 if len(samples_s) > 1 else 0.0
    return (
        f"{label}:\n\tavg (us):       {avg:g}\n\tavg (tokens/s): {1e6 / avg * tokens:g}\n\tp50 (us):       "
        f"{sorted(samples_s)[len(samples_s) // 2] * 1e6:g}\n\tstddev (us):    {sd:g}\n"
        f"\tn:              {len(samples_s)} * {tokens} token(s)\n"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="model_benchmark (android_bench.ort_host_runner)")
    p.add_argument("-i", "--input_folder", required=True)
    p.add_argument("--prompt")
    p.add_argument("--prompt_file")
    p.add_argument("-g", "--generation_length", type=int, default=128)
    p.add_argument("-r", "--repetitions", type=int, default=5)
    p.add_argument("-w", "--warmup", type=int, default=1)
    ns = p.parse_args(argv)
    try:
        import onnxruntime_genai as og

        model = og.Model(ns.input_folder)
        tokenizer = og.Tokenizer(model)
        if ns.prompt is not None:
            prompt = ns.prompt
        else:
            prompt = open(ns.prompt_file, encoding="utf-8").read() if ns.prompt_file else "A"
        ids = tokenizer.encode(prompt)
    except Exception as e:  # model_benchmark's own catch-all: one line, exit 1
        print(f"Exception: {str(e).splitlines()[0] if str(e) else type(e).__name__}", file=sys.stderr)
        return 1
    total = len(ids) + ns.generation_length
    prefill, sample, decode = [], [], []
    for i in range(ns.warmup + ns.repetitions):
        params = og.GeneratorParams(model)
        params.set_search_options(max_length=total, min_length=total, do_sample=False)
        gen = og.Generator(model, params)
        t0 = time.perf_counter()
        gen.append_tokens(ids)
        t1 = time.perf_counter()
        gen.generate_next_token()
        done = gen.is_done()
        t2 = time.perf_counter()
        steps = []
        while not done:
            t = time.perf_counter()
            gen.generate_next_token()
            done = gen.is_done()
            steps.append(time.perf_counter() - t)
        if i >= ns.warmup:
            prefill.append(t1 - t0)
            sample.append(t2 - t1)
            decode += steps
    print(f"Batch size: 1, prompt tokens: {len(ids)}, tokens to generate: {ns.generation_length}")
    sys.stdout.write(_per_token("Prompt processing (time to first token)", prefill, len(ids)))
    sys.stdout.write(_per_token("Token generation", decode, 1))
    sys.stdout.write(_per_token("Token sampling", sample, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
