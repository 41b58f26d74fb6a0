"""Progress on stderr: one line per stage with its elapsed time, a bar where there is a count."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from edge.core.machine import peak_rss_mb


class Progress:
    """Stage timer and progress printer. `quiet=True` records times without printing."""

    def __init__(self, *, stream: TextIO | None = None, quiet: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.start = time.monotonic()
        self.stage_seconds: dict[str, float] = {}
        self.stage_peak_rss_mb: dict[str, float] = {}
        self._stage: str | None = None
        self._stage_start = 0.0

    def _elapsed(self) -> str:
        return f"{time.monotonic() - self.start:7.1f}s"

    def _print(self, text: str, *, end: str = "\n") -> None:
        if not self.quiet:
            print(text, end=end, file=self.stream, flush=True)

    @contextmanager
    def stage(self, name: str, detail: str = "") -> Iterator[None]:
        """Time the enclosed block as stage `name`; prints start and end lines."""
        self._stage, self._stage_start = name, time.monotonic()
        self._print(f"[{self._elapsed()}] {name:<9} {detail}".rstrip())
        try:
            yield
        finally:
            took = time.monotonic() - self._stage_start
            self.stage_seconds[name] = self.stage_seconds.get(name, 0.0) + took
            self.stage_peak_rss_mb[name] = peak_rss_mb()
            self._print(
                f"[{self._elapsed()}] {name:<9} done in {took:.1f}s "
                f"(peak RSS so far {self.stage_peak_rss_mb[name]:.0f} MiB)"
            )
            self._stage = None

    def step(self, done: int, total: int, *, label: str = "") -> None:
        """Draw a bar for `done` of `total` within the current stage."""
        if self.quiet or total <= 0:
            return
        width = 30
        filled = int(width * done / total)
        bar = "#" * filled + "." * (width - filled)
        took = time.monotonic() - self._stage_start
        line = f"\r[{self._elapsed()}] {self._stage or '':<9} [{bar}] {done}/{total} {label} ({took:.1f}s)"
        self._print(line, end="\n" if done >= total else "")

    def info(self, text: str) -> None:
        self._print(f"[{self._elapsed()}] {text}")

    def warn(self, text: str) -> None:
        """A warning the user should see even with quiet: one `warning:` line on the stream."""
        print(f"warning: {text}", file=self.stream, flush=True)
