"""Entry points' first call: silence dependency noise users cannot act on, before torch or torchao load.

torchao logs a warning per optional CUDA extension it cannot load on a CPU-only machine; torch,
torch.export and ExecuTorch warn about deprecations inside their own code; transformers (the fixture
trainer's model) warns about the fixture's RoPE settings and draws a bar while saving. None of it concerns
an edge user, and it would push edge's own first screen off the terminal. A user's own
TRANSFORMERS_VERBOSITY or HF_HUB_DISABLE_PROGRESS_BARS is kept.

ExecuTorch's runtime logs from C++ straight to file descriptor 2, which Python cannot filter:
`native_stderr_filtered` drops the lines known to be harmless while a .pte loads or runs and passes
every other line on.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

HARMLESS_NATIVE_LINES = (
    # The pip wheel probing /sys for an Arm CPU's model when its thread pool starts on an x86 host.
    re.compile(r"\[cpuinfo_utils\.cpp:\d+\] "),
    # A kernel asking the Python bindings for scratch memory they do not provide; it allocates its own.
    re.compile(r"\[kernel_runtime_context\.h:\d+\] No temp allocator provided"),
    # pytorch_tokenizers (the runner's tokenizer library) saying which regex engine it fell back to.
    re.compile(r"tokenizers:regex\.cpp:\d+\] Registering override fallback regex"),
)


def quiet_libraries() -> None:
    # transformers and huggingface_hub read these once, when they are first imported.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        import torch  # torch configures its own loggers on import: quiet them after that
    except ImportError:  # android_bench on a machine without torch: nothing of torch's to quiet
        torch = None
    if torch is not None:
        torch._logging.set_logs(all=logging.ERROR)
    for category in (FutureWarning, UserWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in ("torchao", "torch", "executorch", "transformers", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


@contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Run the block with file descriptor 2 captured; afterwards, every captured line except
    HARMLESS_NATIVE_LINES is written to stderr (Python's own stderr writes meanwhile included, in order)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(p.search(line) for p in HARMLESS_NATIVE_LINES):
                    sys.stderr.write(line)
            sys.stderr.flush()
