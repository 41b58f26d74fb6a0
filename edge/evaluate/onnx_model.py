"""Run an ONNX model written by `edge.export` (formats: onnx) in ONNX Runtime from Python.

In:  the ONNX folder (model.onnx + genai_config.json) or its model.onnx.
Out: `OnnxModel`, with the same surface as `edge.evaluate.pte_model.PteModel` (`forward(tokens, start_pos)`,
     `metadata`, `vocab_size`, `max_context`, `greedy`), so `edge.evaluate` scores it the same way.
     The KV cache is the graph's past/present tensors, kept here between calls; a call at
     position 0 starts a new sequence. The kernels are ONNX Runtime's CPU kernels (MatMulNBits
     with 8-bit activations, GroupQueryAttention), the ones onnxruntime-genai runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from edge.core.errors import EdgeError
from edge.formats.onnx_graph import ONNX_NAME


@dataclass
class OnnxModel:
    path: Path
    metadata: dict[str, object]
    _session: object
    _layers: int
    _past: list[np.ndarray] = field(default_factory=list)
    _pos: int = 0

    @property
    def vocab_size(self) -> int:
        return int(self.metadata["get_vocab_size"])  # type: ignore[arg-type]

    @property
    def max_context(self) -> int:
        return int(self.metadata["get_max_context_len"])  # type: ignore[arg-type]

    @property
    def max_prefill(self) -> int:
        return self.max_context - 1

    def forward(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        """tokens [1, S] at positions start_pos.. -> logits [1, S, V] float32 (every position)."""
        if start_pos == 0:
            self._past = []
        elif start_pos != self._pos:
            raise EdgeError(f"{self.path}: position {start_pos} does not continue the cached sequence (at {self._pos})")
        s = tokens.shape[1]
        if start_pos + s > self.max_context:
            raise EdgeError(
                f"{self.path} rejected {s} tokens at position {start_pos} (maximum context {self.max_context})"
            )
        meta = self.metadata
        kv, dh = int(meta["n_kv_heads"]), int(meta["head_dim"])  # type: ignore[arg-type]
        feed = {"input_ids": tokens.to(torch.long).numpy(), "attention_mask": np.ones((1, start_pos + s), np.int64)}
        for i in range(self._layers):
            for j, kind in enumerate(("key", "value")):
                feed[f"past_key_values.{i}.{kind}"] = (
                    self._past[2 * i + j] if self._past else np.zeros((1, kv, 0, dh), np.float32)
                )
        out = self._session.run(None, feed)  # type: ignore[attr-defined]
        self._past, self._pos = out[1:], start_pos + s
        return torch.from_numpy(out[0]).float()

    def greedy(self, prompt: list[int], *, max_new_tokens: int) -> list[int]:
        """Prompt token ids -> the next `max_new_tokens` ids, argmax each step."""
        logits = self.forward(torch.tensor([prompt]), 0)
        out: list[int] = []
        for _ in range(max_new_tokens):
            out.append(int(logits[0, -1].argmax()))
            logits = self.forward(torch.tensor([[out[-1]]]), self._pos)
        return out


def is_onnx_model(path: Path) -> bool:
    path = Path(path)
    return path.suffix == ".onnx" or (path.is_dir() and (path / ONNX_NAME).is_file())


def load_onnx(path: Path, *, threads: int | None = None) -> OnnxModel:
    """ONNX folder or model.onnx -> OnnxModel (EdgeError when it is missing or not edge's LLM graph)."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    model_file = folder / ONNX_NAME if path.is_dir() else path
    config_file = folder / "genai_config.json"
    if not model_file.is_file():
        raise EdgeError(f"ONNX model {model_file} does not exist")
    try:
        import onnxruntime as ort
    except ImportError:
        raise EdgeError("ONNX Runtime is not installed: pip install 'edge[onnx]'") from None
    try:
        config = json.loads(config_file.read_text())["model"]
        dec = config["decoder"]
    except (OSError, ValueError, KeyError) as e:
        raise EdgeError(f"{config_file} is missing or not an onnxruntime-genai config ({type(e).__name__})") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = threads
    try:
        session = ort.InferenceSession(str(model_file), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise EdgeError(f"{model_file} is not a model ONNX Runtime can load: {str(e).splitlines()[0][:200]}") from None
    eos = config["eos_token_id"]
    metadata: dict[str, object] = {
        "get_vocab_size": config["vocab_size"],
        "get_max_context_len": config["context_length"],
        "get_max_seq_len": config["context_length"],
        "get_bos_id": config["bos_token_id"],
        "get_eos_ids": eos if isinstance(eos, list) else [eos],
        "get_n_layers": dec["num_hidden_layers"],
        "n_kv_heads": dec["num_key_value_heads"],
        "head_dim": dec["head_size"],
    }
    return OnnxModel(path=path, metadata=metadata, _session=session, _layers=int(dec["num_hidden_layers"]))
