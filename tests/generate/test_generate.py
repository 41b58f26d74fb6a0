"""edge.generate: text from the fixture's .pte (ExecuTorch's TextLLMRunner) and ONNX export, chat templates."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.checkpoint import FIXTURE_CHECKPOINT
from edge.config import parse_config
from edge.core.errors import EdgeError
from edge.core.progress import Progress
from edge.generate.chat import LLAMA3_TEMPLATE, build_prompt, render

PROMPT = "The Python tutorial"
SMOL_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from edge.export.pipeline import run_export

    out = tmp_path_factory.mktemp("generate") / "fixture"
    quant = {"linear": "int4", "group_size": 32, "output": "int8", "embedding": "int8"}
    config = parse_config(
        {"output": str(out), "max_context": 256, "formats": ["pte", "onnx"], "quantization": quant}, source="test"
    )
    run_export(config, progress=Progress(quiet=True))
    return out


def test_pte_text_is_the_programs_greedy_continuation(exported):
    from edge.checkpoint.tokenizer import load_tokenizer
    from edge.evaluate.pte_model import load_pte
    from edge.generate import generate

    pieces = []
    result = generate(exported / "model.pte", PROMPT, max_new_tokens=16, on_text=pieces.append)
    assert not result.chat  # the fixture's tokenizer carries no chat template: raw text
    assert result.text == "".join(pieces) and result.text.strip()
    assert result.generated_tokens == 16 and result.prompt_tokens >= 4  # BOS + the prompt's tokens
    assert result.prefill_tokens_per_s is None or result.prefill_tokens_per_s > 0
    tok = load_tokenizer(FIXTURE_CHECKPOINT / "tokenizer.json")
    bos = int(json.loads((exported / "manifest.json").read_text())["runner_metadata"]["get_bos_id"])
    ids = tok.encode(PROMPT, bos=False, eos=False)
    prompt_ids = [bos, *(ids[1:] if ids[0] == bos else ids)]  # its tokenizer.json's post-processor adds BOS
    assert result.prompt_tokens == len(prompt_ids)
    expected = load_pte(exported / "model.pte").greedy(prompt_ids, max_new_tokens=16)
    assert result.text == tok.decode(expected)


def test_onnx_folder_generates(exported):
    pytest.importorskip("onnxruntime_genai")
    from edge.generate import generate

    result = generate(exported / "onnx", PROMPT, max_new_tokens=12, on_text=lambda piece: None)
    assert result.runtime == "onnxruntime-genai"
    assert result.generated_tokens == 12 and result.text.strip()
    assert result.decode_tokens_per_s and result.decode_tokens_per_s > 0


def test_cli_streams_text_and_reports_speed(exported, tmp_path):
    out = tmp_path / "gen.json"
    cmd = [sys.executable, "-m", "edge.generate", str(exported), "--prompt", PROMPT, "--max-new-tokens", "8"]
    proc = subprocess.run([*cmd, "--json", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    record = json.loads(out.read_text())
    assert proc.stdout == record["text"] + "\n"
    assert record["generated_tokens"] == 8
    assert proc.stderr.strip().splitlines()[-1].startswith("ExecuTorch TextLLMRunner: prefill ")
    bad = subprocess.run([*cmd[:3], str(tmp_path / "nothing"), "--prompt", "x"], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1


def test_llama3_template_puts_the_user_turn_and_opens_the_assistants():
    text = render(LLAMA3_TEMPLATE, "Hi there ", bos_token="<|begin_of_text|>")
    assert text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_chat_is_the_default_where_the_export_carries_a_template(tmp_path):
    (tmp_path / "chat_template.jinja").write_text(SMOL_TEMPLATE)
    chat = build_prompt(tmp_path, {}, "Hi", chat=None, bos_text="<|endoftext|>")
    assert chat.chat and not chat.add_bos  # this template puts no BOS in front
    assert chat.text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    # SmolLM2's BOS is <|im_start|> itself: the runner adds that id, the text starts after it
    same = build_prompt(tmp_path, {}, "Hi", chat=None, bos_text="<|im_start|>")
    assert same.add_bos and "<|im_start|>" + same.text == chat.text
    raw = build_prompt(tmp_path, {}, "Hi", chat=False, bos_text="<|im_start|>")
    assert (raw.text, raw.add_bos, raw.chat) == ("Hi", True, False)


def test_llama3_template_for_meta_instruct_checkpoints_bos_left_to_the_runner(tmp_path):
    manifest = {"config": {"checkpoint": "/models/Llama-3.2-1B-Instruct"}}
    p = build_prompt(tmp_path, manifest, "Hi", chat=None, bos_text="<|begin_of_text|>")
    assert p.chat and p.add_bos and p.text.startswith("<|start_header_id|>user")
    base = build_prompt(tmp_path, {"config": {"checkpoint": "/models/Llama-3.2-1B"}}, "Hi", chat=None, bos_text=None)
    assert not base.chat


def test_bad_requests_are_one_error(exported):
    from edge.generate import generate

    with pytest.raises(EdgeError, match="empty"):
        generate(exported, "")
    with pytest.raises(EdgeError, match="at least 1"):
        generate(exported, "x", max_new_tokens=0)


def test_runner_bytes_split_inside_a_character_stream_whole_and_the_stats_line_is_dropped():
    from edge.generate.pte_runner import TextPump

    pieces = []
    pump = TextPump(pieces.append)
    emoji = "🙂".encode()
    for chunk in (b"Hi ", emoji[:2], emoji[2:], b" there\nPy", b"thon\n", b'\nPyTorchObserver {"a": 1}\n'):
        pump.feed(chunk)
    pump.feed(b"", final=True)
    assert "".join(pieces) == "Hi 🙂 there\nPython\n"
    assert "".join(pump.text) == "".join(pieces)
