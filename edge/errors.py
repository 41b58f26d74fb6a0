"""The one exception type users see: a one-line message, exit status 2."""


class EdgeError(Exception):
    """Bad input or an unusable environment, reported as one line without a traceback."""

    exit_code = 2


def interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP -> KeyboardInterrupt, so a killed or disconnected run cleans up as Ctrl-C does.

    Python's default for both is to die at once, leaving temporary folders behind.
    """
    import signal

    def _interrupt(signum, frame):  # noqa: ARG001
        raise KeyboardInterrupt(signal.Signals(signum).name)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
