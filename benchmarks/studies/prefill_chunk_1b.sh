#!/usr/bin/env bash
# Prefill chunk size on the Llama 3.2 1B shape (random weights): edge with 128-token prefill calls
# against edge with one call per prompt (max_prefill 2047) and ExecuTorch's own .pte, at equal bytes
# (int4 output layer), measured with ExecuTorch's TextLLMRunner through `android_bench --host`:
# 3 runs per .pte and prompt length in each of two rounds of opposite order, medians of the 6.
#
# Needs the .ptes of benchmarks/executorch_comparison.py in $W (it exports ExecuTorch's); exports
# the two edge variants here when missing. Out: benchmarks/results/prefill_chunk_1b.{md,round1.jsonl,round2.jsonl}
#
#     bash benchmarks/studies/prefill_chunk_1b.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
W=${W:-/tmp/edge-bench}
R=benchmarks/results
CK=$W/llama3_2_1b_random
[ -f "$W/executorch_1b_8da4w.pte" ] || { echo "error: run benchmarks/executorch_comparison.py first (it exports $W/executorch_1b_8da4w.pte)" >&2; exit 2; }
[ -f "$W/edge_1b_int4_output/model.pte" ] || python -m edge.export llama3_2_1b_8da4w --checkpoint "$CK" --output "$W/edge_1b_int4_output" --output-layer int4 --max-prefill 2047 --force --quiet
[ -f "$W/edge_1b_int4_p128/model.pte" ] || python -m edge.export llama3_2_1b_8da4w --checkpoint "$CK" --output "$W/edge_1b_int4_p128" --output-layer int4 --max-prefill 128 --force --quiet
A="--pte $W/executorch_1b_8da4w.pte --label executorch"
B="--pte $W/edge_1b_int4_output/model.pte --label edge_int4_output"
C="--pte $W/edge_1b_int4_p128/model.pte --label edge_int4_output_prefill128"
COMMON="--host --tokenizer $CK/tokenizer.model --repetitions 3 --warmup 1 --max-new-tokens 32 --prompt-tokens 64 --prompt-tokens 512 --baseline executorch --quiet"
python -m android_bench $A $B $C $COMMON --output /tmp/prefill_chunk_round1 > /dev/null
python -m android_bench $C $B $A $COMMON --output /tmp/prefill_chunk_round2 > /dev/null
cp /tmp/prefill_chunk_round1.jsonl $R/prefill_chunk_1b.round1.jsonl
cp /tmp/prefill_chunk_round2.jsonl $R/prefill_chunk_1b.round2.jsonl
python - "$R" <<'PY'
import collections, json, platform, statistics, sys
from pathlib import Path
R = Path(sys.argv[1])
rows, when = collections.defaultdict(list), None
for r in (1, 2):
    for line in (R / f"prefill_chunk_1b.round{r}.jsonl").read_text().splitlines():
        d = json.loads(line)
        when = when or d.get("timestamp")
        if d.get("phase") == "measured" and d.get("status") == "ok":
            rows[(d["label"], d["prompt_tokens_requested"])].append(d)
med = lambda v, k: statistics.median(x[k] for x in v)  # noqa: E731
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
out = [f"# Prefill chunk, Llama 3.2 1B shape, int4 output layer (915 MiB .pte each)", "",
       f"Measured {when} on {cpu}, 2 cores; `bash benchmarks/studies/prefill_chunk_1b.sh`; medians of 6 runs (3 per round, two rounds of opposite order).", "",
       "| .pte | prompt | decode tok/s | prefill tok/s | TTFT s | peak RSS MiB | runs |", "|---|---|---|---|---|---|---|"]
for (label, n), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    out.append(f"| {label} | {n} | {med(v, 'decode_tok_s'):.1f} | {med(v, 'prefill_tok_s'):.1f} | {med(v, 'ttft_s'):.3f} | {med(v, 'peak_rss_mb'):.0f} | {len(v)} |")
out += ["", "Ratios to ExecuTorch's .pte (above 1.0: edge is faster):", "", "| .pte | prompt | decode | prefill | TTFT |", "|---|---|---|---|---|"]
for (label, n), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    if label == "executorch":
        continue
    e = rows[("executorch", n)]
    out.append(f"| {label} | {n} | {med(v, 'decode_tok_s') / med(e, 'decode_tok_s'):.3f} | {med(v, 'prefill_tok_s') / med(e, 'prefill_tok_s'):.3f} | {med(e, 'ttft_s') / med(v, 'ttft_s'):.3f} |")
(R / "prefill_chunk_1b.md").write_text("\n".join(out) + "\n")
print("\n".join(out))
PY
