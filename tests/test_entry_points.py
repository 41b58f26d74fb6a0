"""Each command's first screen is edge's own: no dependency warnings before its help."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["edge.export", "edge.finetune", "edge.evaluate"])
def test_help_prints_nothing_on_stderr(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: python -m {module}")
    assert r.stderr == "", r.stderr[:500]
