"""edge.core.errors' signal handling: a signal is remembered, errors after it become the interrupt, and a
cleanup is not cut short by a second Ctrl-C."""

from __future__ import annotations

import logging
import os
import shutil
import signal

import pytest

import edge.core.errors as errors
import edge.core.io as io
from edge.core.errors import interrupt_on_termination, interrupts_win, raise_if_interrupted, signals_deferred

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@pytest.fixture
def handlers():
    """edge's handlers installed for one test; pytest's handlers, logging and the remembered signal restored after."""
    saved = {s: signal.getsignal(s) for s in SIGNALS}
    interrupt_on_termination()
    yield
    for s, h in saved.items():
        signal.signal(s, h)
    errors._signal_seen = None
    logging.disable(logging.NOTSET)


@pytest.mark.parametrize("sig", SIGNALS)
def test_a_signal_raises_keyboard_interrupt_and_is_remembered(handlers, sig):
    raise_if_interrupted()  # nothing yet
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), sig)
    assert errors._signal_seen == sig.name
    assert logging.getLogger("torch").isEnabledFor(logging.CRITICAL) is False  # library logging off from the signal on
    with pytest.raises(KeyboardInterrupt):
        raise_if_interrupted()


def test_an_error_raised_after_a_signal_becomes_the_interrupt(handlers):
    with pytest.raises(TypeError):  # no signal: errors pass through unchanged
        with interrupts_win():
            raise TypeError("plain failure")
    with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
        with interrupts_win():
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except KeyboardInterrupt as e:  # what torch's fake-tensor dispatch does with it
                raise TypeError("failed to unpack") from e


def test_a_second_ctrl_c_does_not_cut_a_cleanup_short(handlers, tmp_path, monkeypatch):
    folder = tmp_path / ".out.tmp-1"
    for i in range(20):
        (folder / f"d{i}").mkdir(parents=True)
        (folder / f"d{i}" / "f").write_bytes(b"x")
    real = shutil.rmtree

    def interrupted_rmtree(path, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # lands while the folder is being removed
        real(path, **kwargs)

    monkeypatch.setattr(io.shutil, "rmtree", interrupted_rmtree)
    io.discard(folder)  # returns normally: the signal was deferred
    assert not folder.exists()
    with pytest.raises(KeyboardInterrupt):  # and it still ends the run
        raise_if_interrupted()
    with signals_deferred():
        os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):  # outside a cleanup a signal raises again
        os.kill(os.getpid(), signal.SIGINT)


def test_discard_removes_a_file_and_ignores_a_missing_path(tmp_path):
    f = tmp_path / ".model.pte.tmp"
    f.write_bytes(b"x")
    io.discard(f)
    io.discard(tmp_path / "never-made")
    assert list(tmp_path.iterdir()) == []
