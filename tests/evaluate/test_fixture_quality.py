"""The shipped fixture model's quality through each shipped export, on text it never trained on.

Plain 8da4w PTQ must cost perplexity (the fixture has the outlier channels of a
trained model), but stay within a stated bound; bf16 must stay at the reference.
"""

import pytest

from edge.evaluate import evaluate
from edge.export.pipeline import DEFAULT_CHECKPOINT
from tests.conftest import export_tiny

HELDOUT = DEFAULT_CHECKPOINT / "heldout.txt"
CONTEXT, WINDOWS = 256, 6


@pytest.fixture(scope="module")
def fixture_results(tmp_path_factory):
    results = {}
    for name in ("fixture_bf16", "fixture_8da4w"):
        out = export_tiny(DEFAULT_CHECKPOINT, tmp_path_factory.mktemp(name) / "out", name, max_context=2 * CONTEXT)
        results[name] = evaluate(pte_path=out / "model.pte", reference=DEFAULT_CHECKPOINT, text_path=HELDOUT,
                                 context=CONTEXT, max_windows=WINDOWS)
    return results


def test_fixture_is_trained():
    assert HELDOUT.is_file(), "edge/assets/fixture/heldout.txt missing: the trained fixture has not landed"


def test_bf16_pte_stays_at_the_reference(fixture_results):
    r = fixture_results["fixture_bf16"]
    assert r.reference_perplexity < 200  # trained: a random 8192-token model scores ~8000
    assert r.pte_perplexity == pytest.approx(r.reference_perplexity, rel=0.01)
    assert r.top1_agreement > 0.97


def test_8da4w_costs_perplexity_within_bound(fixture_results):
    bf16, q = fixture_results["fixture_bf16"], fixture_results["fixture_8da4w"]
    assert q.pte_perplexity > bf16.pte_perplexity  # 4-bit weights hurt a trained model
    assert q.pte_perplexity < 1.25 * bf16.pte_perplexity  # ...but by less than 25%
    assert 0.80 < q.top1_agreement < 0.999
