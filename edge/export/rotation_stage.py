"""The SpinQuant stages of an export: checks, calibration windows, rotations, and what the manifest records.

In:  `ExportConfig`, the opened `Checkpoint` (and the pipeline's `Prepared` bundle).
Out: `check_rotation` (EdgeError before any long work, or the rotation file's header),
     `calibration_for` (windows, or None when nothing calibrates), `make_rotations`
     (`Rotations` from a file, seeded Hadamard, or Cayley SGD), `spinquant_record` (manifest).
"""

from __future__ import annotations

import torch

from edge.checkpoint import Checkpoint, load_model
from edge.config import ExportConfig, RotationKind, Rounding
from edge.core.errors import EdgeError
from edge.core.io import sha256_file
from edge.core.progress import Progress
from edge.model import HADAMARD_ORDERS, online_hadamard_accepts
from edge.quant.calibration import Calibration, load_calibration

CALIBRATION_NAME = "calibration.txt"


def check_rotation(config: ExportConfig, ckpt: Checkpoint) -> None:
    """Raise EdgeError if the rotation the config asks for cannot apply to this checkpoint (a file's header
    included)."""
    from edge.spinquant.rotations import check_rotatable, check_rotation_file

    rot = config.rotation
    if not rot.enabled:
        return
    f = ckpt.args.hidden_dim
    if rot.online_hadamard and not online_hadamard_accepts(f):
        raise EdgeError(
            f"FFN width {f} cannot take the online Hadamard (R4): it must be 2^k or m*2^k with m in "
            f"{{{', '.join(map(str, HADAMARD_ORDERS))}}} (llama::fast_hadamard_transform on the 2^k part, "
            "an m x m matmul on the rest); set rotation.online_hadamard: false to rotate without R4"
        )
    if rot.file is not None:
        header = check_rotation_file(rot.file, ckpt.args)
        if header["kind"] is not rot.kind:
            raise EdgeError(
                f"rotation file {rot.file} holds {header['kind'].value} rotations but rotation.kind is {rot.kind.value}"
            )
        return
    check_rotatable(ckpt.args)


def calibration_for(config: ExportConfig, ckpt: Checkpoint) -> Calibration | None:
    """-> the calibration windows the export needs (rotation optimization, GPTQ), or None; EdgeError if too few."""
    if not config.needs_calibration:
        return None
    text = config.calibration.text
    if text is None:  # a calibration.txt beside the weights (the shipped fixture has one)
        text = ckpt.path / CALIBRATION_NAME
        if not text.is_file():
            raise EdgeError(
                "rotation optimization and GPTQ need calibration text: set calibration.text (--calibration-text FILE)"
            )
    samples = config.gptq.samples if config.quantization.rounding is Rounding.GPTQ else 0
    if config.rotation.kind is RotationKind.OPTIMIZED and config.rotation.file is None:
        samples = max(samples, config.rotation.samples)
    return load_calibration(
        path=text,
        tokenizer_path=ckpt.tokenizer,
        bos_id=ckpt.bos_id,  # type: ignore[arg-type]
        seq_len=config.calibration.seq_len,
        samples=samples,
        vocab_size=ckpt.args.vocab_size,
    )


def make_rotations(config: ExportConfig, prepared, *, progress: Progress):
    """-> `Rotations` (from the file, seeded Hadamard, or optimized on the calibration text), or None."""
    from edge.spinquant.optimize import optimize_rotations, prepare_for_optimization
    from edge.spinquant.rotations import hadamard_rotations, load_rotations

    rot, args = config.rotation, prepared.ckpt.args
    if not rot.enabled or prepared.ckpt.prequantized_group_size is not None:
        return None
    if rot.file is not None:
        return load_rotations(rot.file, args)
    init = hadamard_rotations(args, seed=rot.seed)
    if rot.kind is RotationKind.HADAMARD:
        return init
    assert prepared.calibration is not None
    model = load_model(prepared.ckpt, max_context=prepared.calibration.tokens.shape[1], dtype=torch.float32)
    prepare_for_optimization(model, online_hadamard=rot.online_hadamard)
    tokens = prepared.calibration.take(rot.samples)

    def show(step: int, steps: int, loss: float, tps: float) -> None:
        progress.step(step, steps, label=f"steps  loss {loss:.4f}  {tps:,.0f} tok/s")

    result = optimize_rotations(
        model,
        tokens,
        init=init,
        steps=rot.steps,
        learning_rate=rot.learning_rate,
        batch_size=rot.batch_size,
        micro_batch=rot.micro_batch or None,
        weight_bits=rot.weight_bits,
        loss=rot.loss,
        group_size=config.quantization.group_size,
        device=config.device.value,
        on_step=show,
    )
    result.provenance.update(
        samples=rot.samples,
        seq_len=config.calibration.seq_len,
        calibration_sha256=prepared.calibration.text_sha256,
        online_hadamard=rot.online_hadamard,
    )
    return result


def spinquant_record(config: ExportConfig, prepared, rotations) -> dict:
    """What the manifest says about rotation and weight rounding."""
    if prepared.ckpt.prequantized_group_size is not None:
        return {
            "weight_rounding": "pre-quantized by the checkpoint",
            "rotation": {"kind": "folded into the checkpoint"},
        }
    out: dict = {"weight_rounding": config.quantization.rounding.value}
    if config.quantization.rounding is Rounding.GPTQ:
        out["gptq"] = {
            "samples": config.gptq.samples,
            "damp": config.gptq.damp,
            "act_order": config.gptq.act_order,
            "float_targets": config.gptq.float_targets,
            "group_size": config.quantization.group_size,
            "seq_len": config.calibration.seq_len,
            "scale": "c * max|w| / 7, c by MSE search, ints in [-8, 7]",
            "calibration_sha256": prepared.calibration.text_sha256,
        }  # type: ignore[union-attr]
    if rotations is None:
        out["rotation"] = {"kind": "none"}
        return out
    prov = {k: v for k, v in rotations.provenance.items() if k != "losses"}
    out["rotation"] = {
        **prov,
        "kind": rotations.kind.value,
        "sha256": rotations.sha256(),
        "online_hadamard": config.rotation.online_hadamard,
    }
    if config.rotation.file is not None:
        out["rotation"]["file"] = str(config.rotation.file)
        out["rotation"]["file_sha256"] = sha256_file(config.rotation.file)
    return out
