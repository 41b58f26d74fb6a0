"""edge.finetune.data: the Llama 3 chat template and its loss mask, formats, packing, and bad data (the tokenizer's
own chat template: test_chat_template.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edge.config.finetune import BadSamples, DataFormat
from edge.core.errors import EdgeError
from edge.finetune.data import ChatTemplate, load_training_data

CHAT_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|start_header_id|>", "<|end_header_id|>"]


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory) -> Path:
    """A word-level tokenizer with Llama 3's chat specials, so expected ids can be written by hand."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = [
        "\n\n",
        "system",
        "user",
        "assistant",
        "Be",
        "brief.",
        "Hi",
        "Hello!",
        "Add",
        "2",
        "and",
        "3.",
        "5",
        "Sum:",
        "x",
    ]
    vocab = {t: i for i, t in enumerate(CHAT_SPECIALS + words + ["[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(pattern="\n\n", behavior="isolated"),
            pre_tokenizers.Split(pattern=" ", behavior="removed"),
        ]
    )
    tok.add_special_tokens(CHAT_SPECIALS)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


def _id(tok_path: Path, token: str) -> int:
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tok_path)).token_to_id(token)


def test_chat_template_tokens_and_mask_match_the_hand_written_sequence(chat_tokenizer):
    from tokenizers import Tokenizer

    t = ChatTemplate(Tokenizer.from_file(str(chat_tokenizer)))
    ids, mask = t.render([("system", "Be brief."), ("user", " Hi "), ("assistant", "Hello!")])
    i = lambda s: _id(chat_tokenizer, s)  # noqa: E731
    bos, sh, eh, eot, nl = (
        i("<|begin_of_text|>"),
        i("<|start_header_id|>"),
        i("<|end_header_id|>"),
        i("<|eot_id|>"),
        i("\n\n"),
    )
    want = [
        bos,
        sh,
        i("system"),
        eh,
        nl,
        i("Be"),
        i("brief."),
        eot,
        sh,
        i("user"),
        eh,
        nl,
        i("Hi"),
        eot,
        sh,
        i("assistant"),
        eh,
        nl,
        i("Hello!"),
        eot,
    ]
    assert ids == want
    # only the assistant's content and the <|eot_id|> that closes it are trained on
    assert mask == [False] * 18 + [True, True]


def _write(path: Path, lines: list) -> Path:
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_messages_and_sharegpt_jsonl_with_bad_lines_skipped_and_counted(chat_tokenizer, tmp_path):
    f = _write(
        tmp_path / "d.jsonl",
        [
            {"messages": [{"role": "user", "content": "Add 2 and 3."}, {"role": "assistant", "content": "5"}]},
            {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]},
            "this is { not json",
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "  "}]},
            {"messages": [{"role": "user", "content": "Hi"}]},
            {"nothing": 1},
            {"messages": [{"role": "user", "content": "x " * 40}, {"role": "assistant", "content": "x"}]},
        ],
    )
    d = load_training_data(
        f, tokenizer_path=chat_tokenizer, fmt=DataFormat.AUTO, max_length=24, packing=False, bad=BadSamples.SKIP
    )
    r = d.report
    assert (r.samples, r.used) == (7, 2)
    assert dict(r.skipped) == {
        "lines that are not JSON": 1,
        "records with an empty response": 1,
        "records with no assistant turn": 1,
        "records missing messages": 1,
        "samples longer than max_length 24": 1,
    }
    assert r.first_skipped["lines that are not JSON"] == 3
    assert "skipped 1 lines that are not JSON (first at #3)" in r.summary()
    assert d.tokens.shape == (2, 24)
    # unpacked: one window per sample, padding outside the mask; trained = "5" + eot, "Hello!" + eot
    assert d.mask.sum(1).tolist() == [2, 2]
    assert d.tokens[0, d.mask[0]].tolist() == [_id(chat_tokenizer, "5"), _id(chat_tokenizer, "<|eot_id|>")]


def test_bad_samples_error_names_the_item(chat_tokenizer, tmp_path):
    f = _write(
        tmp_path / "d.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}, "oops"],
    )
    with pytest.raises(EdgeError, match=r"item 2 is unusable \(lines that are not JSON\)"):
        load_training_data(
            f, tokenizer_path=chat_tokenizer, fmt=DataFormat.AUTO, max_length=32, packing=True, bad=BadSamples.ERROR
        )


def test_alpaca_is_a_user_and_an_assistant_turn(chat_tokenizer, tmp_path):
    f = tmp_path / "a.json"
    f.write_text(
        json.dumps(
            [
                {"instruction": "Add", "input": "2 and 3.", "output": "Sum: 5"},
                {"instruction": "Hi", "output": ""},
                {"instruction": "Hi"},
            ]
        )
    )
    d = load_training_data(
        f, tokenizer_path=chat_tokenizer, fmt=DataFormat.AUTO, max_length=24, packing=False, bad=BadSamples.SKIP
    )
    assert d.report.used == 1 and dict(d.report.skipped) == {
        "records with an empty response": 1,
        "records missing instruction/output": 1,
    }
    i = lambda s: _id(chat_tokenizer, s)  # noqa: E731
    row = d.tokens[0].tolist()
    user = row.index(i("user"))
    assert row[user + 3 : user + 7] == [i("Add"), i("\n\n"), i("2"), i("and")]
    assert d.tokens[0, d.mask[0]].tolist() == [i("Sum:"), i("5"), i("<|eot_id|>")]


def test_packing_cuts_full_windows_across_samples(chat_tokenizer, tmp_path):
    sample = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}  # 13 tokens
    f = _write(tmp_path / "d.jsonl", [sample] * 10)
    d = load_training_data(
        f, tokenizer_path=chat_tokenizer, fmt=DataFormat.MESSAGES, max_length=16, packing=True, bad=BadSamples.SKIP
    )
    assert d.tokens.shape == (8, 16)  # 130 tokens -> 8 full windows, the 2-token tail dropped
    one = [False] * 11 + [True, True]  # "Hello!" <|eot_id|> trained
    want = torch.tensor((one * 10)[:128]).view(8, 16)
    want[:, 0] = False  # nothing predicts a window's first token
    assert torch.equal(d.mask, want) and int(d.mask.sum()) == 17
    assert d.tokens[:, 0].tolist()[:2] == [
        _id(chat_tokenizer, "<|begin_of_text|>"),
        _id(chat_tokenizer, "<|end_header_id|>"),
    ]  # token 16: 2nd sample, 4th token


def test_plain_text_windows_start_with_bos_and_train_every_token(tiny_hf, tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("The runner reads the program and generates text. " * 30)
    d = load_training_data(
        f,
        tokenizer_path=tiny_hf / "tokenizer.json",
        fmt=DataFormat.AUTO,
        max_length=32,
        packing=False,
        bad=BadSamples.SKIP,
    )
    assert d.tokens[0, 0].item() == _id(tiny_hf / "tokenizer.json", "<|begin_of_text|>")
    assert d.mask[:, 1:].all() and not d.mask[:, 0].any()
    assert d.tokens.shape[1] == 32 and len(d.sha256) == 64


@pytest.mark.parametrize(
    "content, name, message",
    [
        (b"", "e.txt", "is empty"),
        (b"\xff\xfe\x00bad", "b.txt", "is not UTF-8"),
        (b"short", "s.txt", "no training window of 32 tokens"),
        (b"{}", "x.csv", "cannot tell its format"),
        (b'[{"instruction": "Hi", "output": ""}]', "a.json", "no training window"),
        (b'[{"instruction": ', "a.json", "not valid JSON"),
    ],
)
def test_unusable_files_are_one_error(tiny_hf, chat_tokenizer, tmp_path, content, name, message):
    f = tmp_path / name
    f.write_bytes(content)
    with pytest.raises(EdgeError, match=message):
        load_training_data(
            f,
            tokenizer_path=chat_tokenizer if name.endswith(".json") else tiny_hf / "tokenizer.json",
            fmt=DataFormat.AUTO,
            max_length=32,
            packing=True,
            bad=BadSamples.SKIP,
        )


def test_chat_data_needs_a_chat_template(tiny_hf, tmp_path):
    f = _write(
        tmp_path / "d.jsonl",
        [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}],
    )
    with pytest.raises(EdgeError, match=r"tokenizer .*tokenizer\.json has no chat template"):
        load_training_data(
            f,
            tokenizer_path=tiny_hf / "tokenizer.json",
            fmt=DataFormat.AUTO,
            max_length=32,
            packing=True,
            bad=BadSamples.SKIP,
        )
