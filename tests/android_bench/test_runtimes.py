"""ExecuTorch, ONNX Runtime and llama.cpp side by side: output parsing from recorded samples, the
host table, and a fault test for each new runner (missing, crashing, unreadable, wrong
architecture, a model it cannot load), each keeping what was measured before it."""

from __future__ import annotations

import json
import shutil
import struct

import pytest

from android_bench.__main__ import main
from android_bench.runners import (
    Runtime,
    RuntimeOutputError,
    command,
    genai_config_with_threads,
    llama_build,
    parse_llama_perf,
    parse_model_benchmark,
    runtime_of,
)

# onnxruntime-genai benchmark/c model_benchmark, one repetition (the layout of its WritePerTokenStats).
MODEL_BENCHMARK = """\
Batch size: 1, prompt tokens: 64, tokens to generate: 128
Prompt processing (time to first token):
\tavg (us):       284613
\tavg (tokens/s): 224.868
\tp50 (us):       284613
\tstddev (us):    0
\tn:              1 * 64 token(s)
Token generation:
\tavg (us):       38710.3
\tavg (tokens/s): 25.8329
\tp50 (us):       38644.1
\tstddev (us):    911.2
\tn:              127 * 1 token(s)
Token sampling:
\tavg (us):       51.2
\tavg (tokens/s): 19531.2
\tp50 (us):       51.2
\tstddev (us):    0
\tn:              1 * 1 token(s)
E2E generation (entire generation loop):
\tavg (ms):       5201.3
\tp50 (ms):       5201.3
\tstddev (ms):    0
\tn:              1
Peak working set size (bytes): 1412427776
"""

# llama.cpp llama-completion's stderr, recorded from a build of llama.cpp 0.5.0-dev (build 1, commit 0c1e570) on the
# fixture's GGUF (timestamps and the lines the parser does not read trimmed), and an older build's perf lines.
LLAMA_COMPLETION = """\
0.00.043.466 I generate: n_ctx = 256, n_batch = 2048, n_predict = 32, n_keep = 1
0.00.148.239 I common_perf_print:    sampling time =       0.93 ms
0.00.148.258 I common_perf_print:    samplers time =       0.51 ms /   104 tokens
0.00.148.265 I common_perf_print:        load time =      89.77 ms
0.00.148.267 I common_perf_print: prompt eval time =      89.00 ms /    72 tokens (    1.24 ms per token,   809.02 tokens per second)
0.00.148.268 I common_perf_print:        eval time =      20.28 ms /    31 runs   (    0.65 ms per token,  1528.83 tokens per second)
0.00.148.268 I common_perf_print:       total time =     112.14 ms /   103 tokens
0.00.148.269 I common_perf_print: unaccounted time =       1.93 ms /   1.7 %      (total - sampling - prompt eval - eval) / (total)
0.00.148.269 I common_perf_print:    graphs reused =         30
"""  # noqa: E501 (verbatim tool output)
LLAMA_VERSION = "version: 0.5.0-dev (build 1, commit 0c1e570)\nbuilt with GNU 12.2.0 for Linux x86_64\n"
OLDER_LLAMA = """\
llama_perf_context_print:        load time =     412.36 ms
llama_perf_context_print: prompt eval time =     183.20 ms /    64 tokens (    2.86 ms per token,   349.34 tokens per second)
llama_perf_context_print:        eval time =    2541.10 ms /   127 runs   (   20.01 ms per token,    49.98 tokens per second)
"""  # noqa: E501 (verbatim tool output)


def test_model_benchmark_output_parsed():
    s = parse_model_benchmark(MODEL_BENCHMARK)
    assert (s.prompt_tokens, s.generated_tokens) == (64, 128)
    assert s.prefill_tok_s == pytest.approx(224.868) and s.decode_tok_s == pytest.approx(25.8329)
    assert s.ttft_s == pytest.approx((284613 + 51.2) / 1e6)  # prompt processing + the first token's sampling
    assert json.loads(s.raw_json)["peak_working_set_bytes"] == 1412427776
    with pytest.raises(RuntimeOutputError):
        parse_model_benchmark(MODEL_BENCHMARK.split("Prompt processing")[0])


def test_llama_completion_output_parsed():
    s = parse_llama_perf(LLAMA_COMPLETION)
    assert (s.prompt_tokens, s.generated_tokens) == (72, 32)  # 31 decode runs after the prompt's token
    assert s.prefill_tok_s == pytest.approx(72 / 0.089) and s.decode_tok_s == pytest.approx(31 / 0.02028)
    assert s.ttft_s == pytest.approx(0.089) and s.model_load_s == pytest.approx(0.08977)
    assert llama_build(LLAMA_VERSION) == "llama.cpp b1 (0c1e570)"
    old = parse_llama_perf(OLDER_LLAMA)
    assert (old.prompt_tokens, old.generated_tokens) == (64, 128) and old.decode_tok_s == pytest.approx(127 / 2.5411)
    with pytest.raises(RuntimeOutputError):
        parse_llama_perf("main: llama backend init\n")


def test_runtime_from_path_and_commands(exported, tmp_path):
    assert runtime_of(exported / "model.pte") is Runtime.EXECUTORCH
    assert (
        runtime_of(exported / "onnx") is Runtime.ONNXRUNTIME
        and runtime_of(exported / "onnx" / "model.onnx") is Runtime.ONNXRUNTIME
    )
    assert runtime_of(exported / "model.gguf") is Runtime.LLAMACPP
    cmd = command(
        Runtime.LLAMACPP,
        runner="./llama-completion",
        model="m.gguf",
        prompt_file="p 1.txt",
        new_tokens=128,
        threads=4,
        context=300,
    )
    assert (
        cmd.startswith("./llama-completion --model m.gguf --file 'p 1.txt' --n-predict 128")
        and "--ignore-eos" in cmd
        and "--threads 4" in cmd
    )
    assert (
        command(
            Runtime.ONNXRUNTIME,
            runner="./model_benchmark",
            model="x/onnx",
            prompt_file="p.txt",
            new_tokens=16,
            threads=4,
            context=99,
        )
        == "./model_benchmark --input_folder x/onnx --prompt_file p.txt -g 16 -r 1 -w 0"
    )
    config = json.loads(genai_config_with_threads((exported / "onnx" / "genai_config.json").read_text(), 4))
    assert config["model"]["decoder"]["session_options"]["intra_op_num_threads"] == 4


def _bench(capsys, tmp_path, *args):
    stem = tmp_path / "bench"
    code = main(
        [
            "--host",
            "--prompt-tokens",
            "8",
            "--max-new-tokens",
            "4",
            "--warmup",
            "1",
            "--repetitions",
            "1",
            "--cooldown-temp-c",
            "200",
            "--output",
            str(stem),
            *args,
        ]
    )
    out, err = capsys.readouterr()
    rows = [json.loads(line) for line in stem.with_suffix(".jsonl").read_text().splitlines()]
    return code, out, err, rows


def _errors(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("error: ")]


def test_host_table_puts_executorch_and_onnxruntime_side_by_side(exported, tmp_path, capsys):
    code, out, err, rows = _bench(
        capsys, tmp_path, "--model", str(exported / "model.pte"), "--model", str(exported / "onnx")
    )
    assert code == 0, err
    measured = [r for r in rows if r["phase"] == "measured"]
    assert [r["runtime"] for r in measured] == ["executorch", "onnxruntime"]
    assert all(r["status"] == "ok" for r in measured), measured
    # ONNX Runtime's times come from a microsecond clock. A tiny model can prefill or decode under ExecuTorch's
    # 1 ms clock, and then its rate is left out (None) rather than reported as infinite.
    assert measured[1]["prefill_tok_s"] > 0 and measured[1]["ttft_s"] > 0 and measured[1]["decode_tok_s"] > 0, measured
    assert all(measured[0][k] is None or measured[0][k] >= 0 for k in ("prefill_tok_s", "ttft_s", "decode_tok_s")), (
        measured
    )
    assert measured[1]["generated_tokens"] == 4, measured
    assert all(r["prompt_tokens"] == 8 for r in measured), measured  # the same prompt tokens in both runtimes
    assert measured[1]["runner_build"].startswith("onnxruntime-genai 0.18.0, onnxruntime 1.32.0")
    assert measured[0]["threads"] == measured[1]["threads"], measured
    onnx_files = {f.name: f.stat().st_size for f in (exported / "onnx").iterdir() if not f.name.startswith("tokenizer")}
    assert measured[1]["pte_mb"] == pytest.approx(sum(onnx_files.values()) / 2**20), (measured[1], onnx_files)
    import csv

    with open(tmp_path / "bench.csv") as f:
        assert [(r["label"], r["runtime"]) for r in csv.DictReader(f)] == [
            ("tiny_8da4w", "executorch"),
            ("tiny_8da4w · onnxruntime", "onnxruntime"),
        ]
    v3 = json.loads((tmp_path / "bench.json").read_text())
    assert {row["model"]["extra_info"]["runtime"] for row in v3} == {"executorch", "onnxruntime"}
    table = out.split("| model | decode tok/s")[1].split("\n\n")[0]
    assert (
        "| tiny_8da4w " in table and "| tiny_8da4w · onnxruntime |" in table and "model MiB" in out
    )  # (⚠: a rate under the 1 ms clock)


def test_missing_llama_cpp_keeps_the_other_results(exported, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    code, _, err, rows = _bench(
        capsys, tmp_path, "--model", str(exported / "model.pte"), "--model", str(exported / "model.gguf")
    )
    assert code == 2
    assert _errors(err) == [
        "error: host · tiny_8da4w · llama.cpp: llama.cpp's llama-completion is not on PATH "
        "(build llama.cpp, or pass --llamacpp-runner FILE)"
    ]
    assert [r["runtime"] for r in rows if r["status"] == "ok"] == [
        "executorch",
        "executorch",
    ]  # warm-up + measured kept


def _script(tmp_path, name, body):
    p = tmp_path / name
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(0o755)
    return p


@pytest.mark.parametrize(
    "body, expect",
    [
        ("kill -SEGV $$", "the runner crashed (SIGSEGV"),
        ('echo "hello, not a benchmark"', "cannot parse the runner's output: no 'prompt tokens:' line"),
        (
            'echo "Exception: Load model from x failed" >&2; exit 1',
            "the runner exited with status 1: Exception: Load model from x failed",
        ),
    ],
    ids=["crash", "unreadable", "error-exit"],
)
def test_onnx_runner_faults_are_one_line_each(exported, tmp_path, capsys, body, expect):
    runner = _script(tmp_path, "model_benchmark", body)
    code, _, err, rows = _bench(
        capsys,
        tmp_path,
        "--model",
        str(exported / "model.pte"),
        "--model",
        str(exported / "onnx"),
        "--onnx-runner",
        str(runner),
    )
    assert code == 2
    [line] = _errors(err)
    assert line.startswith("error: host · tiny_8da4w · onnxruntime · prompt 8: ") and expect in line, line
    assert [r["status"] for r in rows if r["runtime"] == "executorch"] == ["ok", "ok"]
    failed = [r for r in rows if r["runtime"] == "onnxruntime"]
    assert len(failed) == 1 and failed[0]["status"] == "failed"  # the warm-up failed; no measured runs were tried


def test_runner_for_another_architecture(exported, tmp_path, capsys):
    header = (
        b"\x7fELF"
        + bytes([2, 1, 1, 0])
        + bytes(8)
        + struct.pack("<HHIQQQIHHHHHH", 2, 183, 1, 0x400000, 64, 0, 0, 64, 56, 0, 64, 0, 0)
    )
    arm = tmp_path / "llama-completion"
    arm.write_bytes(header + bytes(64))  # an arm64 (e_machine 183) executable header
    arm.chmod(0o755)
    code, _, err, rows = _bench(
        capsys, tmp_path, "--model", str(exported / "model.gguf"), "--llamacpp-runner", str(arm)
    )
    assert code == 2
    [line] = _errors(err)
    assert (
        "the runner cannot be executed here (exit 126: built for another CPU architecture" in line
        and "Exec format error" in line
    )
    assert rows[0]["runner_build"].startswith("llama-completion sha256:")


def test_onnx_model_the_runner_cannot_load(exported, tmp_path, capsys):
    broken = tmp_path / "broken" / "onnx"
    shutil.copytree(exported / "onnx", broken)
    (broken / "model.onnx").write_bytes(b"not a protobuf")
    shutil.copy(exported / "manifest.json", broken.parent / "manifest.json")
    code, _, err, rows = _bench(capsys, tmp_path, "--model", str(exported / "model.pte"), "--model", str(broken))
    assert code == 2
    [line] = _errors(err)
    assert "broken · onnxruntime · prompt 8: the runner exited with status 1: Exception:" in line
    assert [r["status"] for r in rows if r["runtime"] == "executorch"] == ["ok", "ok"]
