"""The elementwise table's and the product table's cocotb bench on Icarus and Verilator."""

import re

import pytest

from kllm.cli import latency_line
from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

CONFIGS = [
    ("lut", {}, ("icarus",)),                                              # ba=4, P=4, 16 bit
    ("lut", {"ba": 8, "elems": 3, "out_width": 8}, ("verilator",)),        # index -> index
    ("lut", {"ba": 1, "elems": 1, "out_width": 1}, ("icarus",)),
    ("product", {}, ("verilator",)),
    ("product", {"ba": 2, "elems": 1, "out_width": 2}, ("icarus",)),
]


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True, extra_env={"KLLM_BEATS": "120"})
    assert result["failed"] == 0 and result["tests"] == 6
    lc = result["latency_check"]
    assert lc["cycles"] == lc["formula"] == lc["beats"] + config.latency
    assert "(formula n + latency = " in latency_line(lc)


@pytest.mark.parametrize("unit_name", ["product"])
def test_bench_catches_a_planted_bug(unit_name, build_dir):
    """The table write address off by one bit (bit 0 stuck at 0): odd entries are never
    written; the bench reads every entry and finds it."""
    unit = get_unit(unit_name)

    def plant(text):
        new, n = re.subn(r"\[wr__addr\] <=", "[(wr__addr >> 1) << 1] <=", text)
        assert n > 0, "pattern not found"
        return new

    with pytest.raises(AssertionError, match="stream_matches_golden"):
        run_bench(unit, unit.config(), "icarus", build_dir, quiet=True, netlist_filter=plant,
                  extra_env={"KLLM_BEATS": "40"}, testcase="stream_matches_golden/in_pause=random/out_pause=random")
