"""The binary product table shares its bench with the elementwise table."""

from testbench.test_lut import *  # noqa: F401,F403  (the same cocotb tests)
