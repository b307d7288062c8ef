"""The core's cocotb bench (testbench/test_core.py) on Icarus and Verilator: every byte the
core writes and its error codes against golden.interp, its cycle and busy/stall counters
equal to the interpreter's with an AxiRam that never pauses."""

import re

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

# Small buffers keep the netlists and the simulators quick.  A 64-bit bus (an instruction
# is four beats, bursts end at 2 KiB) and a 256-bit one (one beat, 4 KiB).
SMALL = {"outputs": 4, "elems": 2, "bw": 4, "ba": 4, "outliers": 4, "k_max": 32, "max_row": 64,
         "max_tokens": 16,
         "row_ba": 3, "lut_ba": 4, "abuf_kb": 4, "tbuf_kb": 4, "bus_bytes": 8}
WIDE = dict(SMALL, bus_bytes=32, bw=3, outputs=4, elems=4, ba=6, outliers=2)
CONFIGS = [
    ("core", SMALL, ("icarus", "verilator")),
    ("core", WIDE, ("icarus",)),
]
TESTS = 15


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True)
    assert result["failed"] == 0 and result["tests"] == TESTS


def test_bench_catches_a_planted_bug(build_dir):
    """Semaphore 0 never loses the tokens its waiters take: a store then runs before the
    load it waits for has filled ABUF, and the bench must see it."""
    unit = get_unit("core")
    config = unit.config([f"{k}={v}" for k, v in SMALL.items()])

    def plant(text):
        new, n = re.subn(r"assign sem0_next = (\S+ )\s*- \S+ ;", r"assign sem0_next = \1;", text)
        assert n == 1
        return new

    with pytest.raises(AssertionError, match="roundtrip_int16"):
        run_bench(unit, config, "icarus", build_dir, quiet=True, netlist_filter=plant,
                  testcase="roundtrip_int16")


# ---- one real MiniLM encoder layer on the RTL (default CoreConfig): a benchmark of some
# minutes per simulator, run with `pytest -m core_layer` (CI skips it: pytest.ini addopts)

@pytest.mark.core_layer
@pytest.mark.parametrize("sim", ["verilator", "icarus"])
def test_layer(sim, core_model_rtl, core_sentence, build_dir):
    import torch

    from golden.compiler import compile_sentence
    from kllm.sim import run_core_image
    config = get_unit("core").config([])
    image = compile_sentence(core_model_rtl, core_sentence, config, 1)
    r = run_core_image(config, sim, build_dir, image.dram, image.prog_addr, check=True,
                       fast_build=False)
    assert r["error"] == 0
    assert torch.equal(image.output(r["dram"]), core_model_rtl.forward(core_sentence, 1))
    print(f"{sim}: {r['counters']['cycles']} cycles, {r['cycles_per_s']:.0f} cycles/s, "
          f"{r['wall_s']:.0f} s simulated, build {r['build_s']:.0f} s")
