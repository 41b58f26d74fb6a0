"""edge.config: shipped configs load; bad configs fail with every problem listed at once."""

from pathlib import Path

import pytest

from edge.config import CONFIG_DIR, DType, WeightBits, load_config, parse_config, read_yaml
from edge.core.errors import EdgeError

SHIPPED = sorted(CONFIG_DIR.glob("*.yaml"))


def test_configs_are_shipped():
    names = {p.stem for p in SHIPPED}
    assert {"llama3_2_1b_bf16", "llama3_2_1b_8da4w", "llama3_2_3b_bf16", "llama3_2_3b_8da4w"} <= names


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_every_shipped_config_validates(path):
    config = parse_config(read_yaml(path), source=str(path))
    assert config.output.name == path.stem
    if path.stem.endswith("8da4w"):
        q = config.quantization
        assert (q.linear, q.group_size, q.output, q.embedding) == (
            WeightBits.INT4,
            32,
            WeightBits.INT8,
            WeightBits.INT8,
        )
        assert config.dtype is DType.FP32
    if path.stem.endswith("bf16"):
        assert not config.quantization.is_quantized and config.dtype is DType.BF16


def test_all_problems_reported_together():
    raw = {
        "output": "x",
        "colour": "red",
        "max_context": "long",
        "dtype": "fp8",
        "quantization": {"linear": "int3", "group_size": 33, "bogus": 1},
    }
    with pytest.raises(EdgeError) as e:
        parse_config(raw, source="t.yaml")
    msg = str(e.value)
    for fragment in (
        "unknown key 'colour'",
        "max_context: 'long'",
        "dtype: 'fp8'",
        "quantization.linear: 'int3'",
        "group_size: 33 is not a power of two",
        "unknown key 'quantization.bogus'",
    ):
        assert fragment in msg
    assert "\n" not in msg


def test_cli_overrides_merge_onto_yaml(tmp_path):
    config = load_config(
        config="llama3_2_1b_8da4w",
        overrides={"output": str(tmp_path / "o"), "max_context": 512, "quantization": {"group_size": 64}},
    )
    assert config.max_context == 512 and config.output == tmp_path / "o"
    assert config.quantization.group_size == 64 and config.quantization.linear is WeightBits.INT4


def test_missing_config_file():
    with pytest.raises(EdgeError, match="does not exist"):
        load_config(config=str(Path("nope.yaml")), overrides={})


def test_roundtrip_to_dict():
    config = load_config(config="llama3_2_3b_8da4w", overrides={})
    assert parse_config(config.to_dict(), source="dict") == config


def test_spinquant_sections_validate_together():
    raw = {
        "output": "x",
        "quantization": {"linear": "none", "rounding": "gptq"},
        "rotation": {
            "kind": "spin",
            "file": "r.safetensors",
            "steps": -1,
            "learning_rate": "fast",
            "colour": 1,
            "micro_batch": 3,
        },
        "gptq": {"damp": 2.0},
        "calibration": {"seq_len": 1},
        "device": "tpu",
    }
    with pytest.raises(EdgeError) as e:
        parse_config(raw, source="t.yaml")
    msg = str(e.value)
    for fragment in (
        "quantization.rounding: gptq needs int4",
        "rotation.kind: 'spin'",
        "rotation.steps: -1 is less than 0",
        "rotation.learning_rate: 'fast' is not a number",
        "unknown key 'rotation.colour'",
        "gptq.damp: 2.0 is outside [0.0, 1.0]",
        "rotation.micro_batch: 3 does not divide rotation.batch_size 8",
        "calibration.seq_len: 1 is less than 2",
        "device: 'tpu'",
    ):
        assert fragment in msg, fragment
    with pytest.raises(EdgeError, match="rotation.file: given, but rotation.kind is none"):
        parse_config({"output": "x", "rotation": {"file": "r.safetensors"}}, source="t.yaml")
    with pytest.raises(EdgeError, match="bf16 with the online Hadamard is not supported"):
        parse_config({"output": "x", "dtype": "bf16", "rotation": {"kind": "hadamard"}}, source="t.yaml")


def test_spinquant_configs_are_the_recipe():
    from edge.config import RotationKind, Rounding

    for name in ("llama3_2_1b_spinquant", "llama3_2_3b_spinquant", "fixture_spinquant"):
        c = load_config(config=name, overrides={})
        assert c.rotation.kind is RotationKind.OPTIMIZED and c.rotation.online_hadamard
        assert (c.rotation.steps, c.rotation.learning_rate, c.rotation.batch_size) == (100, 1.5, 8)
        assert c.quantization.rounding is Rounding.GPTQ and c.quantization.group_size == 32
    for name in ("llama3_2_1b_spinquant", "llama3_2_3b_spinquant"):
        c = load_config(config=name, overrides={})
        assert (c.gptq.samples, c.gptq.float_targets) == (128, False)  # SpinQuant's GPTQ
        assert (c.rotation.samples, c.calibration.seq_len) == (800, 2048)  # Meta's recipe: 800 x 2048 and 128 x 2048
        assert c.rotation.micro_batch == 1  # a window per pass: 8 x 2048 at once does not fit one GPU
    c = load_config(config="fixture_spinquant", overrides={})
    assert (c.gptq.samples, c.gptq.float_targets) == (160, True)  # all of calibration.txt, fitted to float targets


def test_cli_flags_map_one_to_one_onto_config_keys(tmp_path):
    import dataclasses

    from edge import config as cfg
    from edge.export.__main__ import build_parser, overrides_from_args

    p = build_parser()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings}
    for section in ("rotation", "gptq", "calibration"):
        for f in dataclasses.fields(cfg._SECTIONS[section]):
            assert f"--{section}-{f.name}".replace("_", "-") in flags
    ns = p.parse_args(
        [
            "--config",
            "fixture_spinquant",
            "--rotation-kind",
            "hadamard",
            "--rotation-learning-rate",
            "0.5",
            "--no-rotation-online-hadamard",
            "--gptq-samples",
            "7",
            "--calibration-text",
            "c.txt",
            "--rounding",
            "rtn",
        ]
    )
    o = overrides_from_args(ns)
    assert o["rotation"] == {"kind": "hadamard", "learning_rate": 0.5, "online_hadamard": False}
    assert (
        o["gptq"] == {"samples": 7}
        and o["calibration"] == {"text": "c.txt"}
        and o["quantization"] == {"rounding": "rtn"}
    )
    c = load_config(config=ns.config_flag, overrides=o | {"output": str(tmp_path / "o")})
    assert c.rotation.learning_rate == 0.5 and c.rotation.steps == 100 and c.calibration.text.name == "c.txt"


def test_max_prefill_must_leave_room_in_the_cache():
    assert parse_config({"output": "o", "max_context": 256, "max_prefill": 128}, source="t").max_prefill == 128
    assert parse_config({"output": "o"}, source="t").max_prefill is None
    with pytest.raises(EdgeError) as e:
        parse_config({"output": "o", "max_context": 256, "max_prefill": 256}, source="t")
    assert "max_prefill: 256 must be less than max_context (256)" in str(e.value)
    with pytest.raises(EdgeError, match="max_prefill"):
        parse_config({"output": "o", "max_prefill": 0}, source="t")
