"""Entry points' first call: silence dependency noise users cannot act on, before torch or torchao load.

torchao logs a warning per optional CUDA extension it cannot load on a CPU-only machine; torch,
torch.export and ExecuTorch warn about deprecations inside their own code. None of it concerns an
edge user, and it would push edge's own first screen off the terminal.
"""

from __future__ import annotations

import logging
import warnings


def quiet_libraries() -> None:
    import torch  # torch configures its own loggers on import: quiet them after that

    torch._logging.set_logs(all=logging.ERROR)
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("torchao", "torch", "executorch", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
