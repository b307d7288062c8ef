"""Synthesis and place-and-route through the real YoWASP Yosys and nextpnr."""

import pytest

from fpga.flow import synthesize
from hdl.units import get_unit


def expected_flip_flops(cfg):
    """Registers the quantizer's docstring describes: per stage valid/first/last, the
    values carried through ba stages, the index bits found so far, the shared root."""
    return (3 * (cfg.ba + 1) + cfg.width * cfg.elems * cfg.ba
            + cfg.elems * sum(range(1, cfg.ba + 1)) + cfg.width)


@pytest.mark.parametrize("params", [["ba=3", "elems=2"], ["ba=5", "elems=1", "width=12"]])
def test_ecp5_resources_match_the_architecture(params, build_dir):
    unit = get_unit("quantizer")
    cfg = unit.config(params)
    s = synthesize(unit, cfg, "ecp5-25k", build_dir, seeds=1)
    r = s["unit_resources"]
    assert r["FF"] == expected_flip_flops(cfg)
    # levels 1 .. ba-1 of the threshold tree in LUTRAM (depth <= 16): one 16x4 block
    # per 4 bits, per level, per lane
    assert r["LUTRAM"] == cfg.elems * (cfg.ba - 1) * -(-cfg.width // 4)
    assert r["DSP"] == 0 and r["EBR"] == 0
    assert r["LUT4"] > 0
    assert 50 < s["fmax_mhz_median"] < 1000
    assert set(s["fmax_mhz_by_seed"]) == {1}


def test_ice40_places(build_dir):
    unit = get_unit("quantizer")
    cfg = unit.config(["ba=2", "elems=1", "width=8"])
    s = synthesize(unit, cfg, "ice40-up5k", build_dir, seeds=2)
    # iCE40 has no distributed RAM: the small threshold memories become flip-flops
    memory_bits = cfg.elems * cfg.width * sum(2 ** level for level in range(1, cfg.ba))
    assert s["unit_resources"]["FF"] == expected_flip_flops(cfg) + memory_bits
    assert s["unit_resources"]["LUT4"] > 0
    assert len(s["fmax_mhz_by_seed"]) == 2 and s["fmax_mhz_median"] > 10


def test_speed_grade_reaches_the_timing_model(build_dir):
    """The same netlist placed at ECP5 speed grade 8 is faster than at 6 (the default)."""
    unit = get_unit("quantizer")
    cfg = unit.config(["ba=2", "elems=1", "width=8"])
    slow = synthesize(unit, cfg, "ecp5-25k", build_dir / "s6", seeds=1)
    fast = synthesize(unit, cfg, "ecp5-25k", build_dir / "s8", seeds=1, speed=8)
    assert slow["speed_grade"] == 6 and fast["speed_grade"] == 8
    assert fast["unit_resources"] == slow["unit_resources"]
    assert fast["fmax_mhz_median"] > 1.1 * slow["fmax_mhz_median"]
