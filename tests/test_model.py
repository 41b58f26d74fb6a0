"""edge.model against transformers' LlamaForCausalLM (an independent implementation), eagerly."""

import pytest
import torch
from transformers import LlamaForCausalLM

from edge.checkpoint import load_model, open_checkpoint
from edge.model import rope_inverse_frequencies


def test_rope_llama3_scaling_matches_transformers(tiny_hf):
    hf = LlamaForCausalLM.from_pretrained(tiny_hf)
    ours = rope_inverse_frequencies(open_checkpoint(tiny_hf).args)
    torch.testing.assert_close(ours, hf.model.rotary_emb.inv_freq.float(), rtol=0, atol=0)


def test_eager_prefill_and_decode_match_transformers(tiny_hf):
    hf = LlamaForCausalLM.from_pretrained(tiny_hf).eval()
    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=torch.float32, full_logits=True)
    tokens = torch.randint(0, hf.config.vocab_size, (1, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = hf(tokens).logits
        prefill = model(tokens[:, :16], torch.tensor([0]))
        torch.testing.assert_close(prefill, ref[:, :16], rtol=0, atol=1e-5)
        for i in range(16, 24):  # decode one token at a time through the KV cache
            step = model(tokens[:, i : i + 1], torch.tensor([i]))
            torch.testing.assert_close(step[:, -1], ref[:, i], rtol=0, atol=1e-5)


def test_last_token_logits_only_by_default(tiny_hf):
    model = load_model(open_checkpoint(tiny_hf), max_context=32, dtype=torch.float32)
    with torch.no_grad():
        out = model(torch.tensor([[3, 4, 5]]), torch.tensor([0]))
    assert out.shape == (1, model.args.vocab_size)


def test_online_hadamard_hook_with_folded_weight_preserves_outputs(tiny_hf):
    """SpinQuant's R4 slots in without touching the model code: swap down_proj_input, fold H^T."""
    from edge.model import OnlineHadamard

    model = load_model(open_checkpoint(tiny_hf), max_context=32, dtype=torch.float32, full_logits=True)
    tokens = torch.arange(3, 15)[None]
    with torch.no_grad():
        before = model(tokens, torch.tensor([0]))
        for block in model.layers:
            f = block.mlp.down_proj.in_features
            h = OnlineHadamard()(torch.eye(f))  # rows of H
            block.mlp.down_proj_input = OnlineHadamard()
            block.mlp.down_proj.weight.copy_(block.mlp.down_proj.weight @ h.T)
        after = model(tokens, torch.tensor([0]))
    torch.testing.assert_close(after, before, rtol=0, atol=1e-4)


def test_sequence_path_matches_transformers_and_the_cache_path(tiny_hf):
    """The differentiable SEQUENCE path: same parameters, same logits as transformers and as KV_CACHE."""
    from edge.model import AttentionPath

    hf = LlamaForCausalLM.from_pretrained(tiny_hf).eval()
    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=torch.float32, full_logits=True)
    tokens = torch.randint(0, hf.config.vocab_size, (3, 24), generator=torch.Generator().manual_seed(4))
    names = [n for n, _ in model.named_parameters()]
    with torch.no_grad():
        ref = hf(tokens).logits
        cached = torch.cat([model(tokens[b : b + 1], torch.tensor([0])) for b in range(3)])
        model.set_attention_path(AttentionPath.SEQUENCE)
        seq = model(tokens)  # batch of 3, no cache
    assert [n for n, _ in model.named_parameters()] == names
    torch.testing.assert_close(seq, ref, rtol=0, atol=1e-5)
    torch.testing.assert_close(seq, cached, rtol=0, atol=1e-5)


def test_sequence_path_trains(tiny_hf):
    """Gradients reach every parameter on the SEQUENCE path, and a few SGD steps lower the loss."""
    from edge.model import AttentionPath

    model = load_model(open_checkpoint(tiny_hf), max_context=64, dtype=torch.float32, full_logits=True)
    model.set_attention_path(AttentionPath.SEQUENCE)
    model.requires_grad_(True).train()
    tokens = torch.randint(0, model.args.vocab_size, (2, 32), generator=torch.Generator().manual_seed(5))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    losses = []
    for _ in range(5):
        logits = model(tokens)
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1)
        )
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("width", [64, 512, 28 * 4])
def test_torch_hadamard_equals_executorch_op(width):
    """hadamard_transform (differentiable, any device) computes the op's exact matrix, 2^k and 28 * 2^k."""
    from edge.model import hadamard_transform

    x = torch.randn(5, width, dtype=torch.float64, generator=torch.Generator().manual_seed(width))
    torch.testing.assert_close(hadamard_transform(x), torch.ops.llama.fast_hadamard_transform(x), rtol=0, atol=1e-12)


def test_sequence_path_runs_without_executorch_and_the_cache_path_says_why(tmp_path):
    """A machine where ExecuTorch cannot load (a CUDA box with another torch) still trains and calibrates."""
    import subprocess
    import sys

    code = """
import sys
sys.modules["executorch"] = None  # any import of executorch now raises ImportError
import torch
from edge.model import AttentionPath, ModelArgs, Transformer, EXECUTORCH_OPS_ERROR
assert EXECUTORCH_OPS_ERROR is not None and "executorch" in EXECUTORCH_OPS_ERROR, EXECUTORCH_OPS_ERROR
args = ModelArgs(dim=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, hidden_dim=128, vocab_size=97,
                 norm_eps=1e-5, rope_theta=10000.0, rope_scaling=None, max_position_embeddings=64,
                 tie_word_embeddings=True)
torch.manual_seed(0)
m = Transformer(args, max_context=16, full_logits=True)
tokens = torch.randint(0, 97, (2, 8))
m.set_attention_path(AttentionPath.SEQUENCE)
logits = m(tokens)
logits.float().logsumexp(-1).mean().backward()
assert logits.shape == (2, 8, 97) and bool(torch.isfinite(logits).all())
assert m.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
m.set_attention_path(AttentionPath.KV_CACHE)
try:
    m(tokens[:1])
except RuntimeError as e:
    assert "ExecuTorch's llama ops" in str(e), e
    print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
