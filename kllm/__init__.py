"""KLLM-HDL: RTL generator for an LLM accelerator on K-Means-quantized data."""

__version__ = "0.1.0"


class KllmError(Exception):
    """An error caused by the user's input (parameters, arguments, missing tools).

    The command line prints its message on one line and exits with status 2.
    """
