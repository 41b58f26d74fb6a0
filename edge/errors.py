"""The one exception type users see: a one-line message, exit status 2."""


class EdgeError(Exception):
    """Bad input or an unusable environment, reported as one line without a traceback."""

    exit_code = 2
