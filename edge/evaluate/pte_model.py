"""Run a .pte in ExecuTorch's runtime from Python.

In:  a .pte written by `edge.export` (or any program with the LLM runner's
     `forward(tokens, input_pos)` and metadata methods).
Out: `PteModel`: `forward` returning logits, `metadata` read from the program's
     constant methods, and `greedy` decoding, all through ExecuTorch's runtime
     (the same kernels the phone runs, compiled for the host).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from edge.core.errors import EdgeError
from edge.core.quiet import native_stderr_filtered


def load_kernels() -> None:
    """Register the quantized and LLM custom ops a .pte may need (idempotent)."""
    import executorch.kernels.quantized  # noqa: F401  (quantized_decomposed::embedding_byte)
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401  (llama::custom_sdpa, update_cache)


METADATA_METHODS = (
    "get_max_seq_len",
    "get_max_context_len",
    "get_vocab_size",
    "get_n_layers",
    "get_bos_id",
    "get_eos_ids",
    "use_kv_cache",
    "use_sdpa_with_kv_cache",
    "enable_dynamic_shape",
)


@dataclass
class PteModel:
    path: Path
    metadata: dict[str, object]
    _program: object
    _forward: object

    @property
    def vocab_size(self) -> int:
        return int(self.metadata["get_vocab_size"])  # type: ignore[arg-type]

    @property
    def max_context(self) -> int:
        return int(self.metadata.get("get_max_context_len", self.metadata["get_max_seq_len"]))  # type: ignore[arg-type]

    @property
    def max_prefill(self) -> int:
        """Most tokens one forward call takes (get_max_seq_len; below max_context when exported with max_prefill)."""
        return min(int(self.metadata["get_max_seq_len"]), self.max_context - 1)  # type: ignore[arg-type]

    def forward(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        """tokens [1, S] int64 at positions start_pos.. -> logits [1, V] (or [1, S, V]) float32.

        More than max_prefill tokens are fed in chunks, as ExecuTorch's runner does.
        """
        step = self.max_prefill
        outs = [self._call(tokens[:, i : i + step], start_pos + i) for i in range(0, tokens.shape[1], step)]
        return outs[-1] if outs[-1].dim() == 2 else torch.cat(outs, dim=1)

    def _call(self, tokens: torch.Tensor, start_pos: int) -> torch.Tensor:
        try:
            out = self._forward.execute([tokens.to(torch.long), torch.tensor([start_pos], dtype=torch.long)])  # type: ignore[attr-defined]
        except RuntimeError as e:
            raise EdgeError(
                f"{self.path} rejected {tokens.shape[1]} tokens at position {start_pos} "
                f"(maximum context {self.max_context}): {str(e).splitlines()[0]}"
            ) from None
        return out[0].float()

    def greedy(self, prompt: list[int], *, max_new_tokens: int) -> list[int]:
        """Prompt token ids -> the next `max_new_tokens` ids, argmax each step (one prefill, then decode)."""
        logits = self.forward(torch.tensor([prompt]), 0)
        out: list[int] = []
        pos = len(prompt)
        for _ in range(max_new_tokens):
            nxt = int(logits.reshape(-1, logits.shape[-1])[-1].argmax())
            out.append(nxt)
            logits = self.forward(torch.tensor([[nxt]]), pos)
            pos += 1
        return out


def load_pte(path: Path) -> PteModel:
    """.pte path -> PteModel (EdgeError if it is missing or not an LLM program)."""
    path = Path(path)
    if not path.is_file():
        raise EdgeError(f".pte {path} does not exist")
    load_kernels()
    # Loading starts the runtime's thread pool, which logs from C++; forward calls log nothing, so they run
    # unfiltered (the filter costs about 30 us a call, a tenth of a fixture decode step).
    with native_stderr_filtered():
        return _open(path)


def _open(path: Path) -> PteModel:
    from executorch.runtime import Runtime

    try:
        program = Runtime.get().load_program(str(path))
    except Exception as e:
        raise EdgeError(f"{path} is not a loadable ExecuTorch program ({type(e).__name__})") from None
    names = set(program.method_names)
    if "forward" not in names or "get_vocab_size" not in names:
        raise EdgeError(f"{path} is not an LLM program (it lacks forward or get_vocab_size)")
    metadata: dict[str, object] = {}
    for name in METADATA_METHODS:
        if name in names:
            values = program.load_method(name).execute([])
            metadata[name] = [int(v) for v in values] if name == "get_eos_ids" else values[0]
    return PteModel(path=path, metadata=metadata, _program=program, _forward=program.load_method("forward"))
