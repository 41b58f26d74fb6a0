"""edge: Llama 3.2 checkpoints -> ExecuTorch programs for Arm phones, and the tools to check them.

`edge.export`, `edge.finetune`, `edge.evaluate` and `edge.generate` are packages (`python -m edge.export`) that
can also be called (`edge.export("llama3_2_1b_8da4w", checkpoint=...)`): see `edge.api`. Importing edge loads
none of torch; each call imports what it needs.
"""

import sys
import types

from edge import evaluate, export, finetune, generate  # noqa: F401  (light: their names load on first use)


def _make_callable(package: types.ModuleType, function_name: str) -> None:
    """A package -> the same package, callable as `edge.api.<function_name>`."""

    class CallablePackage(types.ModuleType):
        def __call__(self, *args, **kwargs):
            from edge import api

            return getattr(api, function_name)(*args, **kwargs)

    CallablePackage.__call__.__doc__ = f"edge.api.{function_name}: see its docstring."
    package.__class__ = CallablePackage


for _name in ("export", "finetune", "evaluate", "generate"):
    _make_callable(sys.modules[f"edge.{_name}"], _name)
