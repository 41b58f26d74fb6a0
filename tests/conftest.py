"""Shared fixtures: tiny Llama checkpoints and tokenizers made in the test, never downloaded."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import pytest
import torch

from edge.fixture.recipe import LLAMA32_ROPE

# The two files that take ten minutes and more each (a fine-tune and real-model exports) are collected first, so
# the two test workers (pytest-xdist, one file at a time, in collection order: `--no-loadscope-reorder`) start
# one each and share out the short files after.
LONGEST_FILES = ("tests/evaluate/test_fixture_quality.py", "tests/test_real_model_quality.py")


def pytest_collection_modifyitems(items) -> None:
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FILES)  # stable: the rest keep order


warnings.filterwarnings("ignore", category=FutureWarning)
logging.getLogger("torchao").setLevel(logging.ERROR)

TEXT = (
    "The quick brown fox jumps over the lazy dog. A phone runs a small language model on its CPU. "
    "Quantization makes weights smaller: four bits per weight in groups of thirty-two. "
    "The runner reads the program, loads the tokenizer and generates text one token at a time. "
) * 20

SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]


def make_tokenizer(path: Path, *, vocab_size: int = 320) -> int:
    """Train a byte-level BPE on TEXT and save it as tokenizer.json; returns its vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([TEXT], trainer=trainer)
    tok.save(str(path))
    return tok.get_vocab_size()


def make_hf_checkpoint(
    folder: Path,
    *,
    seed: int = 0,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    ffn: int = 128,
    vocab: int | None = None,
    tie: bool = True,
    max_positions: int = 16384,
    shard: bool = False,
) -> Path:
    """Write a tiny random LlamaForCausalLM (llama3 rope scaling, GQA) plus a trained tokenizer.json."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    tok_vocab = make_tokenizer(folder / "tokenizer.json")
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=ffn,
        vocab_size=vocab or tok_vocab,
        max_position_embeddings=max_positions,
        rms_norm_eps=1e-5,
        rope_parameters=dict(LLAMA32_ROPE),
        tie_word_embeddings=tie,
        bos_token_id=0,
        eos_token_id=1,
    )
    model = LlamaForCausalLM(config)
    # Larger-than-default init so logits are far from uniform and greedy decoding is decisive.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.1)
    model.save_pretrained(folder, max_shard_size="100KB" if shard else "10GB")
    return folder


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory) -> Path:
    """A tiny tied HF checkpoint with a tokenizer (session-wide; treat as read-only)."""
    return make_hf_checkpoint(tmp_path_factory.mktemp("tiny_hf") / "ckpt")


def load_benchmark(path: Path):
    """A script under benchmarks/ -> it, imported as a module, with benchmarks/ on sys.path while it loads (as
    `python benchmarks/x.py` has it, for `from common import ...`)."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    folder = str(Path(__file__).resolve().parent.parent / "benchmarks")
    sys.path.insert(0, folder)
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(folder)
    return module


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())


MAX_CONTEXT = 128


def export_tiny(ckpt: Path, out: Path, config: str, **overrides) -> Path:
    """Export `ckpt` with a shipped config (context MAX_CONTEXT unless overridden) -> the output folder."""
    from edge.config import load_config
    from edge.core.progress import Progress
    from edge.export.pipeline import run_export

    cfg = load_config(
        config=config, overrides={"checkpoint": str(ckpt), "output": str(out), "max_context": MAX_CONTEXT, **overrides}
    )
    run_export(cfg, progress=Progress(quiet=True))
    return out


@pytest.fixture(scope="session")
def fp32_export(tiny_hf, tmp_path_factory) -> Path:
    """tiny_hf exported unquantized in fp32, with logits for every position."""
    return export_tiny(
        tiny_hf, tmp_path_factory.mktemp("fp32") / "out", "llama3_2_1b_bf16", dtype="fp32", full_logits=True
    )


@pytest.fixture(scope="session")
def q_export(tiny_hf, tmp_path_factory) -> Path:
    """tiny_hf exported with Meta's 8da4w scheme exactly as the shipped config says (last-position logits)."""
    return export_tiny(tiny_hf, tmp_path_factory.mktemp("q") / "out", "llama3_2_1b_8da4w")


def assert_pte_matches_transformers(ckpt: Path, pte_path: Path, *, atol: float = 1e-4) -> None:
    """The .pte (full logits) against transformers' LlamaForCausalLM on `ckpt`: 24-token prefill, then 16 decode
    steps."""
    from transformers import LlamaForCausalLM

    from edge.evaluate.pte_model import load_pte

    hf = LlamaForCausalLM.from_pretrained(ckpt).eval()
    pte = load_pte(pte_path)
    tokens = torch.randint(0, hf.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = hf(tokens).logits
    torch.testing.assert_close(pte.forward(tokens[:, :24], 0), ref[:, :24], rtol=0, atol=atol)  # [1, 24, V]
    for i in range(24, 40):
        torch.testing.assert_close(pte.forward(tokens[:, i : i + 1], i)[:, -1], ref[:, i], rtol=0, atol=atol)


def assert_runner_generates(folder: Path, *, max_new_tokens: int = 8) -> None:
    """ExecuTorch's TextLLMRunner (the C++ runner, through the wheel) generates from folder/model.pte."""
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from edge.evaluate.pte_model import load_kernels

    load_kernels()  # the runner needs the quantized and LLM kernels registered in this process
    stats = []
    TextLLMRunner(str(folder / "model.pte"), str(folder / "tokenizer.json")).generate(
        "The quick brown fox",
        GenerationConfig(max_new_tokens=max_new_tokens, temperature=0.0, echo=False),
        stats_callback=stats.append,
    )
    assert 1 <= json.loads(stats[0].to_json_string())["generated_tokens"] <= max_new_tokens
