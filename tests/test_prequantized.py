"""edge.checkpoint.prequantized: Meta's pre-quantized SpinQuant layout loads with its integers unchanged, runs
SpinQuant's online Hadamard, lowers to a .pte that keeps it, and every unsupported variant is refused."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from edge.checkpoint import load_model, open_checkpoint
from edge.checkpoint.prequantized import prequantized_group_size
from edge.core.errors import EdgeError
from edge.export.prequantized import load_prequantized_model, prequantized_report
from edge.model import OnlineHadamard
from edge.quant.scheme import sqnr_db
from tests.conftest import make_hf_checkpoint

torch.set_num_threads(1)

GROUP = 32
TOKENS = torch.tensor([[5, 17, 3, 250, 42, 99, 7, 8, 123, 64, 1, 200]])
# edge.model (HF) name -> Meta's name, per block.
META = {
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


def sylvester(n: int) -> torch.Tensor:
    """The orthonormal Sylvester-Hadamard matrix of order n (a power of two), built by hand."""
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < n:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(n)).float()


def quantize(w: torch.Tensor, *, bits: int, group: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Float [out, in] -> (int8 [out, in], float32 scales [out, in / group]), symmetric, as Meta's scheme."""
    qmax = 2 ** (bits - 1) - 1
    out, width = w.shape
    g = w.float().reshape(out, -1, group or width)
    scale = g.abs().amax(-1).clamp(min=1e-8) / qmax  # [out, groups]
    q = torch.round(g / scale[..., None]).clamp(-qmax - 1, qmax).to(torch.int8).reshape(out, width)
    return q, scale


def dequantize(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (q.float().reshape(q.shape[0], scale.shape[1], -1) * scale[..., None]).reshape(q.shape)


def to_meta_rope(w: torch.Tensor, heads: int) -> torch.Tensor:
    """HF's rope row layout -> Meta's (the inverse of edge.checkpoint.meta_to_hf_rope_layout)."""
    o, i = w.shape
    return w.view(heads, 2, o // heads // 2, i).transpose(1, 2).reshape(o, i)


def write_spinquant(hf: Path, out: Path, *, rotate: bool = True) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A tiny HF checkpoint -> Meta's SpinQuant_INT4_EO8 layout in `out`.

    R4 is folded into every w2 (w2 @ H, H symmetric and orthonormal) as SpinQuant does, block linears are
    quantized to int4 groups of 32, embedding and output to int8 per row; q/k (ints and scales) are moved
    to Meta's rope layout. Returns {edge.model module name: (ints, scales)} in HF's layout.
    """
    float_model = load_model(open_checkpoint(hf), max_context=32, dtype=torch.float32)
    args = float_model.args
    quantized: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    meta: dict[str, torch.Tensor] = {"norm.weight": float_model.norm.weight.detach().to(torch.bfloat16)}
    for name, module in float_model.named_modules():
        if isinstance(module, (nn.Linear, nn.Embedding)):
            w = module.weight.detach()
            if name.endswith("down_proj") and rotate:
                w = w @ sylvester(w.shape[1])
            per_row = name in ("embed_tokens", "lm_head")
            quantized[name] = quantize(w, bits=8 if per_row else 4, group=None if per_row else GROUP)
    for name, (q, s) in quantized.items():
        if name == "embed_tokens":
            meta |= {"tok_embeddings.weight": q, "tok_embeddings.scales": s.squeeze(1)}  # ExecuTorch squeezes: [rows]
        elif name == "lm_head":
            meta |= {"output.weight": q, "output.scales": s}  # llama-models: [rows, 1]
        else:
            layer, _, rest = name.removeprefix("layers.").partition(".")
            if rest.endswith(("q_proj", "k_proj")):
                heads = args.n_heads if rest.endswith("q_proj") else args.n_kv_heads
                q, s = to_meta_rope(q, heads), to_meta_rope(s, heads)
            meta |= {f"layers.{layer}.{META[rest]}.weight": q, f"layers.{layer}.{META[rest]}.scales": s}
    for i, block in enumerate(float_model.layers):
        for norm in ("input_layernorm", "post_attention_layernorm"):
            meta[f"layers.{i}.{META[norm]}.weight"] = getattr(block, norm).weight.detach().to(torch.bfloat16)
    out.mkdir(parents=True)
    torch.save(meta, out / "consolidated.00.pth")
    # Meta's FFN rule: int(2*4*64/3)=170 -> int(0.75*170)=127 -> multiple of 128 = 128 (a power of two, as R4 needs).
    params = {
        "dim": args.dim,
        "n_layers": args.n_layers,
        "n_heads": args.n_heads,
        "n_kv_heads": args.n_kv_heads,
        "vocab_size": args.vocab_size,
        "ffn_dim_multiplier": 0.75,
        "multiple_of": 128,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
        "quantization_args": {
            "group_size": GROUP,
            "scheme": "int4_weight_int8_dynamic_activation",
            "spinquant": rotate,
        },
    }
    (out / "params.json").write_text(json.dumps(params))
    shutil.copyfile(hf / "tokenizer.json", out / "tokenizer.json")
    return quantized


@pytest.fixture(scope="module")
def spinquant(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(HF float checkpoint, its SpinQuant version, the integers and scales written); read-only."""
    root = tmp_path_factory.mktemp("spinquant")
    hf = make_hf_checkpoint(root / "hf", tie=False, seed=1)
    return hf, root / "sq", write_spinquant(hf, root / "sq")


def _edit(src: Path, dst: Path, *, params=None, tensors=None) -> Path:
    """Copy a checkpoint folder, changing params.json and/or the state dict."""
    shutil.copytree(src, dst)
    if params:
        p = json.loads((dst / "params.json").read_text())
        (dst / "params.json").write_text(json.dumps(params(p) or p))
    if tensors:
        sd = torch.load(dst / "consolidated.00.pth")
        tensors(sd)
        torch.save(sd, dst / "consolidated.00.pth")
    return dst


def _load(folder: Path, **kw):
    return load_prequantized_model(open_checkpoint(folder), max_context=32, **kw)


# --- what loads ---------------------------------------------------------------------------


def test_open_checkpoint_reads_the_group_size_and_load_model_refuses(spinquant):
    _, sq, _ = spinquant
    ckpt = open_checkpoint(sq)
    assert ckpt.prequantized_group_size == GROUP and ckpt.args.hidden_dim == 128
    with pytest.raises(EdgeError, match="load_prequantized_model"):
        load_model(ckpt, max_context=32, dtype=torch.float32)


def test_integers_and_scales_are_the_checkpoints_bit_for_bit(spinquant):
    _, sq, written = spinquant
    model = _load(sq)
    n_int4 = 0
    for name, (q, s) in written.items():
        w = model.get_submodule(name).weight
        assert w.qdata.dtype == torch.int8 and torch.equal(w.qdata, q), name  # q/k: after the rope row permutation
        assert w.scale.dtype == torch.float32 and torch.equal(w.scale, s), name
        assert torch.count_nonzero(w.zero_point) == 0, name
        int4 = s.shape[1] > 1
        assert w.target_dtype == (torch.int4 if int4 else torch.int8), name
        assert w.block_size == (1, GROUP if int4 else q.shape[1]), name
        assert (w.activation_quantization is None) == (name == "embed_tokens"), name  # 8-bit dynamic for linears
        n_int4 += int4
    assert n_int4 == 7 * model.args.n_layers
    # Meta's q rows really are in another order: without the permutation the integers would differ.
    raw = torch.load(sq / "consolidated.00.pth", mmap=True)
    assert not torch.equal(raw["layers.0.attention.wq.weight"], written["layers.0.self_attn.q_proj"][0])


def test_online_hadamard_on_every_down_proj_and_float32_elsewhere(spinquant):
    model = _load(spinquant[1])
    assert all(isinstance(b.mlp.down_proj_input, OnlineHadamard) for b in model.layers)
    assert all(b.mlp.down_proj_input.path is model.attention_path for b in model.layers)
    assert all(p.dtype == torch.float32 for n, p in model.named_parameters() if "norm" in n)
    assert all(b.dtype == torch.float32 for b in model.buffers())


def _reference(hf: Path, written: dict, *, hadamard: bool) -> torch.Tensor:
    """transformers' Llama with the dequantized weights (int * scale), R4 as an explicit matmul, float activations."""
    from transformers import LlamaForCausalLM

    ref = LlamaForCausalLM.from_pretrained(hf, torch_dtype=torch.float32).eval()
    with torch.no_grad():
        for name, (q, s) in written.items():
            target = "lm_head" if name == "lm_head" else f"model.{name}"
            ref.get_submodule(target).weight.copy_(dequantize(q, s))
        if hadamard:
            for layer in ref.model.layers:
                h = sylvester(layer.mlp.down_proj.in_features)
                layer.mlp.down_proj = nn.Sequential(_Matmul(h), layer.mlp.down_proj)
        return ref(TOKENS).logits


class _Matmul(nn.Module):
    def __init__(self, m: torch.Tensor) -> None:
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.m


def test_forward_equals_dequantized_float_reference_with_hadamard(spinquant):
    hf, sq, written = spinquant
    with torch.no_grad():
        got = _load(sq, full_logits=True)(TOKENS, torch.tensor([0]))
    good = sqnr_db(_reference(hf, written, hadamard=True)[0], got[0])
    bad = sqnr_db(_reference(hf, written, hadamard=False)[0], got[0])
    # Only 8-bit dynamic activation quantization separates the two: ~35-40 dB; without R4 it is noise.
    assert good > 30, good
    assert bad < 10, bad


def test_report_states_the_checkpoints_scheme(spinquant):
    scheme = prequantized_report(open_checkpoint(spinquant[1])).scheme
    assert scheme["transformer_block_linears"].startswith(f"pre-quantized by the checkpoint (int4 groups of {GROUP})")
    assert "int8" in scheme["output_layer"] and "per channel" in scheme["output_layer"]
    assert "int8" in scheme["embedding"] and "fast_hadamard_transform" in scheme["down_proj_input"]


def test_zero_points_all_zero_are_accepted(spinquant, tmp_path):
    def add_zeros(sd):
        sd["layers.0.attention.wq.zeros"] = torch.zeros_like(sd["layers.0.attention.wq.scales"])

    model = _load(_edit(spinquant[1], tmp_path / "z", tensors=add_zeros))
    assert torch.equal(model.layers[0].self_attn.q_proj.weight.qdata, spinquant[2]["layers.0.self_attn.q_proj"][0])


# --- what is refused ----------------------------------------------------------------------


def test_missing_scales_named(spinquant, tmp_path):
    folder = _edit(spinquant[1], tmp_path / "c", tensors=lambda sd: sd.pop("layers.1.feed_forward.w2.scales"))
    with pytest.raises(EdgeError, match=r"tensor layers\.1\.mlp\.down_proj\.scales missing from the checkpoint"):
        open_checkpoint(folder)


def test_lora_args_without_adapters_refused(spinquant, tmp_path):
    folder = _edit(spinquant[1], tmp_path / "c", params=lambda p: p | {"lora_args": {"rank": 16, "scale": 2.0}})
    with pytest.raises(EdgeError, match="lora_args but the checkpoint holds no .adaptor. tensors"):
        _load(folder)


def test_int4_values_out_of_range_named(spinquant, tmp_path):
    def poke(sd):
        sd["layers.0.feed_forward.w1.weight"][3, 5] = 9

    folder = _edit(spinquant[1], tmp_path / "c", tensors=poke)
    with pytest.raises(EdgeError, match=r"layers\.0\.mlp\.gate_proj\.weight: .*outside \[-8, 7\]"):
        _load(folder)


def test_non_zero_zero_points_refused(spinquant, tmp_path):
    def add_zeros(sd):
        sd["output.zeros"] = torch.ones_like(sd["output.scales"])

    with pytest.raises(EdgeError, match=r"output\.zeros holds non-zero zero points"):
        _load(_edit(spinquant[1], tmp_path / "c", tensors=add_zeros))


def test_scales_of_the_wrong_shape(spinquant, tmp_path):
    def regroup(sd):
        sd["layers.0.attention.wv.scales"] = sd["layers.0.attention.wv.scales"][:, :1]  # as if per channel

    with pytest.raises(
        EdgeError, match=r"v_proj\.scales has shape \[32, 1\] but the checkpoint's config implies \[32, 2\]"
    ):
        open_checkpoint(_edit(spinquant[1], tmp_path / "c", tensors=regroup))


BASE = {
    "dim": 64,
    "n_layers": 1,
    "n_heads": 4,
    "n_kv_heads": 2,
    "vocab_size": 300,
    "ffn_dim_multiplier": 0.75,
    "multiple_of": 128,
}


@pytest.mark.parametrize(
    "change, message",
    [
        ({"quantization_args": {"group_size": 48}}, "48 is not a power of two"),
        ({"quantization_args": {"group_size": 128}}, "group_size 128 does not divide the model width 64"),
        ({"quantization_args": {"group_size": 32, "scheme": "fp8_mixed"}}, "scheme 'fp8_mixed' is not supported"),
        ({"quantization_args": {"group_size": 32}, "multiple_of": 96}, "FFN width 192 is not 2\\^k or 28\\*2\\^k"),
        ({"quantization_args": {"group_size": 32}, "lora_args": {"rank": 0, "scale": 2.0}}, "lora_args.rank 0"),
        ({"quantization_args": {"group_size": 32}, "lora_args": {"rank": 16}}, "lora_args.scale None"),
    ],
)
def test_unsupported_params(change, message):
    with pytest.raises(EdgeError, match=message):
        prequantized_group_size(BASE | change)


def test_float_params_are_not_prequantized():
    assert prequantized_group_size(BASE) is None and prequantized_group_size(BASE | {"quantization_args": None}) is None
    assert prequantized_group_size(BASE | {"quantization_args": {"group_size": 64}}) == 64


# --- lowered ------------------------------------------------------------------------------


def test_pte_keeps_the_hadamard_and_matches_eager(spinquant, tmp_path):
    import executorch.kernels.quantized  # noqa: F401
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401

    from edge.evaluate.pte_model import load_pte
    from edge.export.lower import RunnerMetadata, export_program, lower_program, write_pte

    ckpt = open_checkpoint(spinquant[1])
    eager = load_prequantized_model(ckpt, max_context=32)
    meta = RunnerMetadata(
        max_seq_len=32,
        max_context_len=32,
        vocab_size=ckpt.args.vocab_size,
        n_layers=ckpt.args.n_layers,
        bos_id=ckpt.bos_id,
        eos_ids=ckpt.eos_ids,
    )
    program = lower_program(export_program(eager), meta)
    plan = program.executorch_program.execution_plan[0]
    names = [f"{op.name}.{op.overload}" for op in plan.operators]
    calls = [
        names[i.instr_args.op_index]
        for chain in plan.chains
        for i in chain.instructions
        if hasattr(i.instr_args, "op_index")
    ]
    assert sum(n.startswith("llama::fast_hadamard_transform") for n in calls) == ckpt.args.n_layers
    write_pte(program, tmp_path / "model.pte")
    pte = load_pte(tmp_path / "model.pte")
    eager.reset_cache()
    with torch.no_grad():
        ref = [eager(TOKENS[:, :8], torch.tensor([0]))] + [
            eager(TOKENS[:, i : i + 1], torch.tensor([i])) for i in range(8, 12)
        ]
    got = [pte.forward(TOKENS[:, :8], 0)] + [pte.forward(TOKENS[:, i : i + 1], i) for i in range(8, 12)]
    assert sqnr_db(torch.cat(ref), torch.cat(got)) > 30


def test_edge_export_ships_it_as_it_is(spinquant, tmp_path, capsys):
    """The CLI with the SpinQuant config: no calibration asked for, nothing re-quantized, the runner generates."""
    import executorch.kernels.quantized  # noqa: F401  (embedding_byte: the runner loads the program itself)
    from executorch.extension.llm.custom_ops import custom_ops  # noqa: F401
    from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

    from edge.export.__main__ import main

    out = tmp_path / "o"
    assert (
        main(
            [
                "llama3_2_1b_spinquant",
                "--checkpoint",
                str(spinquant[1]),
                "--output",
                str(out),
                "--max-context",
                "64",
                "--quiet",
            ]
        )
        == 0
    )
    m = json.loads((out / "manifest.json").read_text())
    assert m["quantization"]["spinquant"]["weight_rounding"] == "pre-quantized by the checkpoint"
    assert "rotations.safetensors" not in {p.name for p in out.iterdir()}
    stats = []
    TextLLMRunner(str(out / "model.pte"), str(out / "tokenizer.json")).generate(
        "The quick brown fox",
        GenerationConfig(max_new_tokens=8, temperature=0.0, echo=False),
        stats_callback=stats.append,
    )
    assert 1 <= json.loads(stats[0].to_json_string())["generated_tokens"] <= 8
    _assert_pte_holds_the_checkpoints_integers(out / "model.pte", spinquant[2])


def _assert_pte_holds_the_checkpoints_integers(pte: Path, written: dict) -> None:
    """The .pte's XNNPACK blobs hold the checkpoint's int4 integers bit for bit, each block linear once, with its
    scales as XNNPACK stores int4 group scales: rounded to bf16 (Meta's are fp32; a relative change of at most 2^-8).
    The int8 output layer keeps its integers and fp32 scales exactly."""
    from tests.xnnpack_blob import claim, quantized_int8_weights, quantized_weights

    got = quantized_weights(pte)
    int4 = {name: qs for name, qs in written.items() if qs[1].shape[-1] > 1}
    assert len(got) == len(int4)
    for name, (q, s) in int4.items():
        w = claim(got, q, name=name)
        assert torch.equal(w.scale, s.float().bfloat16().float()), name
        assert float(((w.scale - s) / s).abs().max()) <= 2**-8, name  # half a bf16 ulp (7 mantissa bits)
    (head,) = quantized_int8_weights(pte)
    q, s = written["lm_head"]
    assert torch.equal(head.qdata, q) and torch.equal(head.scale, s.float().reshape(-1))
