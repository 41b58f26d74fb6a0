"""edge.checkpoint: both layouts users have, and every way a checkpoint can be bad."""

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from edge.checkpoint import CheckpointFormat, load_model, open_checkpoint
from edge.core.errors import EdgeError
from tests.conftest import make_hf_checkpoint


def _logits(folder):
    model = load_model(open_checkpoint(folder), max_context=32, dtype=torch.float32, full_logits=True)
    with torch.no_grad():
        return model(torch.arange(2, 14)[None], torch.tensor([0]))


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_hf_reads_shape_and_ids_from_config(tiny_hf):
    ckpt = open_checkpoint(tiny_hf)
    assert ckpt.format is CheckpointFormat.HF
    cfg = json.loads((tiny_hf / "config.json").read_text())
    a = ckpt.args
    assert (a.dim, a.n_layers, a.n_heads, a.n_kv_heads, a.hidden_dim, a.vocab_size) == (
        cfg["hidden_size"],
        cfg["num_hidden_layers"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["intermediate_size"],
        cfg["vocab_size"],
    )
    assert a.tie_word_embeddings and a.rope_scaling.factor == 32.0
    assert ckpt.tokenizer.name == "tokenizer.json" and ckpt.bos_id == 0 and ckpt.eos_ids == (1,)


def test_sharded_equals_unsharded(tmp_path):
    one = make_hf_checkpoint(tmp_path / "one", seed=3)
    many = make_hf_checkpoint(tmp_path / "many", seed=3, shard=True)
    assert len(open_checkpoint(many).weight_files) > 1 and (many / "model.safetensors.index.json").exists()
    torch.testing.assert_close(_logits(one), _logits(many), rtol=0, atol=0)


def test_untied_checkpoint(tmp_path):
    ckpt = make_hf_checkpoint(tmp_path / "untied", tie=False)
    model = load_model(open_checkpoint(ckpt), max_context=16, dtype=torch.float32)
    assert model.lm_head.weight is not model.embed_tokens.weight
    assert not torch.equal(model.lm_head.weight, model.embed_tokens.weight)


def _write_meta(hf_folder, out):
    """HF checkpoint -> Meta's layout (params.json, consolidated.00.pth with interleaved rope rows)."""
    cfg = json.loads((hf_folder / "config.json").read_text())
    sd = load_file(hf_folder / "model.safetensors")
    d, h, kvh = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]

    def to_meta(w, heads):  # inverse of transformers' permute
        o, i = w.shape
        return w.view(heads, 2, o // heads // 2, i).transpose(1, 2).reshape(o, i)

    names = {
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
    meta = {}
    for k, v in sd.items():
        k = k.removeprefix("model.").replace("embed_tokens", "tok_embeddings")
        for a, b in names.items():
            k = k.replace(a, b)
        if k.endswith("wq.weight"):
            v = to_meta(v, h)
        if k.endswith("wk.weight"):
            v = to_meta(v, kvh)
        meta[k] = v
    meta["output.weight"] = meta["tok_embeddings.weight"].clone()
    out.mkdir()
    torch.save(meta, out / "consolidated.00.pth")
    # ffn: int(2*4*64/3)=170 -> int(0.75*170)=127 -> rounded up to a multiple of 128 = 128.
    params = {
        "dim": d,
        "n_layers": cfg["num_hidden_layers"],
        "n_heads": h,
        "n_kv_heads": kvh,
        "vocab_size": cfg["vocab_size"],
        "ffn_dim_multiplier": 0.75,
        "multiple_of": 128,
        "norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "use_scaled_rope": True,
    }
    (out / "params.json").write_text(json.dumps(params))
    shutil.copyfile(hf_folder / "tokenizer.json", out / "tokenizer.json")
    return out


def test_meta_layout_gives_the_same_model(tiny_hf, tmp_path):
    meta = _write_meta(tiny_hf, tmp_path / "meta")
    ckpt = open_checkpoint(meta)
    assert ckpt.format is CheckpointFormat.META and ckpt.args.hidden_dim == 128
    torch.testing.assert_close(_logits(meta), _logits(tiny_hf), rtol=0, atol=1e-6)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(EdgeError, match="does not exist"):
        open_checkpoint(tmp_path / "nope")


def test_folder_without_weights_or_config(tmp_path):
    with pytest.raises(EdgeError, match="is not a checkpoint"):
        open_checkpoint(tmp_path)


def test_not_llama(tiny_hf, tmp_path):
    c = _copy(tiny_hf, tmp_path / "c")
    cfg = json.loads((c / "config.json").read_text())
    cfg |= {"model_type": "mistral", "architectures": ["MistralForCausalLM"]}
    (c / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgeError, match="architecture MistralForCausalLM is not Llama"):
        open_checkpoint(c)


def test_shape_disagrees_with_config(tiny_hf, tmp_path):
    c = _copy(tiny_hf, tmp_path / "c")
    cfg = json.loads((c / "config.json").read_text())
    cfg["intermediate_size"] = 256
    (c / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        EdgeError, match=r"mlp\.(down|gate|up)_proj\.weight has shape .* but the checkpoint's config implies"
    ):
        open_checkpoint(c)


def test_truncated_safetensors(tiny_hf, tmp_path):
    c = _copy(tiny_hf, tmp_path / "c")
    data = (c / "model.safetensors").read_bytes()
    (c / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(EdgeError, match="model.safetensors is not a readable safetensors file"):
        open_checkpoint(c)


def test_corrupt_safetensors_header(tiny_hf, tmp_path):
    c = _copy(tiny_hf, tmp_path / "c")
    data = bytearray((c / "model.safetensors").read_bytes())
    data[8:40] = b"\xff" * 32
    (c / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(EdgeError, match="is not a readable safetensors file"):
        open_checkpoint(c)


def test_prequantized_meta_checkpoint_is_refused(tiny_hf, tmp_path):
    meta = _write_meta(tiny_hf, tmp_path / "meta")
    sd = torch.load(meta / "consolidated.00.pth")
    sd["layers.0.attention.wq.scales"] = torch.ones(4)
    torch.save(sd, meta / "consolidated.00.pth")
    with pytest.raises(EdgeError, match="pre-quantized"):
        open_checkpoint(meta)


def test_non_finite_weights_are_bad_input_and_nothing_is_written(tiny_hf, tmp_path, capsys):
    import shutil

    from safetensors.torch import load_file, save_file

    from edge.export.__main__ import main

    bad = tmp_path / "nan"
    shutil.copytree(tiny_hf, bad)
    weights = load_file(str(bad / "model.safetensors"))
    weights["model.layers.1.mlp.up_proj.weight"][3, 5] = float("inf")
    save_file(weights, str(bad / "model.safetensors"), metadata={"format": "pt"})
    out = tmp_path / "o"
    assert main(["llama3_2_1b_8da4w", "--checkpoint", str(bad), "--output", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {bad}: weight layers.1.mlp.up_proj.weight holds NaN or infinite values\n"
    assert not out.exists() and not any(p.name.startswith(".o.") for p in tmp_path.iterdir())
