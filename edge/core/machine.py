"""Facts about this machine and process, for results files and manifests.

Out: `cpu_name()`, `peak_rss_mb()` (MiB), `versions()` (the installed versions of edge and its main libraries).
"""

from __future__ import annotations

import platform
import re
import resource
from importlib import metadata as importlib_metadata
from pathlib import Path


def cpu_name() -> str:
    """-> this machine's CPU model name from /proc/cpuinfo, else platform.processor() or the architecture."""
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(errors="replace"), re.M)
    except OSError:
        m = None
    return m.group(1).strip() if m else platform.processor() or platform.machine()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def versions() -> dict[str, str]:
    """-> {package: installed version, or "not installed"} for edge, torch, executorch, torchao, transformers."""
    out = {}
    for pkg in ("edge", "torch", "executorch", "torchao", "transformers"):
        try:
            out[pkg] = importlib_metadata.version(pkg)
        except importlib_metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out
