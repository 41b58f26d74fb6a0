"""`python -m edge.export`: a Llama 3.2 checkpoint -> an ExecuTorch .pte folder (see pipeline.py).

The pipeline is imported on first use, so `python -m edge.export` can quiet torch's and torchao's
import-time warnings (`edge.core.quiet`) before they load.
"""

from edge.core.callable import make_callable

__all__ = ["ExportResult", "run_export"]


def __getattr__(name: str):
    if name in __all__:
        from edge.export import pipeline

        return getattr(pipeline, name)
    raise AttributeError(name)


def _function():
    from edge.export.api import export

    return export


make_callable(__name__, _function)  # edge.export(...): see edge/export/api.py
