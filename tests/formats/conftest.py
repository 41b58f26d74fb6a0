"""The formats tests' shared module fixtures: the fixture exported as [pte, onnx, gguf], the quantized eager
model it was written from, and a 128-token held-out window."""

from __future__ import annotations

import pytest
import torch

from edge.checkpoint import FIXTURE_CHECKPOINT
from edge.config import parse_config
from edge.core.progress import Progress
from edge.export.pipeline import run_export

FIXTURE_8DA4W = {"linear": "int4", "group_size": 32, "output": "int8", "embedding": "int8"}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("formats") / "fixture"
    config = parse_config(
        {"output": str(out), "max_context": 256, "formats": ["pte", "onnx", "gguf"], "quantization": FIXTURE_8DA4W},
        source="test",
    )
    result = run_export(config, progress=Progress(quiet=True))
    return out, result


@pytest.fixture(scope="module")
def eager(exported):
    """The quantized eager model the three files were written from (quantization is deterministic)."""
    from edge.checkpoint import load_model, open_checkpoint
    from edge.quant.ptq import quantize_model

    config = parse_config({"output": "unused", "quantization": FIXTURE_8DA4W}, source="test")
    ckpt = open_checkpoint(FIXTURE_CHECKPOINT)
    model = load_model(ckpt, max_context=256, dtype=None, full_logits=True)
    quantize_model(model, config.quantization, dtype=torch.float32)
    return ckpt, model


@pytest.fixture(scope="module")
def window(eager):
    from edge.checkpoint.tokenizer import load_tokenizer

    ckpt, _ = eager
    text = (FIXTURE_CHECKPOINT / "heldout.txt").read_text()[:4000]
    ids = load_tokenizer(ckpt.tokenizer).encode(text, bos=False, eos=False)
    return [ckpt.bos_id, *ids[:127]]
