"""Each command's first screen is edge's own: no dependency warnings before its help."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("module", ["edge.export", "edge.finetune", "edge.evaluate", "edge.generate"])
def test_help_prints_nothing_on_stderr(module):
    r = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith(f"usage: python -m {module}")
    assert r.stderr == "", r.stderr[:500]


def test_console_scripts_point_at_the_module_mains():
    import importlib
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    scripts = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())["project"][
        "scripts"
    ]
    assert set(scripts) == {"edge-export", "edge-finetune", "edge-evaluate", "edge-generate", "android-bench"}
    for name, target in scripts.items():
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), name
        assert (Path(sys.executable).parent / name).is_file(), f"{name} is not installed beside {sys.executable}"
