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

from dataclasses import dataclass

import torch

from edge.checkpoint import FIXTURE_CHECKPOINT, Checkpoint, load_model, open_checkpoint
from edge.config import Device, DType, ExportConfig, Format, Rounding
from edge.core.errors import EdgeError
from edge.core.io import (
    BackgroundHashes,
    check_output_path,
    discard,
)
from edge.core.memory import trim_heap
from edge.core.progress import Progress
from edge.export.finetune_stage import Finetuned, attach, check_finetuned, finetune_record
from edge.export.formats_stage import check_formats, write_formats
from edge.export.lower import RunnerMetadata, export_program, lower_program
from edge.export.manifest import ExportResult, input_files, quant_summary, size_breakdown, write_outputs
from edge.export.rotation_stage import calibration_for, check_rotation, make_rotations, spinquant_record
from edge.model import Transformer
from edge.quant.calibration import Calibration
from edge.quant.ptq import GPTQInputs, quantize_model
from edge.quant.scheme import QuantReport, check_group_size

TORCH_DTYPES = {DType.FP32: torch.float32, DType.BF16: torch.bfloat16}


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
            f"max context {config.max_context} is longer than the {ckpt.args.max_position_embeddings} tokens "
            "the model supports"
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
    check_formats(
        config, ckpt, adapters_kept=finetuned is not None and finetuned.adapters is not None and not finetuned.merge
    )
    return Prepared(ckpt=ckpt, calibration=calibration_for(config, ckpt), finetuned=finetuned)


def quantized_model(
    config: ExportConfig, prepared: Prepared, *, progress: Progress
) -> tuple[Transformer, QuantReport, object]:
    """Checked config and checkpoint -> (the model as the export quantizes it, its report, its `Rotations` or None).

    The stages rotations -> load -> quantize (LoRA adapters attached); not for pre-quantized checkpoints.
    """
    ckpt = prepared.ckpt
    rotations = None
    if config.rotation.enabled:
        with progress.stage(
            "rotations", config.rotation.kind.value + (f" from {config.rotation.file}" if config.rotation.file else "")
        ):
            rotations = make_rotations(config, prepared, progress=progress)
    gptq = None
    if config.quantization.rounding is Rounding.GPTQ:
        assert prepared.calibration is not None
        gptq = GPTQInputs(
            tokens=prepared.calibration.take(config.gptq.samples),
            damp=config.gptq.damp,
            act_order=config.gptq.act_order,
            float_targets=config.gptq.float_targets,
            device=config.device.value,
        )
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
            model,
            config.quantization,
            dtype=dtype,
            rotations=rotations,
            online_hadamard=config.rotation.online_hadamard,
            gptq=gptq,
            on_step=lambda d, t: progress.step(d, t, label="blocks"),
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

        progress.info(
            f"pre-quantized checkpoint (int4 groups of {ckpt.prequantized_group_size}, rotations folded in): "
            "its integers are exported as they are; the config's quantization, rotation and gptq settings do not apply"
        )
        with progress.stage("load", f"{ckpt.path} (pre-quantized)"):
            model = load_prequantized_model(ckpt, max_context=config.max_context, full_logits=config.full_logits)
        report = prequantized_report(ckpt)
        return export_quantized(config, prepared, progress=progress, model=model, report=report, rotations=None)

    if config.rotation.enabled and config.quantization.rounding is Rounding.RTN:
        # benchmarks/results/real_model_rotation.md: folding RMSNorm into the next linears (which rotating needs)
        # costs their round-to-nearest output error more than the rotation gains; GPTQ rounds against the inputs.
        progress.warn(
            "rotations with round-to-nearest rounding were measured worse than plain 8da4w on a real model "
            "(docs/real_model.md); SpinQuant rounds with GPTQ: quantization.rounding: gptq"
        )
    model, report, rotations = quantized_model(config, prepared, progress=progress)
    return export_quantized(config, prepared, progress=progress, model=model, report=report, rotations=rotations)


def export_quantized(
    config: ExportConfig, prepared: Prepared, *, progress: Progress, model, report, rotations
) -> ExportResult:
    """A quantized model (from `quantized_model`, or pre-quantized) -> (onnx/, model.gguf) -> export -> lower ->
    serialize -> ExportResult."""
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
                program=program,
                config=config,
                ckpt=ckpt,
                report=report,
                breakdown=breakdown,
                metadata=metadata,
                progress=progress,
                spinquant=spinquant_record(config, prepared, rotations),
                rotations=rotations,
                finetune=finetune,
                staged=staged,
                input_hashes=input_hashes,
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
