"""formats: [pte, onnx, gguf] on the shipped fixture: the same weights in all three, and what each computes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edge.checkpoint import FIXTURE_CHECKPOINT

pytest.importorskip("onnxruntime")
pytest.importorskip("gguf")


def _onnx_weights(folder):
    """model.onnx -> {linear name: dequantized [N, K] float32}, decoding MatMulNBits codes and scales by hand."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(folder / "model.onnx"), load_external_data=True)
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMulNBits":
            continue
        attrs = {a.name: a.i for a in node.attribute}
        codes, scales = inits[node.input[1]], inits[node.input[2]]
        if attrs["bits"] == 4:  # low nibble first
            codes = np.stack([codes & 0xF, codes >> 4], axis=-1).reshape(codes.shape[0], codes.shape[1], -1)
        assert node.input[3:] == [] or node.input[3] == ""  # no zero points: the implied 2^(bits-1)
        values = codes.astype(np.int16) - (1 << (attrs["bits"] - 1))
        out[node.name] = (values * scales[..., None]).reshape(attrs["N"], attrs["K"]).astype(np.float32)
        assert attrs["accuracy_level"] == 4 and attrs["block_size"] == 32
    table = inits["embed_tokens.weight"]
    assert table.dtype == np.int8  # an int8 gather, not a float embedding
    out["embed_tokens"] = table.astype(np.float32) * inits["embed_tokens.scales"]
    return out


def _gguf_weights(path, args):
    """model.gguf -> {our name: dequantized [N, K]}, q/k rows put back in Hugging Face order."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    t = {x.name: x for x in reader.tensors}

    def deq(name):
        x = t[name]
        return gguf.quants.dequantize(x.data, x.tensor_type)

    def unpermute(w, n_head):
        return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)

    names = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
    }
    out = {"lm_head": deq("output.weight"), "embed_tokens": deq("token_embd.weight")}
    kinds = {
        "output.weight": t["output.weight"].tensor_type.name,
        "blk.0.attn_q.weight": t["blk.0.attn_q.weight"].tensor_type.name,
        "token_embd.weight": t["token_embd.weight"].tensor_type.name,
    }
    for i in range(args.n_layers):
        for ours, theirs in names.items():
            w = deq(f"blk.{i}.{theirs}.weight")
            if theirs in ("attn_q", "attn_k"):
                w = unpermute(w, args.n_heads if theirs == "attn_q" else args.n_kv_heads)
            out[f"layers.{i}.{ours}"] = w
    return out, kinds, reader


def test_the_three_files_hold_the_same_weights(exported, eager):
    out, result = exported
    ckpt, model = eager
    onnx_w = _onnx_weights(out / "onnx")
    gguf_w, kinds, _ = _gguf_weights(out / "model.gguf", ckpt.args)
    assert kinds == {"output.weight": "Q8_0", "blk.0.attn_q.weight": "Q4_0", "token_embd.weight": "Q8_0"}
    modules = {"lm_head": model.lm_head, "embed_tokens": model.embed_tokens}
    for i, layer in enumerate(model.layers):
        for name in (
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ):
            modules[f"layers.{i}.{name}"] = layer.get_submodule(name)
    assert len(modules) == 2 + 7 * ckpt.args.n_layers
    for name, module in modules.items():
        # What the .pte was lowered from: torchao's tensor, scales bf16-exact as XNNPACK stores group scales.
        ref = module.weight.dequantize().float().numpy()
        np.testing.assert_array_equal(onnx_w[name].reshape(ref.shape), ref, err_msg=f"onnx {name}")
        if module.weight.scale.shape[1] > 1:  # int4 groups: bf16-exact scales, which Q4_0's fp16 holds exactly
            assert np.array_equal(
                torch.from_numpy(module.weight.scale.numpy()).bfloat16().float().numpy(), module.weight.scale.numpy()
            )
            np.testing.assert_array_equal(gguf_w[name].reshape(ref.shape), ref, err_msg=f"gguf {name}")
        else:  # per-channel int8: fp32 row scales in the .pte and ONNX, fp16 in Q8_0 blocks (the format's own)
            np.testing.assert_allclose(
                gguf_w[name].reshape(ref.shape), ref, rtol=2**-11, atol=0, err_msg=f"gguf {name}"
            )
            assert not np.array_equal(gguf_w[name].reshape(ref.shape), ref)  # the rounding is real, and bounded
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["formats"] == ["pte", "onnx", "gguf"]
    assert {"model.pte", "model.gguf", "onnx/model.onnx", "onnx/model.onnx.data", "onnx/genai_config.json"} <= set(
        manifest["size_bytes"]["files"]
    )
    assert set(manifest["sha256"]["output"]) >= set(manifest["size_bytes"]["files"])
    assert result.files["model.gguf"] == (out / "model.gguf").stat().st_size


def _sqnr(ref: torch.Tensor, got: torch.Tensor) -> float:
    return float(10 * torch.log10(ref.pow(2).sum() / (ref - got).pow(2).sum()))


def test_onnx_runtime_logits_match_the_eager_model_and_the_pte(exported, eager, window):
    from edge.evaluate.onnx_model import load_onnx
    from edge.evaluate.pte_model import load_pte

    out, _ = exported
    _, model = eager
    tokens = torch.tensor([window])
    with torch.no_grad():
        ref = model(tokens, torch.tensor([0]))[0]
    pte = load_pte(out / "model.pte")
    pte_logits = torch.stack([pte.forward(tokens[:, i : i + 1], i).reshape(-1) for i in range(tokens.shape[1])])
    ort_logits = load_onnx(out / "onnx").forward(tokens, 0)[0]
    # Both quantize activations to 8 bits, per token (XNNPACK, asymmetric) or per block of 32 (MLAS, symmetric):
    # measured 34.7 dB .pte vs eager, 33.3 dB ONNX Runtime vs eager, 33.9 dB ONNX Runtime vs .pte on this window.
    assert _sqnr(ref, pte_logits) > 33
    assert _sqnr(ref, ort_logits) > 30
    assert _sqnr(pte_logits, ort_logits) > 30
    assert (ort_logits.argmax(-1) == pte_logits.argmax(-1)).float().mean() > 0.94  # measured 98.4%


def test_greedy_tokens_agree_in_executorch_onnxruntime_and_genai(exported, window):
    import onnxruntime_genai as og

    from edge.evaluate.onnx_model import load_onnx
    from edge.evaluate.pte_model import load_pte

    out, _ = exported
    prompt, n = window[:20], 32
    pte_tokens = load_pte(out / "model.pte").greedy(prompt, max_new_tokens=n)
    ort_tokens = load_onnx(out / "onnx").greedy(prompt, max_new_tokens=n)
    model = og.Model(str(out / "onnx"))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(prompt)
    genai_tokens: list[int] = []
    while not gen.is_done() and len(genai_tokens) < n:
        gen.generate_next_token()
        genai_tokens.append(int(gen.get_next_tokens()[0]))
    assert pte_tokens == ort_tokens == genai_tokens
    assert len(set(pte_tokens)) > 3  # not a degenerate repeat of one token


def test_evaluate_scores_the_onnx_model_like_the_pte(exported):
    from edge.evaluate import evaluate

    out, _ = exported
    kw = dict(reference=FIXTURE_CHECKPOINT, text_path=FIXTURE_CHECKPOINT / "heldout.txt", context=128, max_windows=4)
    pte = evaluate(pte_path=out / "model.pte", **kw)
    ort = evaluate(pte_path=out / "onnx", **kw)
    assert ort.predicted_tokens == pte.predicted_tokens == 4 * 127
    assert ort.reference_perplexity == pytest.approx(pte.reference_perplexity, rel=1e-6)
    assert 0.85 < ort.top1_agreement <= 1 and abs(ort.top1_agreement - pte.top1_agreement) < 0.03
    assert ort.mean_kl == pytest.approx(pte.mean_kl, rel=0.25)
    assert ort.mean_kl > 1e-4  # quantized: not a float model by mistake


def test_gguf_metadata_and_vocabulary(exported, eager):
    import gguf

    out, _ = exported
    ckpt, _ = eager
    reader = gguf.GGUFReader(str(out / "model.gguf"))

    def field(name):
        f = reader.fields[name]
        return f.contents()

    a = ckpt.args
    assert field("general.architecture") == "llama"
    assert field("llama.block_count") == a.n_layers and field("llama.embedding_length") == a.dim
    assert field("llama.attention.head_count") == a.n_heads and field("llama.attention.head_count_kv") == a.n_kv_heads
    assert field("llama.feed_forward_length") == a.hidden_dim and field("llama.context_length") == 256
    tokens = field("tokenizer.ggml.tokens")
    assert len(tokens) == a.vocab_size and field("tokenizer.ggml.bos_token_id") == ckpt.bos_id
    vocab = json.loads((FIXTURE_CHECKPOINT / "tokenizer.json").read_text())["model"]["vocab"]
    assert all(tokens[i] == t for t, i in list(vocab.items())[:500])
    freqs = {x.name: x for x in reader.tensors}["rope_freqs.weight"].data
    assert (
        freqs.shape == (a.head_dim // 2,)
        and freqs.min() == pytest.approx(1.0)
        and freqs.max() == pytest.approx(a.rope_scaling.factor)
    )
