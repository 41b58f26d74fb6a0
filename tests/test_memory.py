"""edge.core.memory: copying a file-mapped checkpoint tensor leaves only the copy resident, and the heap can be
trimmed."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from edge.core import memory


def _rss_file_mib() -> float:
    return int(re.search(r"RssFile:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) / 1024


def test_copy_and_release_is_exact_and_drops_the_mapped_pages(tmp_path, monkeypatch):
    """A 32 MiB tensor read through torch.load(mmap=True): a plain clone leaves its 32 MiB of file pages
    resident in this process; copy_and_release (in 4 MiB slices here) returns equal values and leaves
    (nearly) none."""
    monkeypatch.setattr(memory, "_SLICE_BYTES", 4 * 2**20)
    src = torch.randn(8 * 2**20, generator=torch.Generator().manual_seed(0))  # 32 MiB of float32
    torch.save({"w": src, "v": src[:10].clone()}, tmp_path / "a.pth")
    torch.save({"w": src}, tmp_path / "b.pth")

    mapped = torch.load(tmp_path / "a.pth", mmap=True, weights_only=True)["w"]
    before = _rss_file_mib()
    plain = mapped.clone()
    grew_plain = _rss_file_mib() - before
    mapped = torch.load(tmp_path / "b.pth", mmap=True, weights_only=True)["w"]
    before = _rss_file_mib()
    copy = memory.copy_and_release(mapped)
    grew_released = _rss_file_mib() - before

    assert torch.equal(copy, src) and torch.equal(plain, src)
    assert copy.data_ptr() != mapped.data_ptr()
    assert grew_plain > 24, grew_plain  # the control: the file's pages stay mapped after a clone
    assert grew_released < 6, grew_released


TRIM_SCRIPT = """
import re, pathlib, torch
from edge.core.memory import trim_heap
anon = lambda: int(re.search(r"RssAnon:\\s+(\\d+)", pathlib.Path("/proc/self/status").read_text()).group(1)) / 1024
# a freed 16 MiB mapped chunk raises glibc's mmap threshold: 1 MiB tensors now go on the heap
x = torch.ones(4 * 2**20); del x
big, small = [], []
for _ in range(300):  # 1 MiB tensors, each followed by a small long-lived one (the quantized weight's place)
    big.append(torch.ones(2**18))
    small.append(torch.ones(16))
del big
held = anon()
trim_heap()
print(held, anon())
"""


def test_trim_heap_returns_the_holes_between_live_allocations():
    """300 MiB freed between long-lived small tensors stays resident until trim_heap hands it back (fresh process)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-c", TRIM_SCRIPT],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    ).stdout
    held, trimmed = map(float, out.split()[-2:])
    assert held - trimmed > 250, (held, trimmed)
