"""Prompts of an exact token count, for the model's own tokenizer.

In:  a tokenizer file (HF `tokenizer.json`, or a Llama 3 tiktoken `tokenizer.model`) and a
     token count N.
Out: `PromptBuilder.text(n)`: text that the tokenizer encodes into exactly n tokens (no special
     tokens). The runner may add BOS itself; the harness calibrates on the warm-up run's reported
     `prompt_tokens` (`PromptBuilder.text(n - offset)`) and records what the runner reports.
     Other tokenizer formats fall back to an estimate (about 0.75 words per token), corrected by
     the same calibration.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from android_bench.config import BenchError

# Plain English prose, repeated as needed: long prompts stay ordinary text, no special tokens.
PASSAGE = (
    "A small language model runs on the phone's CPU. It reads the prompt once, filling its cache of "
    "keys and values, and then writes one token at a time, each new token depending on every token "
    "before it. The first part is called prefill and is limited by arithmetic; the second is called "
    "decode and is limited by how fast the weights can be read from memory. Quantizing the weights to "
    "four bits makes them smaller, so decode gets faster and the program needs less memory. Engineers "
    "measure the time to the first token, the prefill and decode rates, the size of the program and "
    "the peak resident memory, and they repeat each measurement several times on a cool device. "
)

# Llama 3's pre-tokenizer pattern (meta-llama/llama3 tokenizer.py), for tiktoken-format files.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


class PromptBuilder:
    """Tokenizer file -> texts of exact token counts (`exact` False when only estimated)."""

    def __init__(self, tokenizer: Path) -> None:
        self.path = Path(tokenizer)
        codec = _load(self.path)
        self.exact = codec is not None
        self._encode, self._decode = codec if codec is not None else (None, None)
        self._cache: dict[int, str] = {}

    def count(self, text: str) -> int | None:
        """Tokens in text, without special tokens (None when the tokenizer cannot be read here)."""
        return len(self._encode(text)) if self._encode is not None else None

    def text(self, n: int) -> str:
        """n >= 1 -> text of exactly n tokens (or about n, when `exact` is False)."""
        if n < 1:
            raise BenchError(f"a prompt needs at least one token, not {n}")
        if n in self._cache:
            return self._cache[n]
        if self._encode is None or self._decode is None:
            words = PASSAGE.split()
            want = max(1, round(n * 0.75))
            text = " ".join((words * (want // len(words) + 1))[:want])
            self._cache[n] = text
            return text
        passage = PASSAGE
        ids = self._encode(passage)
        while len(ids) < n + 8:
            passage += PASSAGE
            ids = self._encode(passage)
        # Cutting between tokens can merge across the cut when re-encoded; try nearby cuts.
        for k in [n, *[n + d for d in range(-4, 5) if d]]:
            if k < 1:
                continue
            text = self._decode(ids[:k])
            if text and len(self._encode(text)) == n:
                self._cache[n] = text
                return text
        raise BenchError(f"could not build a prompt of exactly {n} tokens for {self.path}")


def _load(path: Path) -> tuple[Callable[[str], list[int]], Callable[[list[int]], str]] | None:
    """Tokenizer file -> (encode, decode) without special tokens; None for formats read only by the runner."""
    if not path.is_file():
        raise BenchError(f"tokenizer {path} does not exist")
    if path.suffix == ".json":
        from tokenizers import Tokenizer

        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # the tokenizers library raises plain Exceptions
            raise BenchError(f"tokenizer {path} is not a readable tokenizer.json ({str(e).splitlines()[0]})") from None
        return (lambda s: tok.encode(s, add_special_tokens=False).ids), (lambda ids: tok.decode(ids))
    try:
        import tiktoken
        from tiktoken.load import load_tiktoken_bpe

        ranks = load_tiktoken_bpe(str(path))
        enc = tiktoken.Encoding(name=path.name, pat_str=LLAMA3_PATTERN, mergeable_ranks=ranks, special_tokens={})
        return (lambda s: enc.encode(s, disallowed_special=())), (lambda ids: enc.decode(ids))
    except Exception:
        # sentencepiece (Llama 2) or another format: estimate, then calibrate on the warm-up.
        return None
