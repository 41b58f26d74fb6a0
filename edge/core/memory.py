"""Giving memory back to the system during an export (Linux/glibc; a no-op elsewhere).

No library exposes these, and both matter on a phone-sized budget: an export's peak RSS
is what decides whether a 3B model exports on a 16 GB laptop.

- `copy_and_release(t)`: a private copy of a tensor that lives in a file mapping
  (torch.load(mmap=True)), made a slice at a time, each source slice's pages dropped
  (madvise DONTNEED) right after it is copied: the file's pages and the copy are
  never both resident.
- `trim_heap()`: glibc's malloc_trim(0). Weights of 1-32 MiB are allocated on the
  malloc heap, not mapped; freed between long-lived ones (a block's float weights once
  it is quantized), they leave holes the heap keeps. malloc_trim hands the free pages
  back. Measured on the 1B export: about 1 GiB of RSS after quantization.
"""

from __future__ import annotations

import ctypes
import functools
import mmap

import torch

_SLICE_BYTES = 64 * 2**20


@functools.cache
def _libc():
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:
        return None


def release_pages(t: torch.Tensor) -> None:
    """Drop the resident pages fully inside `t`'s memory (MADV_DONTNEED); for file-mapped tensors only."""
    libc = _libc()
    if libc is None or not hasattr(libc, "madvise"):
        return
    page = mmap.PAGESIZE
    start = (t.data_ptr() + page - 1) // page * page
    end = (t.data_ptr() + t.numel() * t.element_size()) // page * page
    if end > start:
        libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), 4)  # 4 = MADV_DONTNEED


def copy_and_release(t: torch.Tensor) -> torch.Tensor:
    """A file-mapped tensor -> an equal private contiguous copy; the source's pages are dropped slice by slice."""
    src = t.contiguous().view(-1)
    out = torch.empty_like(src)
    step = max(1, _SLICE_BYTES // max(t.element_size(), 1))
    for i in range(0, src.numel(), step):
        out[i : i + step].copy_(src[i : i + step])
        release_pages(src[i : i + step])
    release_pages(src)  # the pages that straddle two slices
    return out.view(t.shape)


def trim_heap() -> None:
    """Return the malloc heap's free pages to the system (glibc malloc_trim(0))."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
