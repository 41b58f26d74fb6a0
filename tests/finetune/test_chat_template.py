"""edge.finetune.data with the tokenizer's own chat template (tokenizer_config.json `chat_template`, read through
transformers): a ChatML tokenizer (SmolLM2-style `<|im_start|>`/`<|im_end|>`), Meta's Llama 3 template against the
hand-written one, and a tokenizer with no template. Tiny word-level tokenizers are built here, so ids are exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge.config.finetune import BadSamples, DataFormat
from edge.core.errors import EdgeError
from edge.finetune.data import ChatTemplate, TokenizerChatTemplate, chat_template, load_training_data

CHATML_SPECIALS = ["<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]
WORDS = ["system", "user", "assistant", "Be", "brief.", "Hi", "Hello!", "Add", "2", "and", "3.", "5", "Sum:", "x"]

# SmolLM2-Instruct's template, its default system prompt shortened to words in the vocabulary.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nBe brief.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Meta-Llama-3-8B-Instruct's template, verbatim.
LLAMA3 = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
    " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)


def _tokenizer(folder: Path, specials: list[str], newline: str, config: dict | None) -> Path:
    """Word-level tokenizer.json (specials, `newline`, WORDS, [UNK]) + tokenizer_config.json (if given) -> its path."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate([*specials, newline, *WORDS, "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern=newline, behavior="isolated"),
            pre_tokenizers.Split(pattern=" ", behavior="removed"),
        ]
    )
    tok.add_special_tokens(specials)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(
            json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", **config})
        )
    return folder / "tokenizer.json"


@pytest.fixture(scope="module")
def chatml(tmp_path_factory) -> Path:
    config = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "chat_template": CHATML}
    return _tokenizer(tmp_path_factory.mktemp("chatml") / "tok", CHATML_SPECIALS, "\n", config)


def _load(path: Path):
    from edge.checkpoint.tokenizer import load_hf_tokenizer

    return load_hf_tokenizer(path)


def _ids(path: Path):
    """tokenizer.json -> a function: token -> its id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    return lambda t: tok.token_to_id(t)


def test_chatml_ids_are_the_template_and_the_mask_is_the_assistant_content_and_im_end(chatml):
    t = chat_template(_load(chatml), chatml)
    assert isinstance(t, TokenizerChatTemplate)
    ids, mask = t.render([("user", "Hi"), ("assistant", "Hello!"), ("user", "Add 2 and 3."), ("assistant", "Sum: 5")])
    i = _ids(chatml)
    s, e, nl = i("<|im_start|>"), i("<|im_end|>"), i("\n")
    assert (s, e, nl) == (0, 1, 2)
    want = [
        *[s, i("system"), nl, i("Be"), i("brief."), e, nl],  # the template's default system turn
        *[s, i("user"), nl, i("Hi"), e, nl],
        *[s, i("assistant"), nl, i("Hello!"), e, nl],
        *[s, i("user"), nl, i("Add"), i("2"), i("and"), i("3."), e, nl],
        *[s, i("assistant"), nl, i("Sum:"), i("5"), e, nl],
    ]
    assert ids == want
    # the same ids transformers' apply_chat_template(tokenize=True) gives
    msgs = [{"role": r, "content": c} for r, c in [("user", "Hi"), ("assistant", "Hello!")]]
    msgs += [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "Sum: 5"}]
    assert _load(chatml).apply_chat_template(msgs, tokenize=True, return_dict=False) == want
    # trained: "Hello!" <|im_end|> and "Sum:" "5" <|im_end|>; never the headers or the newline after <|im_end|>
    trained = [False] * 16 + [True, True, False] + [False] * 12 + [True, True, True, False]
    assert mask == trained
    assert [x for x, m in zip(ids, mask) if m] == [i("Hello!"), e, i("Sum:"), i("5"), e]
    assert t.pad == e


def test_chatml_data_unpacked_pads_with_im_end_and_plain_text_starts_with_bos(chatml, tmp_path):
    f = tmp_path / "a.json"
    f.write_text(json.dumps([{"instruction": "Add", "input": "2 and 3.", "output": "Sum: 5"}]))
    d = load_training_data(
        f, tokenizer_path=chatml, fmt=DataFormat.AUTO, max_length=32, packing=False, bad=BadSamples.SKIP
    )
    i = _ids(chatml)
    s, e, nl = i("<|im_start|>"), i("<|im_end|>"), i("\n")
    row = [s, i("system"), nl, i("Be"), i("brief."), e, nl]
    row += [s, i("user"), nl, i("Add"), nl, nl, i("2"), i("and"), i("3."), e, nl]  # instruction \n\n input
    row += [s, i("assistant"), nl, i("Sum:"), i("5"), e, nl]
    assert d.tokens[0].tolist() == row + [e] * (32 - len(row))  # padded with <|im_end|>, outside the mask
    assert d.mask[0].tolist() == [False] * 21 + [True, True, True] + [False] * 8
    # plain text: the checkpoint's BOS (given) or the tokenizer's bos_token, then every token trained on
    t = tmp_path / "t.txt"
    t.write_text("Hi Hello! Add 2 and 3. " * 10)
    for bos in (None, s):
        d = load_training_data(
            t, tokenizer_path=chatml, fmt=DataFormat.AUTO, max_length=8, packing=False, bad=BadSamples.SKIP, bos_id=bos
        )
        assert d.tokens[0].tolist() == [s, i("Hi"), i("Hello!"), i("Add"), i("2"), i("and"), i("3."), i("Hi")]
        assert d.mask[:, 1:].all() and not d.mask[:, 0].any()


def test_meta_llama3_template_gives_the_hand_written_ids_and_mask(tmp_path):
    tok = _tokenizer(tmp_path / "plain", LLAMA3_SPECIALS, "\n\n", None)
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3}
    with_template = _tokenizer(tmp_path / "templated", LLAMA3_SPECIALS, "\n\n", config)
    fallback, own = chat_template(_load(tok), tok), chat_template(_load(with_template), with_template)
    assert isinstance(fallback, ChatTemplate) and isinstance(own, TokenizerChatTemplate)
    conv = [("system", "Be brief."), ("user", " Hi "), ("assistant", "Hello!"), ("user", "x"), ("assistant", "5")]
    ids, mask = own.render(conv)
    assert (ids, mask) == fallback.render(conv)
    i = _ids(tok)
    assert [x for x, m in zip(ids, mask) if m] == [i("Hello!"), i("<|eot_id|>"), i("5"), i("<|eot_id|>")]
    assert own.pad == fallback.pad == i("<|eot_id|>")


def test_no_chat_template_is_one_error_for_chat_data_and_plain_text_still_works(tmp_path):
    tok = _tokenizer(tmp_path / "tok", CHATML_SPECIALS, "\n", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"})
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "5"}]}))
    with pytest.raises(EdgeError, match=r"^the tokenizer .*tok/tokenizer\.json has no chat template") as e:
        load_training_data(f, tokenizer_path=tok, fmt=DataFormat.AUTO, max_length=32, packing=True, bad=BadSamples.SKIP)
    assert "\n" not in str(e.value)
    t = tmp_path / "t.txt"
    t.write_text("Hi Hello! " * 10)
    d = load_training_data(t, tokenizer_path=tok, fmt=DataFormat.AUTO, max_length=4, packing=True, bad=BadSamples.SKIP)
    assert d.tokens[0].tolist() == [0, *[_ids(tok)(w) for w in ("Hi", "Hello!", "Hi")]]


def _chatml_data(tmp_path: Path, name: str, template: str, rows: list[dict], bad: BadSamples):
    tok = _tokenizer(tmp_path / name, CHATML_SPECIALS, "\n", {"eos_token": "<|im_end|>", "chat_template": template})
    f = tmp_path / f"{name}.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return load_training_data(f, tokenizer_path=tok, fmt=DataFormat.AUTO, max_length=32, packing=False, bad=bad)


def test_samples_a_template_refuses_or_cannot_mark_are_skipped_and_counted(tmp_path):
    assistant_first = {"messages": [{"role": "assistant", "content": "Hi"}, {"role": "user", "content": "x"}]}
    good = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "5"}]}
    d = _chatml_data(tmp_path, "chatml", CHATML, [assistant_first, good], BadSamples.SKIP)
    assert (d.report.used, dict(d.report.skipped)) == (1, {"records that open with an assistant turn": 1})
    refuses = CHATML.replace(
        "{% for message in messages %}",
        "{% if messages[0]['role'] == 'assistant' %}{{ raise_exception('a user turn comes first') }}{% endif %}"
        "{% for message in messages %}",
        1,
    )
    d = _chatml_data(tmp_path, "refuses", refuses, [assistant_first, good], BadSamples.SKIP)
    assert dict(d.report.skipped) == {"records the chat template refuses (a user turn comes first)": 1}
    # the generation prompt is not the header the assistant turn is written with: no span to trust
    not_prefix = CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\nx\n'")
    with pytest.raises(EdgeError, match=r"item 1 is unusable \(records the chat template does not render turn by"):
        _chatml_data(tmp_path, "not_prefix", not_prefix, [good], BadSamples.ERROR)
