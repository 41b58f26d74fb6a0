"""`python -m edge.export`: a Llama 3.2 checkpoint -> an ExecuTorch .pte folder (see pipeline.py)."""

from edge.export.pipeline import DEFAULT_CHECKPOINT, ExportResult, run_export

__all__ = ["DEFAULT_CHECKPOINT", "ExportResult", "run_export"]
