"""`edge.config`: the typed, frozen configs of an export and a fine-tune. Data only: it imports `edge.core`
and nothing of the model, so any entry point can validate a config before loading torch.

    export.py    ExportConfig and its sections, parse_config / load_config (shipped YAML + overrides)
    finetune.py  FinetuneConfig (QAT + LoRA), LORA_TARGETS
"""

from edge.config.export import (
    CONFIG_DIR,
    DEFAULT_MAX_PREFILL,
    SECTIONS,
    CalibrationConfig,
    Device,
    DType,
    ExportConfig,
    Format,
    GPTQConfig,
    QuantizationConfig,
    RotationConfig,
    RotationKind,
    RotationLoss,
    Rounding,
    WeightBits,
    load_config,
    parse_config,
    read_yaml,
    resolve_config_path,
)
from edge.config.finetune import LORA_TARGETS, AdapterMode, BadSamples, DataFormat, FinetuneConfig, Loss

__all__ = [
    "CONFIG_DIR",
    "DEFAULT_MAX_PREFILL",
    "LORA_TARGETS",
    "AdapterMode",
    "BadSamples",
    "CalibrationConfig",
    "DType",
    "DataFormat",
    "Device",
    "ExportConfig",
    "FinetuneConfig",
    "Format",
    "GPTQConfig",
    "Loss",
    "QuantizationConfig",
    "RotationConfig",
    "RotationKind",
    "RotationLoss",
    "Rounding",
    "SECTIONS",
    "WeightBits",
    "load_config",
    "parse_config",
    "read_yaml",
    "resolve_config_path",
]

_SECTIONS = SECTIONS  # the name tests/test_config.py reads
