"""The project's error type."""

__all__ = ["KllmError"]


class KllmError(Exception):
    """An error caused by the user's input (parameters, arguments, files, missing tools).

    The command line prints its message on one line and exits with status 2.
    """
