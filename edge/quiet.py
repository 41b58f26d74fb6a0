"""Entry points' first call: silence dependency noise users cannot act on, before torch or torchao load.

torchao logs a warning per optional CUDA extension it cannot load on a CPU-only machine; torch,
torch.export and ExecuTorch warn about deprecations inside their own code; transformers (the fixture
trainer's model) warns about the fixture's RoPE settings and draws a bar while saving. None of it concerns
an edge user, and it would push edge's own first screen off the terminal. A user's own
TRANSFORMERS_VERBOSITY or HF_HUB_DISABLE_PROGRESS_BARS is kept.
"""

from __future__ import annotations

import logging
import os
import warnings


def quiet_libraries() -> None:
    # transformers and huggingface_hub read these once, when they are first imported.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import torch  # torch configures its own loggers on import: quiet them after that

    torch._logging.set_logs(all=logging.ERROR)
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("torchao", "torch", "executorch", "transformers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
