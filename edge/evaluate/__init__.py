"""`edge.evaluate`: perplexity, top-1 agreement and KL of a .pte against its reference (see `core`).

Names are imported from `core` on first use, so `python -m edge.evaluate` can quiet torch's and
torchao's import-time warnings (`edge.core.quiet`) before they load.
"""

from edge.core.callable import make_callable

__all__ = [
    "EagerProgram",
    "EvalResult",
    "TABLE_HEADER",
    "evaluate",
    "evaluate_program",
    "table_row",
    "tokenize_windows",
]


def __getattr__(name: str):
    if name in __all__:
        from edge.evaluate import core

        return getattr(core, name)
    raise AttributeError(name)


def _function():
    from edge.evaluate.api import evaluate

    return evaluate


make_callable(__name__, _function)  # edge.evaluate(...): see edge/evaluate/api.py
