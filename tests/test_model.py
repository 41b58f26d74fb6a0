"""edge.model against transformers' LlamaForCausalLM (an independent implementation), eagerly."""

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
