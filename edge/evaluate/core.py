"""Quality of a .pte (or an ONNX model) against its reference checkpoint, on held-out text.

In:  a .pte (run in ExecuTorch's runtime, with its KV cache) or the ONNX model edge.export
     wrote beside it (run in ONNX Runtime, with its KV cache), the reference
     checkpoint (run eagerly in float32 through `edge.model`, which matches
     transformers to 1e-5), a text file, and a context length.
Out: `EvalResult`: perplexity of each, top-1 token agreement and the mean
     KL(reference || pte) per predicted token.

The text is tokenized with the checkpoint's tokenizer (pytorch_tokenizers, the
library ExecuTorch's runner uses), cut into windows of `context` tokens, each
window starting with BOS; every token after the first of a window is predicted.
A .pte that returns logits for every position is fed a window in one call; one
that returns only the last position (the default export) is fed one token at a
time, so both go through the program's KV cache.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from edge.checkpoint import Checkpoint, load_model, open_checkpoint
from edge.checkpoint.tokenizer import load_tokenizer
from edge.core.errors import EdgeError
from edge.core.quiet import native_stderr_filtered
from edge.evaluate.metrics import compare_logits
from edge.evaluate.pte_model import PteModel, load_pte
from edge.model import AttentionPath


def load_program(path: Path):
    """A .pte, or an ONNX model (its folder or model.onnx) -> a model with PteModel's surface."""
    from edge.evaluate.onnx_model import is_onnx_model, load_onnx

    return load_onnx(path) if is_onnx_model(path) else load_pte(path)


@dataclass(frozen=True)
class EvalResult:
    pte: str
    reference: str
    text: str
    context: int
    windows: int
    predicted_tokens: int
    pte_perplexity: float
    reference_perplexity: float
    top1_agreement: float
    mean_kl: float

    @property
    def perplexity_delta(self) -> float:
        return self.pte_perplexity - self.reference_perplexity

    def to_dict(self) -> dict:
        return asdict(self) | {"perplexity_delta": self.perplexity_delta}


TABLE_HEADER = (
    "| .pte | tokens | ppl (.pte) | ppl (reference) | Δ ppl | top-1 agreement | mean KL |\n"
    "|---|---|---|---|---|---|---|"
)


def table_row(r: EvalResult) -> str:
    return (
        f"| {r.pte} | {r.predicted_tokens} | {r.pte_perplexity:.3f} | {r.reference_perplexity:.3f} | "
        f"{r.perplexity_delta:+.3f} | {r.top1_agreement:.2%} | {r.mean_kl:.4f} |"
    )


def tokenize_windows(text: str, *, tokenizer, bos_id: int, context: int) -> list[list[int]]:
    """Text -> windows of `context` token ids, each [BOS, ...]; a short tail is dropped."""
    ids = tokenizer.encode(text, bos=False, eos=False)
    if ids and ids[0] == bos_id:  # a tokenizer.json post-processor may prepend BOS on its own
        ids = ids[1:]
    per_window = context - 1
    if len(ids) < per_window:
        raise EdgeError(f"the text has {len(ids)} tokens, fewer than one context of {context}")
    return [[bos_id, *ids[i : i + per_window]] for i in range(0, len(ids) - per_window + 1, per_window)]


def returns_full_logits(pte: PteModel, *, probe_token: int) -> bool:
    """Does the program return logits for every position ([1, S, V]) or only the last ([1, V])?"""
    out = pte.forward(torch.tensor([[probe_token, probe_token]]), 0)
    return out.dim() == 3 and out.shape[1] == 2


def pte_window_logits(pte: PteModel, window: list[int], *, full_logits: bool) -> torch.Tensor:
    """One window through the .pte's KV cache -> logits [len(window), V]."""
    tokens = torch.tensor([window])
    if full_logits:
        return pte.forward(tokens, 0)[0]
    # Last-position program: one token at a time, each step reading the cache the previous ones wrote.
    return torch.stack(
        [pte.forward(tokens[:, i : i + 1], i).reshape(-1, pte.vocab_size)[-1] for i in range(len(window))]
    )


def _check_vocab(*, ckpt: Checkpoint, pte: PteModel, tokenizer, tokenizer_path: Path) -> None:
    if pte.vocab_size != ckpt.args.vocab_size:
        raise EdgeError(
            f"the .pte's vocabulary ({pte.vocab_size}) differs from the reference's ({ckpt.args.vocab_size})"
        )
    if tokenizer.n_words != ckpt.args.vocab_size:
        raise EdgeError(
            f"tokenizer {tokenizer_path} has {tokenizer.n_words} tokens "
            f"but the model's vocabulary is {ckpt.args.vocab_size}: "
            "it does not belong to this model"
        )


class EagerProgram:
    """An `edge.model.Transformer` (e.g. the export's quantized model, before lowering) -> PteModel's surface.

    Scores what the export quantized without the minutes of lowering; the .pte runs the same integers.
    """

    def __init__(self, model, *, bos_id: int) -> None:
        model.set_attention_path(AttentionPath.SEQUENCE)
        self.model = model.eval()
        self.vocab_size = model.args.vocab_size
        self.max_context = model.max_context
        self.metadata = {"get_bos_id": bos_id}

    def forward(self, tokens: torch.Tensor, pos: int) -> torch.Tensor:
        with torch.no_grad():
            return self.model(tokens, torch.tensor([pos]))


def evaluate(
    *,
    pte_path: Path,
    reference: Path,
    text_path: Path,
    context: int = 256,
    max_windows: int | None = None,
    tokenizer_path: Path | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """(.pte or ONNX model, reference checkpoint, text) -> EvalResult; see the module docstring."""
    return evaluate_program(
        load_program(pte_path),
        label=str(pte_path),
        reference=reference,
        text_path=text_path,
        context=context,
        max_windows=max_windows,
        tokenizer_path=tokenizer_path,
        on_window=on_window,
    )


def evaluate_program(
    pte,
    *,
    label: str,
    reference: Path,
    text_path: Path,
    context: int = 256,
    max_windows: int | None = None,
    tokenizer_path: Path | None = None,
    on_window: Callable[[int, int], None] | None = None,
) -> EvalResult:
    """(a loaded program: PteModel, ONNX or EagerProgram; reference checkpoint; text) -> EvalResult."""
    ckpt = open_checkpoint(reference)
    if context < 2:
        raise EdgeError(f"context {context} is too short (at least 2 tokens)")
    if context >= pte.max_context:  # the program takes at most max_context - 1 tokens per call
        raise EdgeError(f"context {context} must be shorter than the .pte's maximum context {pte.max_context}")
    tokenizer_path = tokenizer_path or ckpt.tokenizer
    if tokenizer_path is None:
        raise EdgeError(f"{ckpt.path} has no tokenizer; pass --tokenizer")
    with native_stderr_filtered():  # the runner's tokenizer library logs from C++ as it compiles its regex
        tokenizer = load_tokenizer(tokenizer_path)
        _check_vocab(ckpt=ckpt, pte=pte, tokenizer=tokenizer, tokenizer_path=tokenizer_path)
        try:
            text = Path(text_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise EdgeError(f"cannot read text {text_path}: {e}") from None
        bos = int(pte.metadata.get("get_bos_id", ckpt.bos_id))  # type: ignore[arg-type]
        windows = tokenize_windows(text, tokenizer=tokenizer, bos_id=bos, context=context)
    if max_windows is not None:
        windows = windows[:max_windows]

    full_logits = returns_full_logits(pte, probe_token=bos)
    model = load_model(ckpt, max_context=context, dtype=torch.float32, full_logits=True)
    # Each window starts at position 0: plain causal attention over it is the reference's whole computation
    # (the KV-cache path would run ExecuTorch's eager cache ops, which log from C++ on every call).
    model.set_attention_path(AttentionPath.SEQUENCE)
    nll_pte = nll_ref = kl_sum = 0.0
    agree = count = 0
    for w_i, window in enumerate(windows):
        tokens = torch.tensor([window])
        with torch.no_grad():
            ref = model(tokens, torch.tensor([0]))[0, :-1].float()  # [C-1, V] predictions for tokens 1..
        got = pte_window_logits(pte, window, full_logits=full_logits)[:-1].float()
        targets = tokens[0, 1:]
        stats = compare_logits(ref, got, targets)
        nll_ref += stats.nll_ref
        nll_pte += stats.nll_got
        kl_sum += stats.kl
        agree += stats.agree
        count += len(targets)
        if on_window:
            on_window(w_i + 1, len(windows))
    return EvalResult(
        pte=label,
        reference=str(ckpt.path),
        text=str(text_path),
        context=context,
        windows=len(windows),
        predicted_tokens=count,
        pte_perplexity=math.exp(nll_pte / count),
        reference_perplexity=math.exp(nll_ref / count),
        top1_agreement=agree / count,
        mean_kl=kl_sum / count,
    )
