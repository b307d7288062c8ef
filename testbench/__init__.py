"""cocotb benches, one per unit, run from pytest (tests/) or ``kllm sim``."""
