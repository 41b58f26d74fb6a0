"""edge: Llama 3.2 checkpoints -> ExecuTorch programs for Arm phones, and the tools to check them.

`edge.export`, `edge.finetune`, `edge.evaluate` and `edge.generate` are packages (`python -m edge.export`) that
can also be called (`edge.export("llama3_2_1b_8da4w", checkpoint=...)`): see `edge.api`. Importing edge loads
none of them; the first use of one imports it.
"""

import importlib

CALLABLE = ("export", "finetune", "evaluate", "generate")


def __getattr__(name: str):
    if name in CALLABLE:
        return importlib.import_module(f"edge.{name}")
    raise AttributeError(f"module 'edge' has no attribute {name!r}")
