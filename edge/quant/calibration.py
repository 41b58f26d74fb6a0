"""Calibration windows: a plain-text file -> token samples for rotation optimization and GPTQ.

In:  a UTF-8 text file, the checkpoint's tokenizer (the runner's library, pytorch_tokenizers),
     a window length and a sample count.
Out: `Calibration`: int64 tokens [N, seq_len], each window [BOS, t_1, ..., t_{seq_len-1}]
     cut consecutively from the text (no overlap, deterministic), and the text's sha256
     for the manifest. A text too short for the windows asked for is an `EdgeError`,
     raised before any long work.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import torch

from edge.checkpoint.tokenizer import load_tokenizer
from edge.core.errors import EdgeError


@dataclass(frozen=True)
class Calibration:
    tokens: torch.Tensor  # [N, seq_len] int64
    text_sha256: str

    def take(self, n: int) -> torch.Tensor:
        """The first n windows [n, seq_len]."""
        return self.tokens[:n]


def read_text(path: Path) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EdgeError(f"calibration text {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise EdgeError(f"cannot read calibration text {path}: {e}") from None


def load_calibration(
    *, path: Path, tokenizer_path: Path, bos_id: int, seq_len: int, samples: int, vocab_size: int
) -> Calibration:
    """Text file -> `samples` windows of `seq_len` tokens, or EdgeError saying how many fit."""

    text = read_text(path)
    ids = load_tokenizer(tokenizer_path).encode(text, bos=False, eos=False)
    if ids and ids[0] == bos_id:  # a tokenizer.json post-processor may prepend BOS on its own
        ids = ids[1:]
    per = seq_len - 1
    fit = len(ids) // per
    if fit < samples:
        raise EdgeError(
            f"calibration text {path} has {len(ids)} tokens: {fit} windows of {seq_len}, "
            f"fewer than the {samples} asked for (use a longer text, fewer samples or a shorter calibration.seq_len)"
        )
    body = torch.tensor(ids[: samples * per], dtype=torch.int64).view(samples, per)
    if int(body.max()) >= vocab_size or bos_id >= vocab_size:
        raise EdgeError(
            f"the tokenizer gives ids up to {max(int(body.max()), bos_id)}, "
            f"outside the model's vocabulary of {vocab_size}"
        )
    tokens = torch.cat((torch.full((samples, 1), bos_id, dtype=torch.int64), body), dim=1)
    return Calibration(tokens=tokens, text_sha256=hashlib.sha256(text.encode("utf-8")).hexdigest())
