"""The quantizer's cocotb bench on Icarus and Verilator, one build directory per configuration."""

import re

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit

CONFIGS = [
    {},                                     # default: width=16, ba=4, elems=4
    {"width": 8, "ba": 1, "elems": 1},      # one threshold, one lane
    {"width": 12, "ba": 8, "elems": 3},     # deepest search, odd lane count
    {"width": 32, "ba": 5, "elems": 16},    # widest input, most lanes
]


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
@pytest.mark.parametrize("params", CONFIGS, ids=lambda p: ",".join(f"{k}={v}" for k, v in p.items()) or "default")
def test_bench(sim, params, build_dir):
    unit = get_unit("quantizer")
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True)
    assert result["failed"] == 0 and result["tests"] == 8
    lc = result["latency_check"]
    assert lc["cycles"] == lc["formula"] == lc["beats"] + config.latency


def test_bench_catches_a_planted_bug(build_dir):
    """`>=` turned into `>`: wrong only where x equals a threshold; the boundary stimulus finds it."""
    unit = get_unit("quantizer")

    def plant(text):
        new, n = re.subn(r"\$signed\((x\d+_\d+)\) >= ", r"$signed(\1) > ", text)
        assert n > 0
        return new

    with pytest.raises(AssertionError, match="stream_matches_golden"):
        run_bench(unit, unit.config(), "icarus", build_dir, quiet=True, netlist_filter=plant)
