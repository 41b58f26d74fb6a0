"""A whole fine-tune: checks, model, stages, resumable checkpoints, the output folder.

In:  `ExportConfig` with a `finetune` section, the input checkpoint folder, `resume`/`force`.
Out: the output folder (written atomically, see `edge.finetune.output`), and while training a
     sibling `<output>.resume/state.pt` that `--resume` continues from (removed at the end).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import torch

from edge.checkpoint import FIXTURE_CHECKPOINT, Checkpoint, load_model, open_checkpoint
from edge.config import Device, ExportConfig
from edge.config.finetune import Loss
from edge.core.errors import EdgeError
from edge.core.io import check_output_path, write_atomic
from edge.core.progress import Progress
from edge.finetune.data import TrainingData, load_training_data
from edge.finetune.lora import LoraSpec, attach_lora
from edge.finetune.train import STAGES, Dist, TrainState, run_stage
from edge.model import AttentionPath, Transformer
from edge.quant.scheme import check_group_size

STATE_NAME = "state.pt"


def resume_dir(output: Path) -> Path:
    return output.parent / f"{output.name}.resume"


def lora_spec(config: ExportConfig) -> LoraSpec | None:
    lo = config.finetune.lora
    return LoraSpec(rank=lo.rank, alpha=lo.alpha, targets=lo.targets) if lo.steps > 0 else None


def fingerprint(config: ExportConfig, ckpt: Checkpoint, data: TrainingData) -> str:
    """What must not change between an interrupted run and its resume: recipe, scheme, model, data."""
    ft = dataclasses.replace(config.finetune, output=None, data=None, checkpoint_every=0)
    blob = json.dumps(
        {
            "finetune": dataclasses.asdict(ft),
            "quantization": dataclasses.asdict(config.quantization),
            "model": dataclasses.asdict(ckpt.args),
            "data": data.sha256,
        },
        default=str,
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def check_inputs(
    config: ExportConfig, *, checkpoint: Path | None, resume: bool, force: bool
) -> tuple[Checkpoint, Path]:
    """Every cheap check, before the data is tokenized or the model loaded -> (checkpoint, output)."""
    ft = config.finetune
    if ft is None:
        raise EdgeError("this config has no finetune: section (use llama3_2_1b_qat_lora or fixture_qat_lora)")
    if ft.output is None:
        raise EdgeError("no output folder given (--output or finetune.output)")
    out = ft.output
    if out.exists() and not (force or resume):
        raise EdgeError(f"output {out} already exists (pass --force to replace it)")
    check_output_path(out)
    if resume and not (resume_dir(out) / STATE_NAME).is_file():
        raise EdgeError(f"--resume: no interrupted fine-tune into {out} (no {resume_dir(out) / STATE_NAME})")
    if not resume and not force and resume_dir(out).exists():
        raise EdgeError(
            f"a fine-tune into {out} was interrupted; pass --resume to continue it or --force to start over"
        )
    if config.device is Device.CUDA and not torch.cuda.is_available():
        raise EdgeError("device cuda: no CUDA GPU is visible to torch here")
    ckpt = open_checkpoint(checkpoint if checkpoint is not None else FIXTURE_CHECKPOINT)
    if data_path(config, ckpt) is None:
        raise EdgeError(
            f"no training data given (--data or finetune.data; {ckpt.path} has no calibration.txt to default to)"
        )
    if ckpt.prequantized_group_size is not None:
        raise EdgeError(f"{ckpt.path} is already quantized; fine-tune its float (bf16) checkpoint")
    if ckpt.tokenizer is None:
        raise EdgeError(f"{ckpt.path} has no tokenizer.json beside the weights")
    if ft.max_length > ckpt.args.max_position_embeddings:
        raise EdgeError(
            f"finetune.max_length {ft.max_length} is longer than the model's "
            f"{ckpt.args.max_position_embeddings} positions"
        )
    with torch.device("meta"):
        check_group_size(Transformer(ckpt.args, max_context=2), config.quantization)
    return ckpt, out


def data_path(config: ExportConfig, ckpt: Checkpoint) -> Path | None:
    """finetune.data, or (null) the checkpoint's held-in `calibration.txt` when it ships one."""
    if config.finetune.data is not None:
        return config.finetune.data
    default = ckpt.path / "calibration.txt"
    return default if default.is_file() else None


def build_model(config: ExportConfig, ckpt: Checkpoint, *, device: torch.device) -> Transformer:
    """Checkpoint -> float32 model on the SEQUENCE path, fake-quantized (unless the control run), LoRA attached."""
    from edge.quant.qat import prepare_qat

    ft = config.finetune
    model = load_model(ckpt, max_context=ft.max_length, dtype=torch.float32, full_logits=True)
    model.set_attention_path(AttentionPath.SEQUENCE)
    if ft.fake_quant:
        prepare_qat(model, config.quantization)
    spec = lora_spec(config)
    if spec is not None:
        # Attached from the start (B = 0: the function is unchanged) so the module tree is the same
        # in every stage, for sharding and for resuming.
        attach_lora(model, spec, seed=ft.seed)
    return model.to(device).train()


def _shard(model: Transformer) -> None:
    from torch.distributed.fsdp import fully_shard

    for block in model.layers:
        fully_shard(block)
    fully_shard(model)


def _full_state(model: Transformer, dist: Dist) -> dict[str, torch.Tensor]:
    if dist.world == 1:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _load_data(config: ExportConfig, ckpt: Checkpoint) -> tuple[Path | None, TrainingData]:
    """Config, checked checkpoint -> (training data path, its tokenized windows); ids past the vocabulary refused."""
    ft = config.finetune
    assert ckpt.tokenizer is not None
    source = data_path(config, ckpt)
    data = load_training_data(
        source,
        tokenizer_path=ckpt.tokenizer,
        fmt=ft.data_format,
        max_length=ft.max_length,
        packing=ft.packing,
        bad=ft.bad_samples,
        bos_id=ckpt.bos_id,
    )
    if int(data.tokens.max()) >= ckpt.args.vocab_size:
        raise EdgeError(
            f"data {source}: the tokenizer makes ids up to {int(data.tokens.max())}, "
            f"beyond the model's vocabulary of {ckpt.args.vocab_size}"
        )
    return source, data


def _load_resume(out: Path, fp: str, model: Transformer, progress: Progress) -> dict:
    """Output folder, fingerprint, model -> the interrupted run's saved state (its weights loaded into the model)."""
    saved = torch.load(resume_dir(out) / STATE_NAME, map_location="cpu", weights_only=False)
    if saved["fingerprint"] != fp:
        raise EdgeError(f"--resume: the interrupted run in {resume_dir(out)} used another config, model or data")
    model.load_state_dict(saved["model"])
    progress.info(f"resuming at {saved['state']['stage']} step {saved['state']['step']}")
    return saved


def _load_teacher(config: ExportConfig, ckpt: Checkpoint, *, device: torch.device, progress: Progress) -> Transformer:
    """Config, checkpoint -> the unquantized model on the SEQUENCE path, frozen, for the distillation loss."""
    ft = config.finetune
    with progress.stage("teacher", "the unquantized checkpoint, frozen, for the distillation loss"):
        teacher = load_model(ckpt, max_context=ft.max_length, dtype=torch.float32, full_logits=True).to(device)
        teacher.set_attention_path(AttentionPath.SEQUENCE)
        teacher.requires_grad_(False)
    return teacher


def _state_io(
    model: Transformer, dist: Dist, *, fp: str, out: Path, saved: dict | None, progress: Progress
) -> tuple[Callable[[TrainState, torch.optim.Optimizer], None], Callable[[torch.optim.Optimizer], None]]:
    """Model, fingerprint, output folder, saved state -> (save a resumable checkpoint, load the saved optimizer)."""

    def save(st: TrainState, opt: torch.optim.Optimizer) -> None:
        model_state = _full_state(model, dist)
        if dist.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

            opt_state = get_optimizer_state_dict(
                model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        else:
            opt_state = opt.state_dict()
        if dist.main:
            blob = {"fingerprint": fp, "state": dataclasses.asdict(st), "model": model_state, "optimizer": opt_state}
            write_atomic(resume_dir(out) / STATE_NAME, lambda f: torch.save(blob, f))
            progress.info(f"checkpoint: {st.stage} step {st.step} -> {resume_dir(out) / STATE_NAME}")

    def load_optimizer(opt: torch.optim.Optimizer) -> None:
        if dist.world > 1:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, opt, saved["optimizer"], options=StateDictOptions(full_state_dict=True))
        else:
            opt.load_state_dict(saved["optimizer"])

    return save, load_optimizer


def run_finetune(
    config: ExportConfig, *, checkpoint: Path | None, resume: bool, force: bool, progress: Progress, dist: Dist = Dist()
) -> Path:
    """ExportConfig (+ input checkpoint) -> the fine-tune's output folder."""
    from edge.finetune.output import write_output

    ft = config.finetune
    with progress.stage("check", "config, checkpoint, data"):
        ckpt, out = check_inputs(config, checkpoint=checkpoint, resume=resume, force=force)
        source, data = _load_data(config, ckpt)
    progress.info(f"data: {data.report.summary()}; {data.tokens.shape[0]} windows of {ft.max_length}")
    fp = fingerprint(config, ckpt, data)
    device = torch.device(
        config.device.value if dist.world == 1 or config.device is Device.CPU else f"cuda:{dist.rank}"
    )
    torch.manual_seed(ft.seed)
    with progress.stage(
        "load", f"{ckpt.path} -> float32, {'fake-quantized' if ft.fake_quant else 'float (no fake quantization)'}"
    ):
        model = build_model(config, ckpt, device=device)
    saved = _load_resume(out, fp, model, progress) if resume else None
    teacher = _load_teacher(config, ckpt, device=device, progress=progress) if ft.loss is Loss.DISTILL else None
    if dist.world > 1:
        _shard(model)
    state = (
        TrainState(**saved["state"]) if saved else TrainState(stage=next(s for s in STAGES if _steps(config, s) > 0))
    )
    save, load_optimizer = _state_io(model, dist, fp=fp, out=out, saved=saved, progress=progress)

    for stage in STAGES[STAGES.index(state.stage) :]:
        if _steps(config, stage) == 0:
            continue
        fresh = state.stage != stage or state.step == 0
        if state.stage != stage:
            state.stage, state.step = stage, 0
        with progress.stage(stage, _describe(config, stage)):
            run_stage(
                model,
                data,
                config,
                state,
                dist=dist,
                device=device,
                load_optimizer=None if fresh or saved is None else load_optimizer,
                save=save,
                report=progress.info,
                teacher=teacher,
            )
    final = _full_state(model, dist)
    if not dist.main:
        return out
    with progress.stage("write", str(out)):
        write_output(
            out,
            state=final,
            config=config,
            ckpt=ckpt,
            data=data,
            train=state,
            spec=lora_spec(config),
            world=dist.world,
            force=force or resume,
            data_path=source,
        )
        shutil.rmtree(resume_dir(out), ignore_errors=True)
    return out


def _steps(config: ExportConfig, stage: str) -> int:
    return getattr(config.finetune, stage).steps


def _describe(config: ExportConfig, stage: str) -> str:
    s = getattr(config.finetune, stage)
    what = "whole backbone" if stage == "qat" else f"rank-{s.rank} adapters on {', '.join(s.targets)}, backbone frozen"
    fq = ("fake-quantized" if config.finetune.fake_quant else "float") + f", {config.finetune.loss.value} loss"
    return f"{what}, {fq}; {s.steps} steps of {s.batch_size} windows, lr {s.learning_rate:g}"
