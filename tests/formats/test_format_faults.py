"""formats: requests no ONNX or GGUF file can hold are refused with one line, before any long work."""

from __future__ import annotations

import importlib.util

import pytest

from tests.export.test_faults import _cli, _no_long_work, _one_error_line


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--formats", "pte,onnx", "--rotation-kind", "hadamard"],
            "formats: onnx has no op for SpinQuant's online Hadamard (R4)",
        ),
        (
            ["--formats", "gguf", "--group-size", "64"],
            "formats: gguf stores int4 as Q4_0 blocks of 32; quantization.group_size is 64",
        ),
        (["--formats", "pte,tflite"], "formats: 'tflite' is not one of"),
        (["--formats", "onnx,onnx"], "names a format twice"),
    ],
)
def test_unmappable_requests_are_one_line_and_write_nothing(tiny_hf, tmp_path, capsys, monkeypatch, flags, message):
    _no_long_work(monkeypatch)
    out = tmp_path / "out"
    err = _one_error_line(*_cli(["--checkpoint", str(tiny_hf), "--output", str(out), *flags], capsys))
    assert message in err, err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_optional_package_names_the_extra(tiny_hf, tmp_path, capsys, monkeypatch):
    _no_long_work(monkeypatch)
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gguf" else real(name, *a))
    err = _one_error_line(
        *_cli(["--checkpoint", str(tiny_hf), "--output", str(tmp_path / "o"), "--formats", "gguf"], capsys)
    )
    assert err == "error: formats: gguf needs gguf: pip install 'edge[gguf]'"


def test_a_meta_checkpoint_without_tokenizer_json_is_refused(tiny_hf, tmp_path, capsys, monkeypatch):
    import shutil

    _no_long_work(monkeypatch)
    ckpt = tmp_path / "ckpt"
    shutil.copytree(tiny_hf, ckpt)
    (ckpt / "tokenizer.json").rename(ckpt / "tokenizer.model")  # stands in for a tiktoken file: not a tokenizer.json
    err = _one_error_line(
        *_cli(["--checkpoint", str(ckpt), "--output", str(tmp_path / "o"), "--formats", "onnx"], capsys)
    )
    assert "formats: onnx needs the checkpoint's tokenizer.json" in err
    assert not (tmp_path / "o").exists()


def test_an_onnx_only_export_writes_no_pte(tiny_hf, tmp_path, capsys):
    from edge.evaluate.onnx_model import load_onnx

    out = tmp_path / "o"
    code, err = _cli(
        [
            "llama3_2_1b_8da4w",
            "--checkpoint",
            str(tiny_hf),
            "--output",
            str(out),
            "--formats",
            "onnx",
            "--max-context",
            "64",
        ],
        capsys,
    )
    assert code == 0, err
    assert not (out / "model.pte").exists() and (out / "onnx" / "model.onnx").is_file()
    model = load_onnx(out / "onnx")
    tokens = model.greedy([0, 5, 6], max_new_tokens=4)
    assert model.max_context == 64 and len(tokens) == 4
    # The checkpoint has no tokenizer_config.json; onnxruntime-genai needs one, so the export wrote it.
    import onnxruntime_genai as og

    genai = og.Model(str(out / "onnx"))
    assert len(og.Tokenizer(genai).encode("The quick brown fox")) > 0
    params = og.GeneratorParams(genai)
    params.set_search_options(max_length=7, do_sample=False)
    gen = og.Generator(genai, params)
    gen.append_tokens([0, 5, 6])
    while not gen.is_done():
        gen.generate_next_token()
    assert list(gen.get_sequence(0))[3:] == tokens
    assert [p.name for p in tmp_path.iterdir()] == ["o"]  # no staging folder left beside it


def test_lora_adapters_kept_unmerged_have_no_mapping(tiny_hf):
    from edge.checkpoint import open_checkpoint
    from edge.config import parse_config
    from edge.core.errors import EdgeError
    from edge.export.formats_stage import check_formats

    config = parse_config({"output": "o", "formats": ["pte", "gguf"]}, source="test")
    check_formats(config, open_checkpoint(tiny_hf), adapters_kept=False)  # merged (or no) adapters: fine
    with pytest.raises(
        EdgeError,
        match="formats: gguf has no mapping for LoRA adapters kept beside the int4 weights; "
        "export with finetune.adapters: merge",
    ):
        check_formats(config, open_checkpoint(tiny_hf), adapters_kept=True)
