"""The Python API: edge.export / edge.evaluate / edge.generate / edge.finetune are the commands as functions."""

from __future__ import annotations

import subprocess
import sys

import pytest

import edge
from edge.checkpoint import FIXTURE_CHECKPOINT
from edge.core.errors import EdgeError


def test_importing_edge_loads_no_torch():
    code = "import sys, edge; assert callable(edge.export); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_export_evaluate_generate_from_python(tiny_hf, tmp_path):
    result = edge.export(
        "llama3_2_1b_8da4w", checkpoint=tiny_hf, output=tmp_path / "q", max_context=128, full_logits=True, quiet=True
    )
    assert result.pte == tmp_path / "q" / "model.pte" and result.pte.stat().st_size == result.pte_bytes
    text = tmp_path / "text.txt"
    text.write_text((FIXTURE_CHECKPOINT / "heldout.txt").read_text()[:20000])
    scored = edge.evaluate(result.pte, reference=tiny_hf, text=text, context=64, max_windows=2)
    assert scored.predicted_tokens == 2 * 63 and 0 <= scored.mean_kl < 1.0
    gen = edge.generate(result.output_dir, "The quick brown fox", max_new_tokens=4, on_text=lambda piece: None)
    assert gen.generated_tokens == 4


def test_config_object_and_sections_as_dicts(tmp_path):
    from edge.config import load_config

    base = load_config(config="fixture_8da4w", overrides={"output": str(tmp_path / "unused")})
    with pytest.raises(EdgeError, match="group_size"):
        edge.export(base, output=tmp_path / "x", quantization={"group_size": 48}, quiet=True)
    assert not (tmp_path / "x").exists()


def test_llama_config_without_checkpoint_is_refused(tmp_path):
    with pytest.raises(EdgeError, match="--checkpoint"):
        edge.export("llama3_2_1b_8da4w", output=tmp_path / "x")
    with pytest.raises(EdgeError, match="--checkpoint"):
        edge.finetune("llama3_2_1b_qat_lora", data=tmp_path / "d.txt", output=tmp_path / "ft")
