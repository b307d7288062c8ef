"""The histogram softmax's and norm's cocotb bench on Icarus and Verilator."""

import re

import pytest

from kllm.cli import latency_line
from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

# Short rows keep the simulators quick (the CI budget); every unit runs on both simulators,
# and together the configurations cover P = 1, P not a power of 2, ba = 1 and 6, 16-bit
# centroids, LayerNorm and RMSNorm.
CONFIGS = [
    ("softmax", {"max_len": 40}, ("icarus",)),
    ("softmax", {"ba": 6, "elems": 3, "max_len": 30}, ("verilator",)),
    ("softmax", {"ba": 1, "elems": 1, "max_len": 7}, ("icarus",)),
    ("norm", {"max_len": 40}, ("icarus",)),
    ("norm", {"ba": 3, "elems": 2, "max_len": 300, "cw": 16}, ("verilator",)),
    ("norm", {"ba": 2, "elems": 1, "max_len": 9, "cw": 4, "rms": 1}, ("icarus",)),
    ("softmax_baseline", {"max_len": 40}, ("verilator",)),
    ("softmax_baseline", {"width": 8, "frac": 6, "elems": 1, "max_len": 7}, ("icarus",)),
    ("norm_baseline", {"max_len": 40}, ("icarus",)),
    ("norm_baseline", {"width": 16, "elems": 3, "max_len": 50, "rms": 1}, ("verilator",)),
]


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True, extra_env={"KLLM_ROWS": "16"})
    assert result["failed"] == 0 and result["tests"] == 7
    lc = result["latency_check"]
    assert lc["cycles"] == lc["formula"]
    # `kllm sim` prints the row formula, not the stream units' n + latency
    assert f"(formula sum over {lc['rows']} rows of b beats of (2 b + row latency - 1) = " \
        in latency_line(lc)


@pytest.mark.parametrize("unit_name", ["softmax"])
def test_bench_catches_a_planted_bug(unit_name, build_dir):
    """Bin 0 of the histogram adds half its increment: wrong only when two or more lanes of
    a beat hold index 0; the bench's rows find it."""
    unit = get_unit(unit_name)

    def plant(text):
        new, n = re.subn(r"= hist0 \+ s2_inc0;", "= hist0 + (s2_inc0 >> 1);", text)
        assert n == 1, "pattern not found"
        return new

    with pytest.raises(AssertionError, match="stream_matches_golden"):
        run_bench(unit, unit.config(["max_len=40"]), "icarus", build_dir, quiet=True,
                  netlist_filter=plant, extra_env={"KLLM_ROWS": "12"},
                  testcase="stream_matches_golden/in_pause=random/out_pause=random")
