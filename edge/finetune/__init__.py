"""QAT + LoRA fine-tuning of `edge.model` (`python -m edge.finetune`); see `edge.finetune.run`."""

from edge.core.callable import make_callable


def _function():
    from edge.finetune.api import finetune

    return finetune


make_callable(__name__, _function)  # edge.finetune(...): see edge/finetune/api.py
