"""edge.config: shipped configs load; bad configs fail with every problem listed at once."""

from pathlib import Path

import pytest

from edge.config import CONFIG_DIR, DType, WeightBits, load_config, parse_config, read_yaml
from edge.errors import EdgeError

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
        assert (q.linear, q.group_size, q.output, q.embedding) == (WeightBits.INT4, 32, WeightBits.INT8, WeightBits.INT8)
        assert config.dtype is DType.FP32
    if path.stem.endswith("bf16"):
        assert not config.quantization.is_quantized and config.dtype is DType.BF16


def test_all_problems_reported_together():
    raw = {"output": "x", "colour": "red", "max_context": "long", "dtype": "fp8",
           "quantization": {"linear": "int3", "group_size": 33, "bogus": 1}}
    with pytest.raises(EdgeError) as e:
        parse_config(raw, source="t.yaml")
    msg = str(e.value)
    for fragment in ("unknown key 'colour'", "max_context: 'long'", "dtype: 'fp8'", "quantization.linear: 'int3'",
                     "group_size: 33 is not a power of two", "unknown key 'quantization.bogus'"):
        assert fragment in msg
    assert "\n" not in msg


def test_cli_overrides_merge_onto_yaml(tmp_path):
    config = load_config(config="llama3_2_1b_8da4w", overrides={"output": str(tmp_path / "o"), "max_context": 512,
                                                                  "quantization": {"group_size": 64}})
    assert config.max_context == 512 and config.output == tmp_path / "o"
    assert config.quantization.group_size == 64 and config.quantization.linear is WeightBits.INT4


def test_missing_config_file():
    with pytest.raises(EdgeError, match="does not exist"):
        load_config(config=str(Path("nope.yaml")), overrides={})


def test_roundtrip_to_dict():
    config = load_config(config="llama3_2_3b_8da4w", overrides={})
    assert parse_config(config.to_dict(), source="dict") == config
