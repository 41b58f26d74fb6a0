"""benchmarks/arm_check.py's rules (the emulated run itself is CI's `python benchmarks/arm_check.py`)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture(scope="module")
def arm_check():
    return load_benchmark(BENCHMARKS / "arm_check.py")


def row(**kw):
    return {
        "program": "fixture_spinquant",
        "core": "max",
        "sqnr_db": 40.0,
        "argmax_agree": 32,
        "positions": 32,
        "mean_kl": 1e-4,
    } | kw


def test_sqnr(arm_check):
    ref = np.array([[3.0, 4.0]])
    assert arm_check.sqnr_db(ref, ref) == math.inf
    assert arm_check.sqnr_db(ref, ref + np.array([[0.0, 0.05]])) == pytest.approx(10 * math.log10(25 / 0.0025))


def test_rules_name_the_export_the_core_and_the_numbers(arm_check):
    assert arm_check.check(row(sqnr_db=135.0), dynamic=False, kl_to_float=0.01) == []
    [plain] = arm_check.check(row(program="fixture_bf16", sqnr_db=99.0), dynamic=False, kl_to_float=0.01)
    assert plain == "fixture_bf16 on max: SQNR 99.0 dB against x86 is under 100 dB"
    assert arm_check.check(row(), dynamic=True, kl_to_float=0.005) == []
    bad = arm_check.check(row(sqnr_db=29.0, argmax_agree=30, mean_kl=6e-4), dynamic=True, kl_to_float=0.005)
    assert bad == [
        "fixture_spinquant on max: SQNR 29.0 dB against x86 is under 30 dB",
        "fixture_spinquant on max: 2 argmax misses in 32 positions",
        "fixture_spinquant on max: KL(x86 || Arm) 6.00e-04 is not under a tenth of its KL to the float "
        "model (5.00e-03)",
    ]
