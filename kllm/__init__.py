"""KLLM-HDL: RTL generator for an LLM accelerator on K-Means-quantized data.

This package is the command line (``kllm``), the top layer: it imports the rest
(:mod:`base`, :mod:`hdl`, :mod:`golden`, :mod:`testbench`, :mod:`fpga`) and
nothing imports it.
"""

from base import __version__
from base.errors import KllmError

__all__ = ["__version__", "KllmError"]
