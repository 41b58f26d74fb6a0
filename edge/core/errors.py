"""The one exception type users see (a one-line message, exit status 2), and how signals stop a run."""

from collections.abc import Iterator
from contextlib import contextmanager


class EdgeError(Exception):
    """Bad input or an unusable environment, reported as one line without a traceback."""

    exit_code = 2


_signal_seen: str | None = None
_deferring = 0  # > 0 while a cleanup runs: a further signal is remembered, not raised


def interrupt_on_termination() -> None:
    """SIGINT, SIGTERM and SIGHUP -> KeyboardInterrupt, and the signal remembered.

    Python's default for SIGTERM and SIGHUP is to die at once, leaving temporary folders behind.
    The signal is remembered because a library may turn the KeyboardInterrupt into another error
    (torch's fake-tensor dispatch reports one raised inside its C argument parsing as a TypeError,
    and torch.export wraps that again); `interrupts_win` and `raise_if_interrupted` still see it.
    Library logging is switched off from the signal on: what torch logs while unwinding is noise.
    """
    import logging
    import signal

    def _interrupt(signum, frame):  # noqa: ARG001
        global _signal_seen
        _signal_seen = signal.Signals(signum).name
        logging.disable(logging.CRITICAL)
        if not _deferring:
            raise KeyboardInterrupt(_signal_seen)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)


def raise_if_interrupted() -> None:
    """Nothing, or KeyboardInterrupt when a signal arrived and a library swallowed it; called before publishing."""
    if _signal_seen is not None:
        raise KeyboardInterrupt(_signal_seen)


@contextmanager
def interrupts_win() -> Iterator[None]:
    """Any error raised after a signal -> KeyboardInterrupt, so the run exits 130 with one line."""
    try:
        yield
    except BaseException:
        if _signal_seen is not None:
            raise KeyboardInterrupt(_signal_seen) from None
        raise


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Run a cleanup to its end: a Ctrl-C pressed again meanwhile is remembered (the run still exits 130)
    instead of breaking off the removal of a temporary file halfway."""
    global _deferring
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
