"""The export's last stage: the lowered program and its companions -> the output folder, all or nothing.

In:  the lowered program (or None when only onnx/gguf are written), the config, checkpoint, quantization report,
     rotations and fine-tune records, and files staged by the formats stage.
Out: `write_outputs` -> `ExportResult`; the folder holds model.pte, the tokenizer, NOTICE, rotations.safetensors
     (SpinQuant), onnx/ and model.gguf (formats), and manifest.json: config, model shape, scheme, versions,
     sha256 of every input and output, sizes (`size_breakdown`), stage times and peak RSS.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from edge.checkpoint import Checkpoint
from edge.checkpoint.tokenizer import CHAT_TEMPLATE_NAME, chat_template_of
from edge.config import ExportConfig
from edge.core.errors import EdgeError
from edge.core.io import BackgroundHashes, building_folder, disk_full_error, sha256_file
from edge.core.machine import versions
from edge.core.progress import Progress
from edge.export.lower import RunnerMetadata, pte_nbytes, write_pte
from edge.model import Transformer
from edge.quant.scheme import QuantReport
from edge.spinquant.rotations import save_rotations

EDGE_DIR = Path(__file__).resolve().parent.parent


NOTICE = EDGE_DIR / "NOTICE"


PTE_NAME = "model.pte"


MANIFEST_NAME = "manifest.json"


ROTATIONS_NAME = "rotations.safetensors"


MANIFEST_VERSION = 1


@dataclass
class ExportResult:
    output_dir: Path
    pte: Path | None  # None when formats leaves out pte
    tokenizer: Path | None
    manifest: Path
    pte_bytes: int
    files: dict[str, int] = field(default_factory=dict)  # every output file (relative path) -> bytes
    stage_seconds: dict[str, float] = field(default_factory=dict)
    size_breakdown: dict[str, int] = field(default_factory=dict)


def _tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a (possibly torchao-quantized) tensor needs at its real bit width."""
    qdata = getattr(t, "qdata", None)
    if qdata is None:
        return t.numel() * t.element_size()
    bits = {torch.int4: 4, torch.int8: 8}.get(getattr(t, "target_dtype", torch.int8), 8)
    total = qdata.numel() * bits // 8
    for name in ("scale", "zero_point"):
        part = getattr(t, name, None)
        if part is not None:
            total += part.numel() * part.element_size()
    return total


def size_breakdown(model: Transformer) -> dict[str, int]:
    """Quantized model -> bytes per tensor kind (at their bit widths, before XNNPACK packing)."""
    kinds: dict[str, int] = {}
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen and not name.startswith("lm_head"):
            continue
        seen.add(id(p))
        if ".adaptor." in name:
            kind = "lora_adapters (float)"
        elif name.startswith("embed_tokens"):
            kind = "embedding"
        elif name.startswith("lm_head"):
            kind = "output_layer"
        elif "norm" in name:
            kind = "norms"
        elif ".self_attn." in name:
            kind = "attention_linears"
        else:
            kind = "ffn_linears"
        kinds[kind] = kinds.get(kind, 0) + _tensor_bytes(p)
    kv = sum(b.numel() * b.element_size() for n, b in model.named_buffers() if "cache" in n)
    kinds["kv_cache (runtime memory, not in .pte)"] = kv
    return kinds


def write_outputs(
    *,
    program,
    config: ExportConfig,
    ckpt: Checkpoint,
    report: QuantReport,
    spinquant: dict,
    finetune: dict | None = None,
    rotations,
    breakdown: dict[str, int],
    metadata: RunnerMetadata | None,
    progress: Progress,
    staged: Path | None = None,
    input_hashes: BackgroundHashes | None = None,
) -> ExportResult:
    """Lowered program (None: no .pte) and staged onnx/ + model.gguf -> the output folder, all or nothing.

    input_hashes: the checkpoint's files being hashed since before lowering (None: hashed here)."""
    out = config.output
    needed = pte_nbytes(program) if program is not None else 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if needed is not None and (free := shutil.disk_usage(out.parent).free) < needed:
            raise EdgeError(
                f"no space left on the device for {out}: the .pte needs {needed / 2**20:.0f} MiB, "
                f"{free / 2**20:.0f} MiB free; nothing was written"
            )
        return _write_folder(
            program=program,
            config=config,
            ckpt=ckpt,
            report=report,
            spinquant=spinquant,
            finetune=finetune,
            rotations=rotations,
            breakdown=breakdown,
            metadata=metadata,
            progress=progress,
            staged=staged,
            input_hashes=input_hashes or BackgroundHashes(input_files(ckpt)),
        )
    except OSError as e:
        full = disk_full_error(e, path=out / PTE_NAME, needed_bytes=needed)
        if full is None:
            raise EdgeError(f"cannot write {out}: {e.strerror or e}") from None
        raise full from None


def input_files(ckpt: Checkpoint) -> list[Path]:
    """The checkpoint's files the manifest records a sha256 of: weights, tokenizer, configs."""
    inputs = [*ckpt.weight_files, ckpt.tokenizer]
    for name in ("config.json", "params.json", "model.safetensors.index.json"):
        if (ckpt.path / name).is_file():
            inputs.append(ckpt.path / name)
    return inputs  # type: ignore[return-value]


def _write_folder(
    *,
    program,
    config,
    ckpt,
    report,
    spinquant,
    finetune,
    rotations,
    breakdown,
    metadata,
    progress,
    staged,
    input_hashes: BackgroundHashes,
) -> ExportResult:
    out = config.output
    with building_folder(out, force=config.force) as tmp:
        pte = tmp / PTE_NAME
        pte_bytes = 0
        digests: dict[Path, str] = {}
        if program is not None:
            pte_bytes, digests[pte] = write_pte(program, pte)
            progress.info(f"wrote {pte_bytes / 2**20:.1f} MiB; hashing inputs and output")
        if staged is not None:
            for part in staged.iterdir():
                part.rename(tmp / part.name)
        written = sorted(p for p in tmp.rglob("*") if p.is_file())  # model.pte, onnx/*, model.gguf
        files = {str(p.relative_to(tmp)): p.stat().st_size for p in written}
        tokenizer = tmp / ckpt.tokenizer.name  # type: ignore[union-attr]
        shutil.copyfile(ckpt.tokenizer, tokenizer)  # type: ignore[arg-type]
        shutil.copyfile(NOTICE, tmp / "NOTICE")
        if template := chat_template_of(ckpt.tokenizer):  # type: ignore[arg-type]
            (tmp / CHAT_TEMPLATE_NAME).write_text(template, encoding="utf-8")  # what edge.generate applies
        if rotations is not None:
            save_rotations(rotations, tmp / ROTATIONS_NAME)
        inputs = input_hashes.result()
        manifest = {
            "manifest_version": MANIFEST_VERSION,
            "config": config.to_dict() | {"checkpoint": str(ckpt.path)},
            "checkpoint_format": ckpt.format.value,
            "model": asdict(ckpt.args) | {"n_params": ckpt.args.n_params},
            "formats": [f.value for f in config.formats],
            "runner_metadata": metadata.methods() if metadata is not None else None,
            "quantization": {
                "scheme": report.scheme,
                "min_weight_sqnr_db": {
                    kind: report.min_sqnr(kind)
                    for kind in ("self_attn", "mlp", "lm_head", "embed_tokens")
                    if any(kind in k for k in report.weight_sqnr_db)
                },
                "spinquant": spinquant,
            },
            "finetune": finetune,
            "versions": versions(),
            "sha256": {
                "inputs": {str(p.relative_to(ckpt.path)): digest for p, digest in inputs.items()},
                "output": {str(p.relative_to(tmp)): digests.get(p) or sha256_file(p) for p in [*written, tokenizer]},
            },
            "size_bytes": {"pte": pte_bytes, "files": files, "by_tensor_kind": breakdown},
            "stage_seconds": {k: round(v, 2) for k, v in progress.stage_seconds.items()},
            "stage_peak_rss_mb": {k: round(v) for k, v in progress.stage_peak_rss_mb.items()},
        }
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return ExportResult(
        output_dir=out,
        pte=out / PTE_NAME if program is not None else None,
        tokenizer=out / tokenizer.name,
        manifest=out / MANIFEST_NAME,
        pte_bytes=pte_bytes,
        files=files,
        stage_seconds=dict(progress.stage_seconds),
        size_breakdown=breakdown,
    )


def quant_summary(config: ExportConfig) -> dict[str, str]:
    q = config.quantization
    return {
        "linear": q.linear.value + (f"/g{q.group_size}" if q.linear.value == "int4" else ""),
        "output": q.output.value,
        "embedding": q.embedding.value,
        "rounding": q.rounding.value,
        "rotation": config.rotation.kind.value,
        "dtype": config.dtype.value,
    }
