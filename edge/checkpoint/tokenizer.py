"""A checkpoint's tokenizer, loaded with the library ExecuTorch's runner uses.

In:  tokenizer.json or tokenizer.model. Out: a `pytorch_tokenizers` tokenizer, or one `EdgeError`.
"""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

from edge.core.errors import EdgeError


def load_tokenizer(path: Path):
    """tokenizer.json / tokenizer.model -> pytorch_tokenizers tokenizer (the runner's library)."""
    from pytorch_tokenizers import get_tokenizer

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints which backend it picked
            return get_tokenizer(str(path))
    except Exception as e:
        raise EdgeError(f"cannot load tokenizer {path} ({type(e).__name__})") from None


