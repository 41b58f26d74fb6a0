"""android_bench: measure exported .pte files on Android phones (over adb) or on the host.

`python -m android_bench --serial SERIAL --runner llama_main --pte out/x/model.pte` pushes the
runner, the program and its tokenizer to the phone, runs one warm-up and N measured runs of
ExecuTorch's `llama_main`, and prints the model card's table (decode tok/s, TTFT s, prefill
tok/s, model MiB, RSS MiB) on stdout. `--host` measures the same way through ExecuTorch's runtime
on this machine. See `android_bench.__main__` for the flags and `android_bench.report` for the
outputs (markdown, csv, jsonl, PyTorch benchmark v3 json).
"""

HARNESS_VERSION = "1"
