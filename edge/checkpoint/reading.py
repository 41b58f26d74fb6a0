"""Read a Llama checkpoint from the layouts users have.

In:  a folder holding either
       * Hugging Face: `config.json` + `*.safetensors` (sharded or not, with or
         without `model.safetensors.index.json`) + `tokenizer.json`/`tokenizer.model`;
       * Meta's original: `params.json` + `consolidated.00.pth` + `tokenizer.model`
         (float, or pre-quantized with `quantization_args`: see `edge.checkpoint.prequantized`).
Out: `Checkpoint` (shape, token ids, files) from `open_checkpoint`, and the
     weights, renamed to `edge.model` names, from `iter_weights` one tensor at a
     time so that no more than one copy of the model is ever resident.

Everything is validated up front: architecture, the shape of every tensor
against the config, corrupt or truncated files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from edge.checkpoint.args import as_ids, hf_args, meta_args, read_json
from edge.checkpoint.layout import CheckpointFormat, edge_name, expected_shapes, meta_to_hf_rope_layout, natural_key
from edge.checkpoint.prequantized import per_channel_shape, prequantized_group_size, scale_shapes
from edge.core.errors import EdgeError
from edge.core.memory import copy_and_release
from edge.model import ModelArgs, Transformer


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint on disk, described; the weights stay on disk until `iter_weights`."""

    path: Path
    format: CheckpointFormat
    args: ModelArgs
    weight_files: tuple[Path, ...]
    tokenizer: Path | None
    bos_id: int
    eos_ids: tuple[int, ...]
    # Meta's pre-quantized (SpinQuant/QAT) checkpoints: int4 group size of the block linears.
    prequantized_group_size: int | None = None


# Llama 3's special tokens, used when a Meta checkpoint does not name them.
LLAMA3_BOS = 128000
LLAMA3_EOS = (128001, 128009)


def _find_tokenizer(folder: Path) -> Path | None:
    for name in ("tokenizer.json", "tokenizer.model"):
        if (folder / name).is_file():
            return folder / name
    return None


def open_checkpoint(path: Path) -> Checkpoint:
    """A checkpoint folder (or a file inside one) -> `Checkpoint`, fully validated."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not path.exists():
        raise EdgeError(f"checkpoint {path} does not exist")
    if (folder / "config.json").is_file():
        config = read_json(folder / "config.json")
        args = hf_args(config, folder / "config.json")
        index = folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = read_json(index).get("weight_map", {})
            files = tuple(sorted({folder / f for f in weight_map.values()}))
        else:
            # adapter_model.safetensors (LoRA, edge.finetune.lora) sits beside the weights of a fine-tune's output
            files = tuple(sorted(f for f in folder.glob("*.safetensors") if f.name != "adapter_model.safetensors"))
        if not files:
            raise EdgeError(f"{folder} has config.json but no *.safetensors weights")
        ckpt = Checkpoint(
            path=folder,
            format=CheckpointFormat.HF,
            args=args,
            weight_files=files,
            tokenizer=_find_tokenizer(folder),
            bos_id=int(config.get("bos_token_id") if config.get("bos_token_id") is not None else LLAMA3_BOS),
            eos_ids=as_ids(config.get("eos_token_id")) or LLAMA3_EOS,
        )
    elif (folder / "params.json").is_file():
        params = read_json(folder / "params.json")
        args = meta_args(params, folder / "params.json")
        try:
            group_size = prequantized_group_size(params)
        except EdgeError as e:
            raise EdgeError(f"{folder / 'params.json'}: {e}") from None
        files = tuple(sorted(folder.glob("consolidated.*.pth")))
        if not files:
            raise EdgeError(f"{folder} has params.json but no consolidated.00.pth")
        if len(files) > 1:
            raise EdgeError(
                f"{folder} holds {len(files)} model-parallel shards; Llama 3.2 1B/3B ship one consolidated.00.pth"
            )
        ckpt = Checkpoint(
            path=folder,
            format=CheckpointFormat.META,
            args=args,
            weight_files=files,
            tokenizer=_find_tokenizer(folder),
            bos_id=LLAMA3_BOS,
            eos_ids=LLAMA3_EOS,
            prequantized_group_size=group_size,
        )
    else:
        given = f"{path} is a file in {folder}, which" if path != folder else f"{folder}"
        raise EdgeError(
            f"{given} is not a checkpoint: expected a folder with config.json + *.safetensors "
            "or params.json + consolidated.00.pth"
        )
    for f in ckpt.weight_files:
        if not f.is_file():
            raise EdgeError(f"checkpoint file {f} is missing")
    _check_shapes(ckpt)
    return ckpt


def raw_tensors(
    ckpt: Checkpoint, *, shapes_only: bool, wanted: Callable[[str], bool] = lambda _name: True
) -> Iterator[tuple[str, torch.Tensor | tuple[int, ...]]]:
    """Yield (checkpoint name, tensor or shape) for every tensor `wanted(name)` accepts, one at a time.

    Tensors are yielded as private copies, and the file mapping they came from is released as
    they go (`edge.core.memory.copy_and_release`), so the caller decides how many copies exist.
    A tensor not wanted is never read.
    """
    from safetensors import safe_open

    for f in ckpt.weight_files:
        if ckpt.format is CheckpointFormat.HF:
            try:
                with safe_open(str(f), framework="pt") as st:
                    names = list(st.keys())
                    if shapes_only:
                        for name in names:
                            yield name, tuple(st.get_slice(name).get_shape())
                        continue
                for name in filter(wanted, names):
                    # Re-opened per tensor: closing unmaps the file, so pages already
                    # copied out leave this process's resident set.
                    with safe_open(str(f), framework="pt") as st:
                        tensor = st.get_tensor(name)
                    yield name, tensor
            except EdgeError:
                raise
            except Exception as e:  # safetensors raises its own error types for bad headers and short files
                first = str(e).splitlines()[0] if str(e) else "corrupt"
                raise EdgeError(f"{f} is not a readable safetensors file ({type(e).__name__}: {first})") from None
        else:
            try:
                # mmap: tensors are paged in from disk as they are used, never all at once.
                state = torch.load(f, map_location="cpu", mmap=True, weights_only=True)
            except Exception as e:
                raise EdgeError(f"{f} is not a readable PyTorch checkpoint ({type(e).__name__})") from None
            if ckpt.prequantized_group_size is None and any(k.endswith(("scales", "zeros")) for k in state):
                raise EdgeError(
                    f"{f} is a pre-quantized checkpoint (it holds quantization scales) but params.json has no "
                    "quantization_args; export from the BF16 checkpoint instead"
                )
            for name in list(state):
                t = state.pop(name)
                if shapes_only:
                    yield name, tuple(t.shape)
                    continue
                if not wanted(name):
                    del t
                    continue
                copy = copy_and_release(t)
                del t
                yield name, copy
            del state


def _check_shapes(ckpt: Checkpoint) -> None:
    expected = expected_shapes(ckpt.args)
    optional: dict[str, tuple[int, ...]] = {}  # zero points: pre-quantized checkpoints may store them
    if ckpt.prequantized_group_size is not None:
        expected |= scale_shapes(ckpt.args, ckpt.prequantized_group_size)
        optional = {n.removesuffix("scales") + "zeros": s for n, s in expected.items() if n.endswith(".scales")}
    found: dict[str, tuple[int, ...]] = {}
    for name, shape in raw_tensors(ckpt, shapes_only=True):
        model_name = edge_name(ckpt.format, name)
        if model_name is None:
            continue
        if ".adaptor." in model_name and ckpt.prequantized_group_size is not None:
            continue  # QLoRA adapters: their shapes are checked against lora_args by edge.finetune.lora.load_adapters
        if model_name.endswith((".scales", ".zeros")) and model_name in expected | optional:
            shape = per_channel_shape(shape, (expected | optional)[model_name])  # type: ignore[arg-type]
        if model_name not in expected and model_name not in optional:
            if model_name == "lm_head.weight":  # an untied output layer in a checkpoint that says tied: use it
                continue
            raise EdgeError(f"{ckpt.path}: unexpected tensor {name} (not part of a Llama model with this config)")
        found[model_name] = shape  # type: ignore[assignment]
    missing = sorted(set(expected) - set(found), key=natural_key)
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise EdgeError(f"{ckpt.path}: tensor {missing[0]}{more} missing from the checkpoint")
    for name, shape in found.items():
        want = expected.get(name) or optional[name]
        if tuple(shape) != want:
            raise EdgeError(
                f"{ckpt.path}: tensor {name} has shape {list(shape)} but the checkpoint's config implies {list(want)}"
            )


def iter_weights(ckpt: Checkpoint) -> Iterator[tuple[str, torch.Tensor]]:
    """Checkpoint -> (edge.model name, tensor in the checkpoint's dtype), one at a time.

    A tied checkpoint yields `embed_tokens.weight` only; the caller ties `lm_head`.
    """
    _refuse_prequantized(ckpt)

    def wanted(name: str) -> bool:  # a tied checkpoint's stored output layer is never read
        model_name = edge_name(ckpt.format, name)
        return model_name is not None and not (model_name == "lm_head.weight" and ckpt.args.tie_word_embeddings)

    for name, tensor in raw_tensors(ckpt, shapes_only=False, wanted=wanted):
        model_name = edge_name(ckpt.format, name)
        assert isinstance(tensor, torch.Tensor) and model_name is not None
        if ckpt.format is CheckpointFormat.META:
            if model_name.endswith("q_proj.weight"):
                tensor = meta_to_hf_rope_layout(tensor, ckpt.args.n_heads)
            elif model_name.endswith("k_proj.weight"):
                tensor = meta_to_hf_rope_layout(tensor, ckpt.args.n_kv_heads)
        yield model_name, tensor


def _refuse_prequantized(ckpt: Checkpoint) -> None:
    if ckpt.prequantized_group_size is not None:
        raise EdgeError(
            f"{ckpt.path} is pre-quantized (int4 groups of {ckpt.prequantized_group_size}): "
            "load it with edge.export.prequantized.load_prequantized_model, which keeps its integers"
        )


def load_model(
    ckpt: Checkpoint, *, max_context: int, dtype: torch.dtype | None, full_logits: bool = False
) -> Transformer:
    """Checkpoint -> `edge.model.Transformer` holding its weights in `dtype` (None: the checkpoint's own).

    The module is built on the meta device and each weight is assigned as it is
    read, so peak memory is one copy of the weights plus one tensor in flight.
    """
    _refuse_prequantized(ckpt)
    with torch.device("meta"):
        model = Transformer(ckpt.args, max_context=max_context, full_logits=full_logits)
    for name, tensor in iter_weights(ckpt):
        # The sum is finite exactly when every weight is (short of an overflow, which the full check rules out),
        # and it allocates nothing the size of the weight.
        if (
            tensor.is_floating_point()
            and not bool(torch.isfinite(tensor.sum()))
            and not bool(torch.isfinite(tensor).all())
        ):
            raise EdgeError(f"{ckpt.path}: weight {name} holds NaN or infinite values")
        module_name, _, attr = name.rpartition(".")
        module = model.get_submodule(module_name)
        setattr(module, attr, torch.nn.Parameter(tensor if dtype is None else tensor.to(dtype), requires_grad=False))
    if ckpt.args.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    if dtype is not None:
        model.cast_buffers(dtype)
    return model.eval()
