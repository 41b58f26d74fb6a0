"""docs/configs.md is generated from the config dataclasses and must match them."""

from edge.config import reference


def test_configs_page_is_current():
    assert reference.DOC.read_text() == reference.render(), "stale: run python -m edge.config.reference --write"


def test_every_key_of_every_section_is_on_the_page():
    page = reference.render()
    for key in (
        "max_context",
        "quantization.group_size",
        "rotation.steps",
        "gptq.float_targets",
        "calibration.seq_len",
        "finetune.qat.learning_rate",
        "finetune.lora.rank",
    ):
        assert f"| `{key}` |" in page, key
