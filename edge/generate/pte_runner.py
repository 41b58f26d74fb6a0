"""A .pte -> text, from ExecuTorch's own TextLLMRunner (the C++ runner behind llama_main, through its bindings).

The runner prints each token's bytes to file descriptor 1 itself, and logs to descriptor 2. Its Python token
callback cannot be used: the binding turns each token into a `str`, and a token holding part of a UTF-8
character (an emoji, most CJK text) raises UnicodeDecodeError there and ends the generation. So descriptor 1
goes to a pipe while the runner works, and a thread decodes the bytes incrementally and streams the text on,
leaving out the runner's closing newline and its `PyTorchObserver {...}` stats line (the stats come from its
stats callback).
Descriptor 2 goes to a temporary file, shown only in the error when the runner fails.
"""

from __future__ import annotations

import codecs
import os
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.core.errors import EdgeError

OBSERVER = "PyTorchObserver "


class TextPump:
    """Bytes from a pipe -> decoded text to `emit`, holding back a line that may be the runner's stats line."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self.emit, self.pending, self.held, self.text = emit, "", "", []
        self.decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def out(self, piece: str) -> None:
        """Pass text on, keeping a final newline back: the runner ends every generation with one of its own."""
        piece, self.held = self.held + piece, ""
        if piece.endswith("\n"):
            piece, self.held = piece[:-1], "\n"
        if piece:
            self.text.append(piece)
            self.emit(piece)

    def feed(self, data: bytes, *, final: bool = False) -> None:
        self.pending += self.decoder.decode(data, final=final)
        lines = self.pending.splitlines(keepends=True)
        self.pending = ""
        for i, line in enumerate(lines):
            last = i == len(lines) - 1 and not line.endswith("\n")
            if last and not final and OBSERVER.startswith(line[: len(OBSERVER)]):
                self.pending = line  # could still become the stats line: wait for more
            elif not line.startswith(OBSERVER):
                self.out(line)

    def run(self, read_fd: int) -> None:
        with os.fdopen(read_fd, "rb", buffering=0) as pipe:
            while data := pipe.read(4096):
                self.feed(data)
        self.feed(b"", final=True)


@contextmanager
def runner_output(emit: Callable[[str], None]) -> Iterator[tuple[TextPump, list[str]]]:
    """Descriptor 1 -> a TextPump thread, descriptor 2 -> captured lines, while the block runs."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    read_fd, write_fd = os.pipe()
    pump = TextPump(emit)
    thread = threading.Thread(target=pump.run, args=(read_fd,), daemon=True)
    log: list[str] = []
    with tempfile.TemporaryFile() as err:
        os.dup2(write_fd, 1)
        os.close(write_fd)
        os.dup2(err.fileno(), 2)
        thread.start()
        try:
            yield pump, log
        finally:
            os.dup2(saved[0], 1)  # closes the pipe's last writer: the thread reads to the end and stops
            os.dup2(saved[1], 2)
            thread.join()
            err.seek(0)
            log.extend(err.read().decode(errors="replace").splitlines())


def last_error(log: list[str]) -> str:
    """Captured runtime lines -> the last one that reads like an error (or the last line)."""
    errors = [line for line in log if any(w in line for w in ("rror", "ailed", "issing", "not found"))]
    return (errors or log or ["no output"])[-1].strip()


def run_pte(
    pte: Path,
    tokenizer: Path,
    text: str,
    *,
    add_bos: bool,
    max_new_tokens: int,
    temperature: float,
    on_text: Callable[[str], None] | None,
):
    """(.pte, tokenizer, prompt text) -> (generated text, the runner's Stats or None); text streamed to `on_text`
    (default: the terminal's stdout, saved before the runner's output is captured)."""
    from edge.core.quiet import native_stderr_filtered

    with native_stderr_filtered():  # the tokenizer library logs from C++ as it loads
        from executorch.extension.llm.runner import GenerationConfig, TextLLMRunner

        from edge.evaluate.pte_model import load_kernels

        load_kernels()
    terminal = os.fdopen(os.dup(1), "w", encoding="utf-8")

    def to_terminal(piece: str) -> None:
        terminal.write(piece)
        terminal.flush()

    stats: list = []
    config = GenerationConfig(echo=False, max_new_tokens=max_new_tokens, temperature=temperature, num_bos=int(add_bos))
    try:
        with runner_output(on_text or to_terminal) as (pump, log):
            try:
                TextLLMRunner(str(pte), str(tokenizer)).generate(text, config, stats_callback=stats.append)
            except RuntimeError:
                raise EdgeError(f"ExecuTorch's runner failed on {pte}: {last_error(log)}") from None
    finally:
        terminal.close()
    return "".join(pump.text), (stats[-1] if stats else None)
