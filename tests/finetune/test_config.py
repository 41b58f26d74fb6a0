"""The finetune: section: typed, every problem reported at once, flags one to one with its keys."""

from __future__ import annotations

import dataclasses

import pytest

from edge.config import load_config
from edge.config.finetune import STAGES, AdapterMode, FinetuneConfig, Loss
from edge.core.errors import EdgeError


def test_shipped_qat_lora_configs_parse():
    for name in ("fixture_qat_lora", "llama3_2_1b_qat_lora", "llama3_2_3b_qat_lora"):
        c = load_config(config=name, overrides={})
        assert c.finetune is not None and c.finetune.lora.rank == 16 and c.finetune.adapters is AdapterMode.KEEP
        assert c.quantization.linear.value == "int4" and c.quantization.group_size == 32
    assert load_config(config="fixture_qat_lora", overrides={}).finetune.loss is Loss.DISTILL


def test_every_problem_is_reported_together():
    bad = {
        "finetune": {
            "qat": {"steps": -1, "speed": 3},
            "lora": {"rank": 0, "targets": ["q_proj", "lm_head"]},
            "loss": "mse",
            "colour": "red",
        }
    }
    with pytest.raises(EdgeError) as e:
        load_config(config="fixture_qat_lora", overrides=bad)
    msg = str(e.value)
    for part in (
        "finetune.qat.steps: -1 is less than 0",
        "unknown key 'finetune.qat.speed'",
        "finetune.lora.rank: 0",
        "finetune.lora.targets",
        "finetune.loss: 'mse' is not one of lm, distill",
        "unknown key 'finetune.colour'",
    ):
        assert part in msg, part


def test_nothing_to_train_and_rotation_are_refused():
    with pytest.raises(EdgeError, match="both 0, so nothing would train"):
        load_config(config="fixture_qat_lora", overrides={"finetune": {"qat": {"steps": 0}, "lora": {"steps": 0}}})
    with pytest.raises(EdgeError, match="rotation and gptq do not combine"):
        load_config(config="fixture_qat_lora", overrides={"quantization": {"rounding": "gptq"}})


def test_cli_flags_map_one_to_one_onto_the_keys():
    from edge.finetune.__main__ import build_parser, overrides_from_args

    p = build_parser()
    flags = {a.option_strings[0] for a in p._actions if a.option_strings}
    for f in dataclasses.fields(FinetuneConfig):
        if f.name not in STAGES:
            assert f"--{f.name.replace('_', '-')}" in flags, f.name
    for stage, cls in STAGES.items():
        for f in dataclasses.fields(cls):
            assert f"--{stage}-{f.name.replace('_', '-')}" in flags
    ns = p.parse_args(
        ["fixture_qat_lora", "--qat-steps", "7", "--lora-targets", "q_proj,v_proj", "--no-packing", "--loss", "lm"]
    )
    c = load_config(config="fixture_qat_lora", overrides=overrides_from_args(ns))
    assert c.finetune.qat.steps == 7 and c.finetune.lora.targets == ("q_proj", "v_proj")
    shipped = load_config(config="fixture_qat_lora", overrides={})
    assert c.finetune.packing is False and c.finetune.loss is Loss.LM
    assert (
        c.finetune.lora.steps == shipped.finetune.lora.steps
        and c.finetune.qat.learning_rate == shipped.finetune.qat.learning_rate
    )
