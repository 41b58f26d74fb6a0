"""A user's prompt -> the text the model is fed: raw, or rendered with the model's chat template.

In:  the export folder (chat_template.jinja, copied there by edge.export from the checkpoint's tokenizer
     files; manifest.json), the prompt, and whether to chat.
Out: `Prompt`: the text and whether the runner should put BOS in front of it.

Templates are rendered with jinja2 in a sandbox, with the settings transformers uses for chat templates
(trim_blocks, lstrip_blocks, loop controls), so the rendering is the one `apply_chat_template` gives.
Llama 3's own template is built in for Meta-layout Instruct checkpoints, whose folders carry none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from edge.checkpoint.tokenizer import CHAT_TEMPLATE_NAME
from edge.core.errors import EdgeError

# Llama 3's chat format (the model card's prompt format), for checkpoints that ship no template.
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
LLAMA3_BOS_TEXT = "<|begin_of_text|>"


@dataclass(frozen=True)
class Prompt:
    text: str
    add_bos: bool  # the runner puts BOS in front (raw text, or a template that starts with it, stripped here)
    chat: bool


def special_text(tokenizer: Path, token_id: int | None) -> str | None:
    """A tokenizer file and a token id -> that special token's text (tokenizer.json's added tokens; Llama 3's
    BOS for tokenizer.model), or None."""
    if token_id is None:
        return None
    if tokenizer.suffix != ".json":
        return LLAMA3_BOS_TEXT
    try:
        added = json.loads(tokenizer.read_text(encoding="utf-8")).get("added_tokens", [])
    except (OSError, ValueError):
        return None
    return next((t["content"] for t in added if t.get("id") == token_id), None)


def chat_template(folder: Path, manifest: dict) -> str | None:
    """The export folder -> the template to apply by default: its chat_template.jinja, or Llama 3's for a
    checkpoint whose name says Instruct; None for a base model."""
    if (folder / CHAT_TEMPLATE_NAME).is_file():
        return (folder / CHAT_TEMPLATE_NAME).read_text(encoding="utf-8")
    checkpoint = str((manifest.get("config") or {}).get("checkpoint") or "")
    return LLAMA3_TEMPLATE if "instruct" in Path(checkpoint).name.lower() else None


def render(template: str, prompt: str, *, bos_token: str | None) -> str:
    """A chat template and one user message -> the text, ending with the assistant's turn opened."""
    from jinja2.exceptions import TemplateError
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str):
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals.update(raise_exception=raise_exception, strftime_now=lambda f: datetime.now().strftime(f))
    try:
        return env.from_string(template).render(
            messages=[{"role": "user", "content": prompt}], add_generation_prompt=True, bos_token=bos_token or ""
        )
    except TemplateError as e:
        raise EdgeError(f"the model's chat template failed: {e}") from None


def build_prompt(folder: Path, manifest: dict, prompt: str, *, chat: bool | None, bos_text: str | None) -> Prompt:
    """(export folder, its manifest, the user's prompt, --chat / --no-chat / neither) -> Prompt."""
    template = chat_template(folder, manifest)
    if chat is None:
        chat = template is not None
    if not chat:
        return Prompt(text=prompt, add_bos=True, chat=False)
    text = render(template or LLAMA3_TEMPLATE, prompt, bos_token=bos_text)
    if bos_text and text.startswith(bos_text):
        return Prompt(text=text[len(bos_text) :], add_bos=True, chat=True)
    return Prompt(text=text, add_bos=False, chat=True)
