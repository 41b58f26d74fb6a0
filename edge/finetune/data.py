"""Training data -> fixed token windows with a loss mask.

In:  a data file (plain text, Alpaca JSON/JSONL, or `messages` / ShareGPT JSONL), the
     checkpoint's `tokenizer.json` (with its tokenizer_config.json), its BOS id, the window
     length, packing and the bad-sample policy.
Out: `TrainingData`: tokens [N, L] int64 and mask [N, L] bool (mask[n, i]: token i is a
     target the loss counts), plus a `DataReport` (samples used and skipped, by reason).

Plain text starts with the checkpoint's BOS and every token is trained on. Chat samples (Alpaca
included: instruction + input is the user turn, output the assistant's) are rendered with the
tokenizer's own `chat_template` (transformers), and only each assistant turn's content and the
end-of-turn token closing it are trained on (`TokenizerChatTemplate`). A tokenizer without a
chat template but with Llama 3's special tokens gets Llama 3's template written out by hand
(`ChatTemplate`, the same ids as Meta's template):

    <|begin_of_text|><|start_header_id|>system<|end_header_id|>\\n\\n{...}<|eot_id|>
    <|start_header_id|>user<|end_header_id|>\\n\\n{...}<|eot_id|>
    <|start_header_id|>assistant<|end_header_id|>\\n\\n{...}<|eot_id|>

any other is an error for chat data. Packing concatenates samples and cuts full windows;
without packing each sample gets its own window, padded with the end-of-turn token
(`<|eot_id|>`, `<|im_end|>`; else EOS) outside the mask.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge.config.finetune import BadSamples, DataFormat
from edge.core.errors import EdgeError

HEADER = ("<|start_header_id|>", "<|end_header_id|>")
EOT = "<|eot_id|>"
BOS = "<|begin_of_text|>"
ROLES = {"system": "system", "user": "user", "assistant": "assistant", "human": "user", "gpt": "assistant"}


@dataclass
class DataReport:
    samples: int = 0
    used: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> count
    first_skipped: dict[str, int] = field(default_factory=dict)  # reason -> first line/item number
    tokens: int = 0
    trained_tokens: int = 0

    def summary(self) -> str:
        parts = [f"{self.used} of {self.samples} samples used, {self.tokens} tokens ({self.trained_tokens} trained on)"]
        for reason, n in sorted(self.skipped.items()):
            parts.append(f"skipped {n} {reason} (first at #{self.first_skipped[reason]})")
        return "; ".join(parts)


@dataclass(frozen=True)
class TrainingData:
    tokens: torch.Tensor  # [N, L] int64
    mask: torch.Tensor  # [N, L] bool: the token at this position is a training target
    report: DataReport
    sha256: str  # of the data file


class _Bad(Exception):
    """One unusable sample: the reason is counted (skip) or raised (error)."""


def detect_format(path: Path, text: str) -> DataFormat:
    """File name and its text -> DataFormat (.txt/.md text, .json Alpaca, .jsonl by its first record's keys)."""
    suffix = path.suffix.lower()
    if suffix in (".txt", ".md", ".text"):
        return DataFormat.TEXT
    if suffix == ".json":
        return DataFormat.ALPACA
    if suffix == ".jsonl":
        for line in text.splitlines():
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    break
                return DataFormat.ALPACA if isinstance(first, dict) and "instruction" in first else DataFormat.MESSAGES
        return DataFormat.MESSAGES
    raise EdgeError(f"data {path}: cannot tell its format from the extension {suffix!r}; set finetune.data_format")


class ChatTemplate:
    """Llama 3's chat template on a `tokenizers.Tokenizer`: messages -> (ids, mask)."""

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        ids = {t: tokenizer.token_to_id(t) for t in (BOS, EOT, *HEADER)}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise EdgeError(
                f"the tokenizer has no {', '.join(missing)}: chat data needs a Llama 3 tokenizer (use plain text)"
            )
        self.bos, self.eot, self.start, self.end = (ids[t] for t in (BOS, EOT, *HEADER))
        self.pad = self.eot

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def render(self, messages: list[tuple[str, str]]) -> tuple[list[int], list[bool]]:
        """[(role, content)] -> token ids and, per id, whether the loss counts it (assistant content + eot)."""
        ids, mask = [self.bos], [False]
        for role, content in messages:
            head = [self.start, *self.encode(role), self.end, *self.encode("\n\n")]
            body = [*self.encode(content.strip()), self.eot]
            ids += head + body
            mask += [False] * len(head) + [role == "assistant"] * len(body)
        return ids, mask


class TokenizerChatTemplate:
    """A transformers tokenizer's own `chat_template`: [(role, content)] -> (ids, mask).

    Assistant turn k is found by rendering prefixes: messages[:k] with the generation prompt ends where
    its content starts, messages[:k+1] ends after its closing; both texts must be prefixes of the whole
    conversation's. The whole text is tokenized once (as `apply_chat_template(tokenize=True)` does), and
    the tokens overlapping such a span are trained on up to and including its last special token, the
    end-of-turn (`<|eot_id|>`, `<|im_end|>`): what the template writes after it (ChatML's newline) is not.
    """

    def __init__(self, tokenizer) -> None:
        self.tok = tokenizer
        self.special = {i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
        self.eot: int | None = None  # the end-of-turn token, once a sample has shown it

    @property
    def pad(self) -> int:
        """The end-of-turn token (else EOS, else 0): padding outside the mask."""
        eos = self.tok.eos_token_id
        return self.eot if self.eot is not None else eos if eos is not None else 0

    def _text(self, messages: list[dict], *, prompt: bool) -> str:
        from jinja2 import TemplateError

        try:
            return self.tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
        except (TemplateError, ValueError, TypeError) as e:
            raise _Bad(f"records the chat template refuses ({e})") from None

    def _span(self, msgs: list[dict], k: int, text: str) -> tuple[int, int]:
        """Messages, assistant turn k, the whole text -> the characters [a, b) of turn k after its header."""
        if k == 0:  # transformers renders no empty conversation, so no header to end the span at
            raise _Bad("records that open with an assistant turn")
        before, after = self._text(msgs[:k], prompt=True), self._text(msgs[: k + 1], prompt=False)
        if not (after.startswith(before) and text.startswith(after)):
            raise _Bad("records the chat template does not render turn by turn (prefixes differ)")
        return len(before), len(after)

    def render(self, messages: list[tuple[str, str]]) -> tuple[list[int], list[bool]]:
        """[(role, content)] -> token ids and, per id, whether the loss counts it (assistant content + end-of-turn)."""
        msgs = [{"role": r, "content": c} for r, c in messages]
        text = self._text(msgs, prompt=False)
        enc = self.tok.backend_tokenizer.encode(text, add_special_tokens=False)
        ids, mask = list(enc.ids), [False] * len(enc.ids)
        for k, (role, _) in enumerate(messages):
            if role != "assistant":
                continue
            a, b = self._span(msgs, k, text)
            inside = [i for i, (s, e) in enumerate(enc.offsets) if s < b and e > a]
            if not inside:
                raise _Bad("records the chat template renders an assistant turn as nothing")
            ends = [i for i in inside if ids[i] in self.special]
            last = ends[-1] if ends else inside[-1]  # no end-of-turn token: the whole turn
            if ends and self.eot is None:
                self.eot = ids[last]
            for i in inside:
                mask[i] = i <= last
        return ids, mask


def chat_template(tokenizer, name: Path) -> ChatTemplate | TokenizerChatTemplate:
    """transformers tokenizer (read from `name`) -> its chat template; Llama 3's when it has none but Llama 3's
    special tokens; else EdgeError."""
    if tokenizer.chat_template:
        return TokenizerChatTemplate(tokenizer)
    backend = tokenizer.backend_tokenizer
    if all(backend.token_to_id(t) is not None for t in (BOS, EOT, *HEADER)):
        return ChatTemplate(backend)
    raise EdgeError(
        f"the tokenizer {name} has no chat template (no chat_template in tokenizer_config.json, no "
        "chat_template.jinja): chat data needs one; plain text does not"
    )


def _messages(record, fmt: DataFormat) -> list[tuple[str, str]]:
    """One JSON record -> [(role, content)], or _Bad(reason)."""
    if not isinstance(record, dict):
        raise _Bad("records that are not JSON objects")
    if fmt is DataFormat.ALPACA:
        instruction, output = record.get("instruction"), record.get("output")
        if (
            not isinstance(instruction, str)
            or not isinstance(output, str)
            or not isinstance(record.get("input", ""), str)
        ):
            raise _Bad("records missing instruction/output")
        if not output.strip():
            raise _Bad("records with an empty response")
        user = instruction.strip() + ("\n\n" + record["input"].strip() if record.get("input", "").strip() else "")
        return [("user", user), ("assistant", output)]
    turns = record.get("messages", record.get("conversations"))
    if not isinstance(turns, list) or not turns:
        raise _Bad("records missing messages")
    out = []
    for t in turns:
        if not isinstance(t, dict):
            raise _Bad("records with malformed messages")
        role, content = t.get("role", t.get("from")), t.get("content", t.get("value"))
        if role not in ROLES or not isinstance(content, str):
            raise _Bad("records with malformed messages")
        out.append((ROLES[role], content))
    assistant = [c for r, c in out if r == "assistant"]
    if not assistant:
        raise _Bad("records with no assistant turn")
    if any(not c.strip() for c in assistant):
        raise _Bad("records with an empty response")
    return out


def _records(path: Path, text: str, fmt: DataFormat) -> list[tuple[int, object]]:
    """File text -> [(item number, parsed record or _Bad)]: a JSON list, or one record per JSONL line."""
    stripped = text.lstrip()
    if fmt is DataFormat.ALPACA and stripped.startswith("["):
        try:
            items = json.loads(text)
        except json.JSONDecodeError as e:
            raise EdgeError(f"data {path}: not valid JSON ({e})") from None
        return list(enumerate(items, start=1))
    out: list[tuple[int, object]] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((n, json.loads(line)))
        except json.JSONDecodeError:
            out.append((n, _Bad("lines that are not JSON")))
    return out


def load_training_data(
    path: Path,
    *,
    tokenizer_path: Path,
    fmt: DataFormat,
    max_length: int,
    packing: bool,
    bad: BadSamples,
    bos_id: int | None = None,
) -> TrainingData:
    """Data file, tokenizer.json, BOS id for plain text (None: the tokenizer's) -> TrainingData; EdgeError when
    the file cannot be used at all (or, with bad=error, at the first bad sample)."""
    from edge.checkpoint.tokenizer import load_hf_tokenizer

    if not path.is_file():
        raise EdgeError(f"data {path} does not exist or is not a file")
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise EdgeError(f"data {path} is not UTF-8 text (byte {e.start})") from None
    if not text.strip():
        raise EdgeError(f"data {path} is empty")
    tok = load_hf_tokenizer(tokenizer_path)
    fmt = detect_format(path, text) if fmt is DataFormat.AUTO else fmt
    report = DataReport()
    samples: list[tuple[list[int], list[bool]]] = []
    pad = 0
    if fmt is DataFormat.TEXT:
        backend = tok.backend_tokenizer
        bos = next((b for b in (bos_id, tok.bos_token_id, backend.token_to_id(BOS)) if b is not None), None)
        if bos is None:
            raise EdgeError(f"the tokenizer {tokenizer_path} has no BOS token (bos_token in tokenizer_config.json)")
        ids = [bos, *backend.encode(text, add_special_tokens=False).ids]
        samples.append((ids, [False] + [True] * (len(ids) - 1)))
        report.samples = report.used = 1
        packing = True  # one long document: windows are cut from it
    else:
        template = chat_template(tok, tokenizer_path)
        samples = _chat_samples(path, text, fmt, template, max_length=max_length, bad=bad, report=report)
        pad = template.pad
    windows = _pack(samples, max_length) if packing else _pad(samples, max_length, pad=pad)
    if not windows:
        raise EdgeError(f"data {path}: no training window of {max_length} tokens could be made ({report.summary()})")
    tokens = torch.tensor([w[0] for w in windows], dtype=torch.int64)
    mask = torch.tensor([w[1] for w in windows], dtype=torch.bool)
    mask[:, 0] = False  # the first token of a window has no prefix to predict it from
    report.tokens, report.trained_tokens = int(tokens.numel()), int(mask.sum())
    if report.trained_tokens == 0:
        raise EdgeError(f"data {path}: no token to train on ({report.summary()})")
    return TrainingData(tokens=tokens, mask=mask, report=report, sha256=hashlib.sha256(raw).hexdigest())


def _chat_samples(
    path: Path, text: str, fmt: DataFormat, template, *, max_length: int, bad: BadSamples, report: DataReport
) -> list[tuple[list[int], list[bool]]]:
    """Chat/Alpaca file text, its chat template -> [(ids, mask)] per usable record; the rest counted in `report`
    (skip) or one EdgeError (error)."""
    samples = []
    for n, record in _records(path, text, fmt):
        report.samples += 1
        try:
            if isinstance(record, _Bad):
                raise record
            ids, mask = template.render(_messages(record, fmt))
            if len(ids) > max_length:
                raise _Bad(f"samples longer than max_length {max_length}")
        except _Bad as e:
            reason = str(e)
            if bad is BadSamples.ERROR:
                raise EdgeError(
                    f"data {path}: item {n} is unusable ({reason}); finetune.bad_samples: skip drops such samples"
                ) from None
            report.skipped[reason] += 1
            report.first_skipped.setdefault(reason, n)
            continue
        samples.append((ids, mask))
        report.used += 1
    return samples


def _pack(samples: list[tuple[list[int], list[bool]]], length: int) -> list[tuple[list[int], list[bool]]]:
    """Samples concatenated, cut into full windows of `length` (the incomplete tail is dropped)."""
    ids = [i for s in samples for i in s[0]]
    mask = [m for s in samples for m in s[1]]
    return [(ids[a : a + length], mask[a : a + length]) for a in range(0, len(ids) - length + 1, length)]


def _pad(samples: list[tuple[list[int], list[bool]]], length: int, *, pad: int) -> list[tuple[list[int], list[bool]]]:
    """One window per sample, padded to `length` with `pad` outside the mask."""
    return [(ids + [pad] * (length - len(ids)), mask + [False] * (length - len(ids))) for ids, mask in samples]
