"""The IMU's and the baseline's cocotb bench on Icarus and Verilator, one build per configuration."""

import re

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

# Small widths and lengths keep the simulators quick.  Together: the default (which also runs a
# real MiniLM layer slice), P = 1, P = 8, bw = 1, zero outlier capacity (no outlier port), one
# lane, K tiled along both axes when k_max is small, K not a multiple of P everywhere.
SMALL = {"outputs": 3, "elems": 2, "bw": 2, "ba": 3, "cw": 6, "ca": 5, "k_max": 20, "outliers": 3,
         "xbits": 9}
CONFIGS = [
    ("imu", {}, ("icarus",)),
    ("imu", SMALL, ("icarus", "verilator")),
    ("imu", {"outputs": 2, "elems": 1, "bw": 3, "ba": 2, "cw": 5, "ca": 4, "k_max": 16,
             "outliers": 0, "xbits": 8}, ("icarus",)),
    ("imu", {"outputs": 1, "elems": 8, "bw": 1, "ba": 1, "cw": 3, "ca": 2, "k_max": 40,
             "outliers": 1, "xbits": 4}, ("icarus",)),
    ("imu_baseline", {}, ("icarus",)),
    ("imu_baseline", SMALL, ("verilator",)),
]


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True)
    real = not params                       # only the default holds the real layer's formats
    assert result["failed"] == 0 and result["tests"] == 6 + real
    lc = result["latency_check"]
    # the bench streams vectors of max(min_beats, tail) beats when k_max allows it
    B = lc["beats"] // 5
    assert lc["ii1"] == config.streams(B, min(2, config.shift_max), min(2, config.outliers))
    if lc["ii1"]:
        assert lc["cycles"] == lc["formula"]
    if not params:
        assert lc["ii1"], "the default configuration must stream at II = 1"


def test_bench_catches_a_planted_bug(build_dir):
    """The bucket snapshots never rewritten: each bank's second vector then includes the
    sums of the first, which a tile of more tokens than banks shows."""
    unit = get_unit("imu")
    config = unit.config([f"{k}={v}" for k, v in SMALL.items()])

    def plant(text):
        new, n = re.subn(r"(snap_l\d+)\[[^;]*\] <= [^;]+;", ";", text)
        assert n == SMALL["outputs"]
        return new

    with pytest.raises(AssertionError, match="outlier_counts"):
        run_bench(unit, config, "icarus", build_dir, quiet=True, netlist_filter=plant,
                  testcase="outlier_counts")
