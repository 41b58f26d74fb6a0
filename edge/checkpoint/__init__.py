"""`edge.checkpoint`: a Llama checkpoint on disk -> its shape, tokenizer and weights.

Layer: imports `edge.core`, `edge.config` and `edge.model`, nothing above them.

    args.py          config.json / params.json -> ModelArgs
    layout.py        tensor names and shapes in edge.model's terms (HF and Meta layouts)
    prequantized.py  what a Meta pre-quantized checkpoint's params.json and scales say
    reading.py       open_checkpoint (validated up front), iter_weights, load_model
    tokenizer.py     the checkpoint's tokenizer, as ExecuTorch's runner loads it
    fixture.py       the embedded fixture model, and when a config may fall back to it
"""

from edge.checkpoint.args import hf_args, meta_args, read_json
from edge.checkpoint.fixture import FIXTURE_CHECKPOINT, resolve_checkpoint
from edge.checkpoint.layout import CheckpointFormat, edge_name, expected_shapes, meta_to_hf_rope_layout
from edge.checkpoint.reading import (
    LLAMA3_BOS,
    LLAMA3_EOS,
    Checkpoint,
    iter_weights,
    load_model,
    open_checkpoint,
    raw_tensors,
)

__all__ = [
    "FIXTURE_CHECKPOINT",
    "LLAMA3_BOS",
    "LLAMA3_EOS",
    "Checkpoint",
    "CheckpointFormat",
    "edge_name",
    "expected_shapes",
    "hf_args",
    "iter_weights",
    "load_model",
    "meta_args",
    "meta_to_hf_rope_layout",
    "open_checkpoint",
    "raw_tensors",
    "read_json",
    "resolve_checkpoint",
]
