"""The export stages for `formats: [onnx, gguf]`: checks before the long work, files after quantizing.

In:  `ExportConfig`, the opened `Checkpoint` (and `Finetuned`); later the quantized model.
Out: `check_formats` raises EdgeError for a request no format can hold (an online Hadamard, LoRA
     adapters kept unmerged, a missing optional package, a tokenizer with no mapping);
     `write_formats` writes onnx/ and model.gguf into a staging folder that `write_outputs`
     moves into the output folder with everything else (all or nothing).
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

from edge.checkpoint import Checkpoint
from edge.config import DType, ExportConfig, Format, WeightBits
from edge.core.errors import EdgeError
from edge.core.io import discard
from edge.core.progress import Progress

ONNX_DIR = "onnx"
EXTRA = {Format.ONNX: ("onnx", "onnxruntime"), Format.GGUF: ("gguf",)}


def check_formats(config: ExportConfig, ckpt: Checkpoint, *, adapters_kept: bool) -> None:
    """Everything `write_formats` needs, checked before any long stage."""
    for fmt in (f for f in config.formats if f is not Format.PTE):
        name = fmt.value
        missing = [m for m in EXTRA[fmt] if importlib.util.find_spec(m) is None]
        if missing:
            raise EdgeError(f"formats: {name} needs {', '.join(missing)}: pip install 'edge[{name}]'")
        if ckpt.prequantized_group_size is not None:
            raise EdgeError(
                f"formats: {name} from a pre-quantized Meta checkpoint is not supported (its online Hadamard or "
                "LoRA adapters have no mapping); export it as a .pte"
            )
        if config.rotation.enabled and config.rotation.online_hadamard:
            raise EdgeError(
                f"formats: {name} has no op for SpinQuant's online Hadamard (R4); "
                "export with rotation.online_hadamard: false (R1/R2 live in the weights and map as they are)"
            )
        if adapters_kept:
            raise EdgeError(
                f"formats: {name} has no mapping for LoRA adapters kept beside the int4 weights; "
                "export with finetune.adapters: merge"
            )
        if not (ckpt.path / "tokenizer.json").is_file():
            raise EdgeError(
                f"formats: {name} needs the checkpoint's tokenizer.json (onnxruntime-genai and llama.cpp "
                f"read Hugging Face tokenizers); {ckpt.path} has only "
                f"{ckpt.tokenizer.name if ckpt.tokenizer else 'none'}"
            )
        if config.dtype is not DType.FP32:
            raise EdgeError(f"formats: {name} is written with fp32 activations; use dtype fp32")
    if Format.GGUF in config.formats:
        q = config.quantization
        if q.linear is WeightBits.INT4 and q.group_size != 32 or q.output is WeightBits.INT4 and q.group_size != 32:
            raise EdgeError(
                f"formats: gguf stores int4 as Q4_0 blocks of 32; quantization.group_size is {q.group_size}"
            )
        if ckpt.args.dim % 32 or ckpt.args.hidden_dim % 32:
            raise EdgeError("formats: gguf's Q8_0/Q4_0 blocks need widths that are multiples of 32")


def write_formats(model, config: ExportConfig, ckpt: Checkpoint, *, progress: Progress) -> Path | None:
    """Quantized model -> a staging folder beside the output holding onnx/ and/or model.gguf (None: nothing to
    write)."""
    wanted = [f for f in config.formats if f is not Format.PTE]
    if not wanted:
        return None
    out = config.output
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.formats-"))
    try:
        common = dict(
            checkpoint_dir=ckpt.path, context=config.max_context, bos_id=ckpt.bos_id, eos_ids=list(ckpt.eos_ids)
        )
        if Format.ONNX in wanted:
            from edge.formats.onnx_graph import write_onnx_folder

            with progress.stage("onnx", "MatMulNBits int4/int8 + GroupQueryAttention, for onnxruntime-genai"):
                n = write_onnx_folder(model, staging / ONNX_DIR, **common)
                progress.info(f"wrote {ONNX_DIR}/ ({n / 2**20:.1f} MiB)")
        if Format.GGUF in wanted:
            from edge.formats.gguf_file import GGUF_NAME, write_gguf

            with progress.stage("gguf", "Q4_0 / Q8_0 blocks, for llama.cpp"):
                n = write_gguf(model, staging / GGUF_NAME, **common)
                progress.info(f"wrote {GGUF_NAME} ({n / 2**20:.1f} MiB)")
    except BaseException:
        discard(staging)
        raise
    return staging
