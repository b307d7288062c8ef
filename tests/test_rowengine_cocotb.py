"""The row engine's cocotb bench (testbench/test_rowengine.py) on Icarus and Verilator:
every ABUF byte after each ROWOP / ADD equal to golden.core_ops.execute, the cycles from
start to done equal to rowop_cycles / add_cycles, faults with the golden model's code."""

import json
from pathlib import Path

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit

from benchcases import bench_cases

# Small buffers and units keep the netlist and the simulators quick (a 64-bit bus: four
# elements an ABUF word, two a beat).
SMALL = {"elems": 2, "bus_bytes": 8, "max_row": 48, "max_tokens": 16, "row_ba": 3,
         "lut_ba": 4, "abuf_kb": 4, "tbuf_kb": 4, "outliers": 2}
CONFIGS = [
    ("rowengine", SMALL, ("icarus", "verilator")),
]
TESTS = 8


@pytest.mark.parametrize("unit_name, params, sim", bench_cases(CONFIGS))
def test_bench(unit_name, params, sim, build_dir):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in params.items()])
    result = run_bench(unit, config, sim, build_dir, quiet=True)
    assert result["failed"] == 0 and result["tests"] == TESTS
    stats = [json.loads(line) for line in (Path(build_dir) / "stats.jsonl").read_text().splitlines()]
    rate = next(s["beats_per_cycle"] for s in stats if "beats_per_cycle" in s)
    assert rate >= 0.9
