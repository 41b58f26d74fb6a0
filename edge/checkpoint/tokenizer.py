"""A checkpoint's tokenizer, loaded with the library ExecuTorch's runner uses, or with transformers.

In:  tokenizer.json or tokenizer.model. Out: a `pytorch_tokenizers` tokenizer (`load_tokenizer`), a
     transformers tokenizer with the checkpoint's special tokens and chat template (`load_hf_tokenizer`),
     or one `EdgeError`.
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


def load_hf_tokenizer(path: Path):
    """tokenizer.json (+ tokenizer_config.json / chat_template.jinja beside it) -> transformers fast tokenizer.

    Read from the folder only, never the model hub; its `bos_token`, `eos_token` and `chat_template` are the
    checkpoint's own (None where tokenizer_config.json does not set them).
    """
    from transformers import PreTrainedTokenizerFast

    if path.suffix != ".json" or not path.is_file():
        raise EdgeError(f"fine-tuning reads tokenizer.json (Hugging Face tokenizers); {path} is not one")
    try:
        return PreTrainedTokenizerFast.from_pretrained(
            str(path.parent), tokenizer_file=str(path), local_files_only=True
        )
    except Exception as e:
        raise EdgeError(f"cannot load tokenizer {path} ({type(e).__name__}: {e})") from None


CHAT_TEMPLATE_NAME = "chat_template.jinja"


def chat_template_of(tokenizer: Path) -> str | None:
    """A tokenizer file -> the chat template its folder carries (chat_template.jinja, or tokenizer_config.json's
    `chat_template`, its "default" entry when it holds several), or None."""
    folder = tokenizer.parent
    if (folder / CHAT_TEMPLATE_NAME).is_file():
        return (folder / CHAT_TEMPLATE_NAME).read_text(encoding="utf-8")
    config = folder / "tokenizer_config.json"
    if not config.is_file():
        return None
    import json

    try:
        template = json.loads(config.read_text(encoding="utf-8")).get("chat_template")
    except (OSError, ValueError):
        return None
    if isinstance(template, list):  # [{"name": "default", "template": ...}, {"name": "tool_use", ...}]
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None
