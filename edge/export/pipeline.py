"""The export pipeline: checkpoint -> model -> quantized model -> program -> .pte + manifest.

In:  `ExportConfig`.
Out: an output folder, created atomically (built beside the target, then renamed):
       model.pte                 the ExecuTorch program (XNNPACK, KV cache, runner metadata)
       tokenizer.json|.model     the checkpoint's tokenizer, so the folder is all a phone needs
       manifest.json             config, model shape, scheme per layer kind, versions,
                                 sha256 of inputs and output, size breakdown by tensor kind
       NOTICE                    Llama 3.2 Community License notice and "Built with Llama"
     and an `ExportResult` (paths, sizes, stage times) for the summary.

       rotations.safetensors     SpinQuant's R1/R2, when the export rotates (reusable: rotation.file)

Stages, each a function from artifact to artifact:
  prepare -> make_rotations -> load_model -> quantize_model (rotate + round, block by block)
          -> export_program -> lower_program -> write_outputs
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field
from importlib import metadata as importlib_metadata
from pathlib import Path

import torch

from edge.quant.calibration import Calibration
from edge.checkpoint import FIXTURE_CHECKPOINT, Checkpoint, load_model, open_checkpoint
from edge.config import Device, DType, ExportConfig, Format, Rounding
from edge.core.errors import EdgeError
from edge.core.io import (
    BackgroundHashes,
    building_folder,
    check_output_path,
    discard,
    disk_full_error,
    sha256_file,
)
from edge.export.lower import RunnerMetadata, export_program, lower_program, pte_nbytes, write_pte
from edge.core.memory import trim_heap
from edge.model import Transformer
from edge.core.progress import Progress
from edge.export.finetune_stage import Finetuned, attach, check_finetuned, finetune_record
from edge.export.formats_stage import check_formats, write_formats
from edge.export.rotation_stage import check_rotation, calibration_for, make_rotations, spinquant_record
from edge.quant.ptq import GPTQInputs, quantize_model
from edge.quant.scheme import QuantReport, check_group_size

EDGE_DIR = Path(__file__).resolve().parent.parent
NOTICE = EDGE_DIR / "NOTICE"
PTE_NAME = "model.pte"
MANIFEST_NAME = "manifest.json"
ROTATIONS_NAME = "rotations.safetensors"
MANIFEST_VERSION = 1

TORCH_DTYPES = {DType.FP32: torch.float32, DType.BF16: torch.bfloat16}


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


def _check_output_free(config: ExportConfig) -> None:
    out = config.output
    check_output_path(out)
    if out.exists() and not config.force:
        raise EdgeError(f"output {out} already exists (pass --force to replace it)")
    if out.exists() and not out.is_dir():
        raise EdgeError(f"output {out} exists and is not a folder")


@dataclass(frozen=True)
class Prepared:
    """Everything checked before the long stages: the checkpoint and the calibration windows."""

    ckpt: Checkpoint
    calibration: Calibration | None = None
    finetuned: Finetuned | None = None  # a checkpoint edge.finetune wrote: its record and adapters


def prepare(config: ExportConfig) -> Prepared:
    """ExportConfig -> Prepared; every cheap check runs here, before any long stage."""
    _check_output_free(config)
    ckpt = open_checkpoint(config.checkpoint or FIXTURE_CHECKPOINT)
    if config.max_context > ckpt.args.max_position_embeddings:
        raise EdgeError(
            f"max context {config.max_context} is longer than the {ckpt.args.max_position_embeddings} tokens the model supports"
        )
    if ckpt.tokenizer is None:
        raise EdgeError(f"{ckpt.path} has no tokenizer.json or tokenizer.model beside the weights")
    with torch.device("meta"):  # shapes only: the group-size check needs the modules, not the weights
        check_group_size(Transformer(ckpt.args, max_context=2), config.quantization)
    if config.device is Device.CUDA and not torch.cuda.is_available():
        raise EdgeError("device cuda: no CUDA GPU is visible to torch here")
    if ckpt.prequantized_group_size is not None:
        if config.dtype is not DType.FP32:
            raise EdgeError(f"{ckpt.path} is pre-quantized with fp32 scales: export it with dtype fp32")
        check_formats(config, ckpt, adapters_kept=False)
        return Prepared(ckpt=ckpt)  # its rotations and integers are used as they are: no calibration
    check_rotation(config, ckpt)
    finetuned = check_finetuned(config, ckpt)
    check_formats(config, ckpt, adapters_kept=finetuned is not None and finetuned.adapters is not None and not finetuned.merge)
    return Prepared(ckpt=ckpt, calibration=calibration_for(config, ckpt), finetuned=finetuned)


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
            raise EdgeError(f"no space left on the device for {out}: the .pte needs {needed / 2**20:.0f} MiB, "
                            f"{free / 2**20:.0f} MiB free; nothing was written")
        return _write_folder(program=program, config=config, ckpt=ckpt, report=report, spinquant=spinquant, finetune=finetune,
                             rotations=rotations, breakdown=breakdown, metadata=metadata, progress=progress, staged=staged,
                             input_hashes=input_hashes or BackgroundHashes(input_files(ckpt)))
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


def _write_folder(*, program, config, ckpt, report, spinquant, finetune, rotations, breakdown, metadata, progress, staged,
                  input_hashes: BackgroundHashes) -> ExportResult:
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
        if rotations is not None:
            from edge.spinquant.rotations import save_rotations

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


def quantized_model(config: ExportConfig, prepared: Prepared, *, progress: Progress) -> tuple[Transformer, QuantReport, object]:
    """Checked config and checkpoint -> (the model as the export quantizes it, its report, its `Rotations` or None).

    The stages rotations -> load -> quantize (LoRA adapters attached); not for pre-quantized checkpoints.
    """
    ckpt = prepared.ckpt
    rotations = None
    if config.rotation.enabled:
        with progress.stage("rotations", config.rotation.kind.value + (f" from {config.rotation.file}" if config.rotation.file else "")):
            rotations = make_rotations(config, prepared, progress=progress)
    gptq = None
    if config.quantization.rounding is Rounding.GPTQ:
        assert prepared.calibration is not None
        gptq = GPTQInputs(tokens=prepared.calibration.take(config.gptq.samples), damp=config.gptq.damp,
                          act_order=config.gptq.act_order, float_targets=config.gptq.float_targets,
                          device=config.device.value)
    dtype = TORCH_DTYPES[config.dtype]
    with progress.stage("load", str(ckpt.path)):
        # Quantized exports keep the checkpoint's dtype until each block is quantized, one at a time.
        load_dtype = None if config.quantization.is_quantized else dtype
        model = load_model(ckpt, max_context=config.max_context, dtype=load_dtype, full_logits=config.full_logits)
        if attach(model, prepared.finetuned, quantized=False):
            progress.info("LoRA adapters merged into the float weights (finetune.adapters: merge)")
        trim_heap()
    with progress.stage("quantize", ", ".join(f"{k}: {v}" for k, v in quant_summary(config).items())):
        report = quantize_model(
            model, config.quantization, dtype=dtype, rotations=rotations, online_hadamard=config.rotation.online_hadamard,
            gptq=gptq, on_step=lambda d, t: progress.step(d, t, label="blocks"),
        )
    if n := attach(model, prepared.finetuned, quantized=True):
        progress.info(f"LoRA adapters on {n} linears, kept in float: 8da4w(x) + scale * B(A(x))")
    return model, report, rotations


def run_export(config: ExportConfig, *, progress: Progress) -> ExportResult:
    """ExportConfig -> the output folder; the whole pipeline."""
    with progress.stage("check", "checkpoint, config and output path"):
        prepared = prepare(config)
    ckpt, args = prepared.ckpt, prepared.ckpt.args
    progress.info(
        f"model: {ckpt.format.value} checkpoint, {args.n_layers} layers, dim {args.dim}, "
        f"{args.n_heads}/{args.n_kv_heads} heads, vocab {args.vocab_size}, {args.n_params / 1e6:.1f}M params"
    )
    if ckpt.prequantized_group_size is not None:
        from edge.export.prequantized import load_prequantized_model, prequantized_report

        progress.info(f"pre-quantized checkpoint (int4 groups of {ckpt.prequantized_group_size}, rotations folded in): "
                      "its integers are exported as they are; the config's quantization, rotation and gptq settings do not apply")
        with progress.stage("load", f"{ckpt.path} (pre-quantized)"):
            model = load_prequantized_model(ckpt, max_context=config.max_context, full_logits=config.full_logits)
        report = prequantized_report(ckpt)
        return _export_and_write(config, prepared, progress=progress, model=model, report=report, rotations=None)

    model, report, rotations = quantized_model(config, prepared, progress=progress)
    return _export_and_write(config, prepared, progress=progress, model=model, report=report, rotations=rotations)


def _export_and_write(config: ExportConfig, prepared: Prepared, *, progress: Progress, model, report, rotations) -> ExportResult:
    """Quantized model -> (onnx/, model.gguf) -> export -> lower -> serialize."""
    ckpt = prepared.ckpt
    input_hashes = BackgroundHashes(input_files(ckpt))  # overlaps with lowering, which leaves a core mostly idle
    breakdown = size_breakdown(model)
    finetune = finetune_record(prepared.finetuned, model)
    staged = write_formats(model, config, ckpt, progress=progress)  # from the same quantized tensors as the .pte
    try:
        program = metadata = None
        if Format.PTE in config.formats:
            program, metadata = _lower(config, model, ckpt, progress=progress)
        del model
        with progress.stage("serialize", str(config.output)):
            return write_outputs(
                program=program, config=config, ckpt=ckpt, report=report, breakdown=breakdown, metadata=metadata,
                progress=progress, spinquant=spinquant_record(config, prepared, rotations), rotations=rotations,
                finetune=finetune, staged=staged, input_hashes=input_hashes,
            )
    finally:
        if staged is not None:
            discard(staged)


def _lower(config: ExportConfig, model, ckpt: Checkpoint, *, progress: Progress):
    """Quantized model -> (lowered ExecuTorch program, its runner metadata)."""
    max_prefill = config.prefill_chunk
    with progress.stage("export", f"torch.export, 1..{max_prefill} tokens per call, KV cache {config.max_context}"):
        ep = export_program(model, max_prefill=max_prefill)
    metadata = RunnerMetadata(
        # The runner prefills in chunks of max_seq_len. A program taking max_context - 1 tokens per call
        # says max_context, as before chunking: with max_context - 1, ExecuTorch 1.5's TextLLMRunner
        # fails a generation that reaches the cache's last position.
        max_seq_len=config.max_context if max_prefill == config.max_context - 1 else max_prefill,
        max_context_len=config.max_context,
        vocab_size=ckpt.args.vocab_size,
        n_layers=ckpt.args.n_layers,
        bos_id=ckpt.bos_id,
        eos_ids=ckpt.eos_ids,
    )
    with progress.stage("lower", "XNNPACK delegate, ExecuTorch program"):
        program = lower_program(ep, metadata)
        del ep
        trim_heap()  # lowering's graph copies are gone; hand their heap pages back before serializing
    return program, metadata


def quant_summary(config: ExportConfig) -> dict[str, str]:
    q = config.quantization
    return {"linear": q.linear.value + (f"/g{q.group_size}" if q.linear.value == "int4" else ""), "output": q.output.value,
            "embedding": q.embedding.value, "rounding": q.rounding.value, "rotation": config.rotation.kind.value,
            "dtype": config.dtype.value}
