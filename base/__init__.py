"""The base layer: what every other part of KLLM-HDL agrees on, with no dependencies.

* :mod:`base.errors` -- the project's error type (a user's mistake, one line, exit 2);
* :mod:`base.config` -- one checked configuration dataclass per unit;
* :mod:`base.latency` -- the latency arithmetic of the shared hardware blocks;
* :mod:`base.files` -- output files written whole or not at all;
* :mod:`base.formats` -- number formats and fixed tables shared by the golden model and
  the RTL (reciprocal, rsqrt and exp tables).

This package imports only the standard library: ``golden/`` (PyTorch) and ``hdl/``
(Amaranth) both build on it and never on each other (``tests/test_layers.py``).
"""

__version__ = "0.1.0"
