"""Design-space sweeps: grid parsing, and a two-point sweep through the real flow."""

import json

import pytest

from fpga.sweep import parse_grid, sweep, write_report
from base.errors import KllmError
from hdl.units import get_unit


def test_grid_is_checked_before_any_work():
    unit = get_unit("quantizer")
    names, configs = parse_grid(unit, ["width=8"], ["elems=1,2", "ba=2,3,4"])
    assert names == ["elems", "ba"]
    assert [(c.elems, c.ba, c.width) for c in configs] == [
        (l, b, 8) for l in (1, 2) for b in (2, 3, 4)]
    with pytest.raises(KllmError, match="parameter 'elems' must be in 1..16, got 32"):
        parse_grid(unit, [], ["elems=1,32"])
    with pytest.raises(KllmError, match="--vary expects name=v1,v2,..., got 'elems'"):
        parse_grid(unit, [], ["elems"])
    with pytest.raises(KllmError, match="names a parameter twice"):
        parse_grid(unit, [], ["ba=1", "ba=2"])


def test_two_point_sweep_writes_table_and_plot(build_dir):
    unit = get_unit("quantizer")
    names, configs = parse_grid(unit, ["width=8", "ba=2"], ["elems=1,2"])
    rows = sweep(unit, configs, "ecp5-25k", build_dir, seeds=1)
    table = write_report(rows, names, build_dir, "test")
    assert table.count("\n") == 4  # header, rule, two rows
    saved = json.loads((build_dir / "sweep.json").read_text())
    assert [r["config"]["elems"] for r in saved] == [1, 2]
    # twice the lanes: more than the lane-independent registers, fewer than twice the total
    ff = [r["unit_resources"]["FF"] for r in saved]
    assert ff[0] < ff[1] < 2 * ff[0]
    assert (build_dir / "sweep.png").stat().st_size > 10_000
