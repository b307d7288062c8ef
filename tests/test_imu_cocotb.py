"""The IMU's and the baseline's cocotb bench on Icarus and Verilator, one build per configuration."""

import re

import pytest

from kllm.sim import run_bench
from kllm.units import get_unit

# Small widths and lengths keep the simulators quick.  Together: the default (which also runs a
# real MiniLM layer slice), P = 1, P = 8, bw = 1, zero outlier capacity (no outlier port), one
# lane, K tiled when k_max is small, K not a multiple of P everywhere.
SMALL = {"lanes": 3, "elems": 2, "bw": 2, "ba": 3, "cw": 6, "ca": 5, "k_max": 20, "outliers": 3,
         "xbits": 9}
CONFIGS = [
    ("imu", {}, ("icarus", "verilator")),
    ("imu", SMALL, ("icarus", "verilator")),
    ("imu", {"lanes": 2, "elems": 1, "bw": 3, "ba": 2, "cw": 5, "ca": 4, "k_max": 16,
             "outliers": 0, "xbits": 8}, ("icarus",)),
    ("imu", {"lanes": 1, "elems": 8, "bw": 1, "ba": 1, "cw": 3, "ca": 2, "k_max": 40,
             "outliers": 1, "xbits": 4}, ("verilator",)),
    ("imu_baseline", {}, ("icarus", "verilator")),
    ("imu_baseline", SMALL, ("icarus",)),
]


def _ids(p):
    return ",".join(f"{k}={v}" for k, v in p.items()) or "default"


@pytest.mark.parametrize("unit_name, params, sim", [
    pytest.param(u, p, s, id=f"{u}-{_ids(p)}-{s}") for u, p, sims in CONFIGS for s in sims])
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True)
    real = not params                       # only the default holds the real layer's formats
    assert result["failed"] == 0 and result["tests"] == 6 + real
    lc = result["latency_check"]
    assert lc["cycles"] == lc["formula"] and lc["ii1"]
