"""The histogram norm unit shares its bench with the histogram softmax."""

from testbench.test_softmax import *  # noqa: F401,F403  (the same cocotb tests)
