"""`edge.generate`: text from an exported model on the host, through the runtime a phone would use.

    core.py     a prompt -> `Generation` (the text, prefill and decode tok/s) from a .pte (ExecuTorch's
                TextLLMRunner), an ONNX folder (onnxruntime-genai) or a .gguf (llama-cpp-python)
    chat.py     the chat template the export copied beside the model, or Llama 3's, rendered with jinja2

Names are imported from `core` on first use, so `python -m edge.generate` quiets import-time noise first.
"""

from edge.core.callable import make_callable

__all__ = ["Generation", "generate"]


def __getattr__(name: str):
    if name in __all__:
        from edge.generate import core

        return getattr(core, name)
    raise AttributeError(name)


def _function():
    from edge.generate.api import generate

    return generate


make_callable(__name__, _function)  # edge.generate(...): see edge/generate/api.py
