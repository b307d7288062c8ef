"""IMU parameters and the golden host driver: bad input gets a clear one-line error."""

import pytest
import torch

from golden.imu import (check_config_operands, dequant_matmul, index_matmul, input_beats,
                        outlier_beats, run_tiled, tiles, weight_writes)
from hdl.imu import Imu, ImuBaseline
from base.config import ImuBaselineConfig, ImuConfig


@pytest.mark.parametrize("kwargs, message", [
    ({"elems": 3}, "imu: parameter 'elems' must be a power of 2 (a position splits into "
                   "weight-memory row and lane by bits), got 3"),
    ({"elems": 8, "k_max": 4}, "imu: parameter 'k_max' (4) must be at least elems (8)"),
    ({"ca": 12, "xbits": 10}, "imu: parameter 'ca' (12) must not exceed xbits (10)"),
    ({"bw": 9}, "imu: parameter 'bw' must be in 1..8, got 9"),
    ({"outputs": 0}, "imu: parameter 'outputs' must be in 1..256, got 0"),
    ({"outliers": -1}, "imu: parameter 'outliers' must be in 0..256, got -1"),
])
def test_bad_parameters(kwargs, message):
    with pytest.raises(ValueError) as e:
        Imu(**kwargs)
    assert str(e.value).startswith(message)
    with pytest.raises(ValueError):
        ImuBaseline(**kwargs)


def test_derived_widths_hold_the_extremes():
    cfg = ImuConfig()
    assert (cfg.depth, cfg.positions, cfg.row_bits, cfg.pos_bits) == (256, 1024, 8, 10)
    assert cfg.shift_max == 8 and cfg.rbits == 17
    # the sum over P files lies in 1024 x (-128) = -2**17 .. 1024 x 127: 18 bits signed
    assert cfg.sum_bits == 18
    assert -(1024 * 128) >= -2 ** (cfg.sum_bits - 1) and 1024 * 127 < 2 ** (cfg.sum_bits - 1)
    assert ImuConfig(k_max=1023).sum_bits == 18 and ImuConfig(k_max=1025).sum_bits == 19
    worst = (1024 * 128 * 128 << 8) + 16 * 2 ** 16 * 128
    assert worst < 2 ** (cfg.ybits - 1) and worst >= 2 ** (cfg.ybits - 2)
    assert ImuBaselineConfig().combine_ops == 1 and ImuConfig().combine_ops == 16
    assert cfg.tail_ops(3, 0) == 16 + 3 + 1 and ImuConfig(outliers=0).tail_ops(3, 0) == 19


def operands(N=5, K=11, T=2, cfg=None):
    cfg = cfg or ImuConfig(outputs=2, elems=4, k_max=8, outliers=2)
    g = torch.Generator().manual_seed(0)
    return (cfg, torch.randint(0, 16, (N, K), generator=g),
            torch.randint(-128, 128, (N, 16), generator=g),
            torch.randint(0, 16, (T, K), generator=g), torch.randint(-128, 128, (16,), generator=g))


def test_driver_refuses_shapes_and_ranges():
    cfg, Iw, Cw, ia, Ca = operands()
    with pytest.raises(ValueError, match=r"imu: Cw must be \(N, 2\*\*bw\) = \(5, 16\), got \(5, 8\)"):
        check_config_operands(cfg, Iw, Cw[:, :8], ia, Ca)
    with pytest.raises(ValueError, match=r"imu: ia must be \(tokens, K\) with K = 11, got \(2, 10\)"):
        check_config_operands(cfg, Iw, Cw, ia[:, :10], Ca)
    with pytest.raises(ValueError, match=r"imu: Ca must be \(2\*\*ba,\) = \(16,\), got \(8,\)"):
        check_config_operands(cfg, Iw, Cw, ia, Ca[:8])
    with pytest.raises(ValueError, match=r"imu: a tile is at most outputs x k_max = 2 x 8, got Iw 5 x 11"):
        check_config_operands(cfg, Iw, Cw, ia, Ca, tile=True)
    with pytest.raises(ValueError, match=r"imu: a tile is at most outputs x k_max = 2 x 8, got Iw 2 x 9"):
        weight_writes(cfg, Iw[:2, :9])
    with pytest.raises(ValueError, match=r"imu: Cw holds values outside -128..127"):
        check_config_operands(cfg, Iw, Cw * 2, ia, Ca)
    with pytest.raises(ValueError, match=r"imu: shift must be in 0..8 \(xbits - ca\), got 9"):
        check_config_operands(cfg, Iw, Cw, ia, Ca, shift=9)
    r = torch.zeros_like(ia)
    r[0, :3] = 5
    with pytest.raises(ValueError, match=r"imu: a token has 3 outliers in columns 0..7, the unit "
                                         r"takes at most outliers = 2 per tile"):
        check_config_operands(cfg, Iw, Cw, ia, Ca, residual=r)
    r[0, 2] = 1 << 17
    with pytest.raises(ValueError, match=r"imu: residual holds values outside"):
        check_config_operands(cfg, Iw, Cw, ia, Ca, residual=r)


def test_tiling_and_beats():
    cfg, Iw, Cw, ia, Ca = operands()
    assert tiles(cfg, 5, 11) == [(0, 2, 0, 8), (0, 2, 8, 11), (2, 4, 0, 8), (2, 4, 8, 11),
                                 (4, 5, 0, 8), (4, 5, 8, 11)]
    beats = input_beats(cfg, list(range(6)))
    assert [b["count"] for b in beats] == [4, 2] and [b["last"] for b in beats] == [0, 1]
    assert beats[1]["idx"] == [4, 5, 0, 0]
    assert outlier_beats(cfg, [0, 0, 0]) == [{"pos": 0, "r": 0, "last": 1}]
    assert outlier_beats(cfg, [0, -3, 0, 7]) == [{"pos": 1, "r": -3, "last": 0},
                                                 {"pos": 3, "r": 7, "last": 1}]
    # a model of the unit built from the golden reference, tile by tile, gives the whole layer
    r = torch.zeros_like(ia)
    r[1, 9] = -40

    def model(program):
        Iw_t, Cw_t, ia_t, Ca_t, s, r_t = program["operands"]
        y = index_matmul(Iw_t, Cw_t, ia_t, Ca_t, shift=s, residual=r_t)
        return [row + [0] * (cfg.outputs - len(row)) for row in y.tolist()]

    y = run_tiled(cfg, Iw, Cw, ia, Ca, shift=2, residual=r, run_tile=model)
    assert torch.equal(y, dequant_matmul(Iw, Cw, ia, Ca, shift=2, residual=r))


@pytest.mark.parametrize("unit_name", ["imu", "imu_baseline"])
def test_output_stage_copies_are_kept_per_lane(unit_name):
    """The output stage's skid flag and its two register enables are copied per lane, each
    copy (as every other per-lane register copy) a module that the flow's keep_modules
    pattern keeps apart (Yosys would merge equal flip-flops and equal LUTs into one net
    reaching every lane)."""
    import fnmatch
    import re

    from amaranth.back import verilog

    from hdl.units import get_unit
    unit = get_unit(unit_name)
    cfg = unit.config(["outputs=3", "elems=2", "k_max=16", "outliers=2"])
    text = verilog.convert(unit.build(cfg), name=unit.toplevel, emit_src=False)
    mods = re.findall(r"^module \\?([^\s(]+)", text, re.M)
    for pattern in unit.keep_modules.split():
        kept = sorted(mod.split(".")[-1] for mod in mods
                      if fnmatch.fnmatch(mod, f"{unit.toplevel}.{pattern}"))
        # (the unit's other per-lane register copies are kept modules too)
        assert set(kept) >= {f"keep_{what}_l{n}" for n in range(3)
                             for what in ("o_skid_full", "o_load", "o_skid_load")}
