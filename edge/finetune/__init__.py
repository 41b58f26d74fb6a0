"""QAT + LoRA fine-tuning of `edge.model` (`python -m edge.finetune`); see `edge.finetune.run`."""
