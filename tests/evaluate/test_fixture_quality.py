"""The shipped fixture model's quality through each shipped export, on text it never trained on.

Plain 8da4w PTQ must visibly cost quality (the fixture was sized so that it does: see
benchmarks/results/fixture_recipe_sweep.md), but stay within a stated bound; bf16 must
stay at the reference; SpinQuant (optimized rotations + GPTQ fitted to float targets, calibrated on
the fixture's held-in calibration.txt) must recover most of plain PTQ's gap (see the test for the
bounds and the measured values); QAT + LoRA (`python -m edge.finetune
fixture_qat_lora` on the same held-in text, then `edge.export`) must recover at least 90% of the
perplexity gap, with KL and top-1 agreement reported beside it.
"""

import os

import pytest
import torch

from edge.checkpoint import FIXTURE_CHECKPOINT
from edge.evaluate import evaluate
from edge.evaluate.metrics import gap_recovered
from tests.conftest import export_tiny

HELDOUT = FIXTURE_CHECKPOINT / "heldout.txt"
CONTEXT, WINDOWS = 256, 40  # the README's tables use the same 40 windows
KL_RECOVERED_MIN, TOP1_RECOVERED_MIN, PPL_RECOVERED_MIN = 0.62, 0.45, 0.55


@pytest.fixture(scope="module")
def fixture_results(tmp_path_factory):
    results = {}
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.finetune.run import run_finetune

    tuned = tmp_path_factory.mktemp("qat_lora") / "finetuned"
    # Other test modules pin torch to one thread; the fine-tune runs as `python -m edge.finetune` does (one
    # thread per core), which is also how benchmarks/qat_quality_table.py measured it: same result, bit for bit.
    threads = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        run_finetune(
            load_config(config="fixture_qat_lora", overrides={"finetune": {"output": str(tuned)}}),
            checkpoint=None,
            resume=False,
            force=False,
            progress=Progress(quiet=True),
        )
    finally:
        torch.set_num_threads(threads)
    for name in ("fixture_bf16", "fixture_8da4w", "fixture_spinquant", "fixture_qat_lora"):
        # full_logits: one call per window (bf16 has no fast x86 kernels; token by token is slow).
        ckpt = tuned if name == "fixture_qat_lora" else FIXTURE_CHECKPOINT
        out = export_tiny(ckpt, tmp_path_factory.mktemp(name) / "out", name, max_context=2 * CONTEXT, full_logits=True)
        results[name] = evaluate(
            pte_path=out / "model.pte",
            reference=FIXTURE_CHECKPOINT,
            text_path=HELDOUT,
            context=CONTEXT,
            max_windows=WINDOWS,
        )
    return results


def test_fixture_is_trained():
    assert HELDOUT.is_file(), "edge/assets/fixture/heldout.txt missing: the trained fixture has not landed"


def test_bf16_pte_stays_at_the_reference(fixture_results):
    r = fixture_results["fixture_bf16"]
    assert r.reference_perplexity < 200  # trained: a random 8192-token model scores ~8000
    assert r.pte_perplexity == pytest.approx(r.reference_perplexity, rel=0.01)
    assert r.top1_agreement > 0.97


def test_8da4w_costs_quality_within_bound(fixture_results):
    bf16, q = fixture_results["fixture_bf16"], fixture_results["fixture_8da4w"]
    # Plain PTQ visibly hurts the fixture but stays under a stated bound of +6%. The README's table
    # (40 windows): +2.0% perplexity, top-1 agreement 90.2% against bf16's 98.6%, KL 0.0169 against 0.00013.
    assert q.pte_perplexity > 1.01 * bf16.pte_perplexity
    assert q.pte_perplexity < 1.06 * bf16.pte_perplexity
    assert q.top1_agreement < bf16.top1_agreement - 0.04
    assert q.mean_kl > 20 * bf16.mean_kl


def test_spinquant_recovers_most_of_the_ptq_gap(fixture_results):
    """SpinQuant (optimized rotations + online Hadamard + GPTQ fitted to float targets) closes most of
    plain PTQ's distance from bf16.

    Measured on these 40 windows: with two threads (benchmarks/results/quality_fixture.md, as
    `python -m edge.export` runs on this 2-core machine) 72% of the KL gap, 65% of the top-1 gap and 76%
    of the perplexity gap; with one thread (as this module runs the export) 71% / 54% / 68% on an Intel
    Xeon and 71% / 54% / 64% on an AMD EPYC. The rotation optimization's floating-point order changes with
    the thread count and the CPU and moves the result, so the bounds below are under all three. GPTQ as
    SpinQuant's code runs it (no float targets) recovered
    59% / 39% / 50%. Top-1 recovers less than KL because flips follow the error's amplitude and KL its
    square (benchmarks/results/top1_vs_kl_fixture.md: on all 145 held-out windows 70% of the KL gap, 59% of
    the top-1 gap, 50% of the amplitude). The rotated weights already sit at a Gaussian matrix's int4 SQNR, and
    more calibration text, coordinate descent after GPTQ or end-to-end scale tuning reach at most 73% / 60% on
    those windows (benchmarks/results/spinquant_fixture_ceiling.md).
    """
    bf16, ptq, sq = (fixture_results[n] for n in ("fixture_bf16", "fixture_8da4w", "fixture_spinquant"))
    kl = gap_recovered(sq.mean_kl, ptq=ptq.mean_kl, base=bf16.mean_kl)
    top1 = gap_recovered(sq.top1_agreement, ptq=ptq.top1_agreement, base=bf16.top1_agreement)
    ppl = gap_recovered(sq.pte_perplexity, ptq=ptq.pte_perplexity, base=bf16.pte_perplexity)
    print(f"SpinQuant recovers {kl:.1%} of the KL gap, {top1:.1%} of the top-1 gap, {ppl:.1%} of the perplexity gap")
    assert kl >= KL_RECOVERED_MIN, kl
    assert top1 >= TOP1_RECOVERED_MIN, top1
    assert ppl >= PPL_RECOVERED_MIN, ppl


def test_qat_lora_recovers_nine_tenths_of_the_ptq_perplexity_gap(fixture_results):
    """QAT (400 steps) then LoRA (200 steps) with the export's own fake quantization, distilled from the float
    fixture on its held-in text (about 7 minutes of this CPU), exported with the float adapters.

    Measured on these 40 windows: 98% of the perplexity gap, 69% of the KL gap and 57% of the top-1 gap
    (benchmarks/results/quality_qat_fixture.md, AMD EPYC, with the control rows); 92% / 68% / 56% on an Intel
    Xeon while choosing the recipe.
    """
    bf16, ptq, qat = (fixture_results[n] for n in ("fixture_bf16", "fixture_8da4w", "fixture_qat_lora"))
    ppl = gap_recovered(qat.pte_perplexity, ptq=ptq.pte_perplexity, base=bf16.pte_perplexity)
    kl = gap_recovered(qat.mean_kl, ptq=ptq.mean_kl, base=bf16.mean_kl)
    top1 = gap_recovered(qat.top1_agreement, ptq=ptq.top1_agreement, base=bf16.top1_agreement)
    print(f"QAT+LoRA recovers {ppl:.1%} of the perplexity gap, {kl:.1%} of the KL gap, {top1:.1%} of the top-1 gap")
    assert ppl >= 0.9, ppl
    assert kl >= 0.5 and top1 >= 0.4, (kl, top1)  # reported beside it; bounds with a margin below the measured values
