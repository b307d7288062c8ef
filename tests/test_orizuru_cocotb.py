"""Orizuru's and the baseline's cocotb bench on Icarus and Verilator (one build per configuration)."""

import re

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

# Small widths and lengths keep the simulators quick; together they cover P = 1, P not a
# power of 2, P > k, k = 1, all three final merges, and the default configuration.
CONFIGS = [
    ("orizuru", {}, ("icarus", "verilator")),
    ("orizuru", {"width": 8, "elems": 3, "k": 5, "max_len": 40, "merge": 0}, ("icarus", "verilator")),
    ("orizuru", {"width": 4, "elems": 1, "k": 2, "max_len": 16}, ("icarus",)),
    ("orizuru", {"width": 6, "elems": 8, "k": 3, "max_len": 64, "merge": 0}, ("icarus",)),
    ("orizuru", {"width": 6, "elems": 2, "k": 1, "max_len": 8}, ("icarus",)),
    ("orizuru", {"merge": 2}, ("icarus",)),
    ("orizuru_baseline", {}, ("icarus", "verilator")),
    ("orizuru_baseline", {"width": 6, "elems": 3, "k": 2, "max_len": 32}, ("icarus",)),
]
BEATS = "120"


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True, extra_env={"KLLM_BEATS": BEATS})
    assert result["failed"] == 0 and result["tests"] == 10
    lc = result["latency_check"]
    assert lc["cycles"] == lc["formula"] == lc["beats"] + config.latency


def test_bench_catches_a_planted_bug(build_dir):
    """The lanes' strict `>` (the borrow of entry - x) turned into `>=` (the borrow of
    entry - x - 1): an equal later value then displaces an older one, which is wrong only
    on ties; the all-equal and many-ties vectors find it."""
    unit = get_unit("orizuru")
    config = unit.config(["width=6", "elems=2", "k=3", "max_len=16"])

    def plant(text):
        # x > e is the borrow of e - x; the borrow of e - x - 1 is x >= e
        lane_minus_x = (r"(= \{ top_lane\w+_live, top_lane\w+\[\d+:\d+\] \}"
                        r" - top_sort\w+\[\d+:\d+\]);")
        new, n = re.subn(lane_minus_x, r"\1 - 1'h1;", text)
        assert n > 0
        return new

    with pytest.raises(AssertionError, match="stream_matches_golden"):
        run_bench(unit, config, "icarus", build_dir, quiet=True, netlist_filter=plant,
                  extra_env={"KLLM_BEATS": "40"}, testcase="stream_matches_golden")


def test_serial_merge_p4_k6_bursty(build_dir):
    """Regression of the serial merge's input rule: at P = 4, k = 6, with bursty gaps and
    backpressure, a last beat was taken in a cycle where the queued vector's pops waited,
    its load overwrote the queues a pop early and one result was lost (a timeout)."""
    unit = get_unit("orizuru")
    config = unit.config(["width=8", "elems=4", "k=6", "max_len=64"])
    result = run_bench(unit, config, "icarus", build_dir, quiet=True,
                       extra_env={"KLLM_BEATS": BEATS},
                       testcase="stream_matches_golden")
    assert result["failed"] == 0
