"""Parameters and host-side writes of the index-domain nonlinear units: clear errors."""

import pytest
import torch

from golden import lut, norm, product, softmax
from hdl.lut import ElementwiseLut
from hdl.norm import HistogramNorm
from hdl.softmax import HistogramSoftmax, SoftmaxBaseline
from base.errors import KllmError
from base.config import NormBaselineConfig, NormConfig, SoftmaxBaselineConfig, SoftmaxConfig
from hdl.units import get_unit


@pytest.mark.parametrize("build, message", [
    (lambda: ElementwiseLut(ba=9), "lut: parameter 'ba' must be in 1..8, got 9"),
    (lambda: ElementwiseLut(elems=0), "lut: parameter 'elems' must be in 1..16, got 0"),
    (lambda: HistogramSoftmax(ba=7), "softmax: parameter 'ba' must be in 1..6, got 7"),
    (lambda: HistogramSoftmax(max_len=0), "softmax: parameter 'max_len' must be in 1..65536, got 0"),
    (lambda: HistogramNorm(rms=2), "norm: parameter 'rms' must be in 0..1, got 2"),
    (lambda: HistogramNorm(cw=1), "norm: parameter 'cw' must be in 2..16, got 1"),
    (lambda: SoftmaxBaseline(width=8, frac=8),
     "softmax_baseline: parameter 'frac' must be below width (8), got 8"),
])
def test_parameter_errors(build, message):
    with pytest.raises(ValueError, match=f"^{message}$".replace("(", r"\(").replace(")", r"\)")):
        build()


def test_type_error_and_cli_error():
    with pytest.raises(TypeError, match="product: parameter 'elems' must be an integer"):
        get_unit("product").config_cls(elems="4")
    with pytest.raises(KllmError, match="norm: unknown parameter 'width'"):
        get_unit("norm").config(["width=8"])


def test_widths():
    c = SoftmaxConfig(elems=4, max_len=1024)
    assert (c.max_beats, c.count_bits, c.denom_bits, c.out_bits) == (256, 11, 26, 16)
    n = NormConfig(max_len=1024)
    assert n.out_bits == 19                      # 4096 * sqrt(1024) * 1.01 < 2**18
    # 256-word exp table, ROM and row buffer: 16 LUTRAM banks, two 4:1 stages, read 3
    # (the exp read one more: a copy register per multiplier);
    # fabric multipliers of 11 and 16 bits: partial products + 4 adder levels = 5
    assert c.stage_latencies == (4, 5, 5, 3, 3)
    assert c.latency == 2 * 16 + 16 + 2 * 4 + 5 + 5 + 3 + 3
    # norm: 16 bins/centroids selected in 2 stages of 4:1; multipliers by an 8-bit centroid
    # 1 + 3 = 4; n S2 (11-bit n) 5 and S1**2 (20 bits) 6; rsqrt lookup: divide by 3
    # (times 683, 10 bits: 5), clamp 1, 256-word ROM 3 behind address copies 1 = 10;
    # (n C - S1) r (17-bit r) 6;
    # row buffer 3; input, histogram, start and output registers 5, the registered remap
    # read 1
    assert n.stage_latencies == (2, 4, 6, 10, 6, 3)
    assert n.latency == 2 * 16 + 13 + 2 * 2 + 3 * 4 + 6 + 10 + 6 + 5 + 1 + 3
    # baselines: lane trees of 4 (2 levels); row buffer 3; 1024-word exp ROM: address
    # copies 1, 64 banks, three 4:1 stages (4 + 1 = 5); reciprocal ROM 3; E r 5
    sb = SoftmaxBaselineConfig(elems=4, max_len=1024)
    assert sb.stage_latencies == (2, 3, 5, 3, 5)
    assert [sb.row_latency(b) for b in (1, 10, 256)] == [1 + 47, 10 + 47, 256 + 47]
    # x**2 of 8 bits 4, trees 2, n S2 / S1**2 6, row buffer 3, (n x - S1) r 6; row_rsqrt
    # 6 + 7 + 10 = 23
    nb = NormBaselineConfig(elems=4, max_len=1024)
    assert nb.stage_latencies == (4, 2, 6, 3, 6)
    assert nb.latency == 9 + 2 * 4 + 2 + 23 + 3 + 6


def test_host_writes_refuse_what_does_not_fit():
    with pytest.raises(ValueError, match="table entry 300 does not fit out_width=8 bits"):
        lut.table_writes(torch.tensor([1, 300]), 8)
    with pytest.raises(ValueError, match="centroid -9 does not fit cw=4 signed bits"):
        norm.codebook_writes(torch.tensor([-9, 3]), 4)
    with pytest.raises(ValueError, match="unknown binary function 'div'"):
        product.table_to_fixed("div", torch.tensor([1]), 1.0, torch.tensor([1]), 1.0, 4)
    assert lut.table_writes(torch.tensor([-1, 2]), 4) == [(0, 15), (1, 2)]
    with pytest.raises(ValueError, match="frac must be >= 6"):
        softmax.softmax_baseline_rows(torch.tensor([[1]]), 5)


def test_exp_table_writes_cover_every_row_maximum():
    Cs = torch.tensor([-50, -10, 0, 30])
    w = dict(softmax.exp_table_writes(Cs, 0.1))
    assert len(w) == 16 and w[3 * 4 + 3] == 2 ** softmax.EXP_FRAC
    assert w[3 * 4 + 0] == round(2 ** 15 * float(torch.exp(torch.tensor(-8.0, dtype=torch.float64))))


def test_product_tables_match_float():
    g = torch.Generator().manual_seed(0)
    Ca = torch.randperm(256, generator=g)[:16].sub(128).sort().values
    Cb = torch.randperm(256, generator=g)[:16].sub(128).sort().values
    t = product.table_to_fixed("swiglu", Ca, 0.02, Cb, 0.03, 8)
    ref = torch.nn.functional.silu(Ca.double()[:, None] * 0.02) * (Cb.double()[None, :] * 0.03)
    assert ((t.double() / 2 ** 8 - ref).abs() <= 2 ** -9).all()
    a, b = torch.randint(0, 16, (50,), generator=g), torch.randint(0, 16, (50,), generator=g)
    assert torch.equal(product.apply(t, a, b), t[a, b])


def test_baseline_goldens_close_to_float():
    g = torch.Generator().manual_seed(1)
    x = torch.randint(-4000, 4000, (50, 60), generator=g)
    _, p = softmax.softmax_baseline_rows(x, 8)
    ref = torch.softmax(x.double() / 256, -1)
    # exp table steps of 2**-6: relative error <= 2**-6 per element, plus the reciprocal's
    assert ((p - ref).abs() <= ref * 0.04 + 2 ** -14).all()
    x8 = torch.randint(-128, 128, (20, 100), generator=g)
    _, z = norm.norm_values_rows(x8)
    xd = x8.double()
    ref = (xd - xd.mean(1, keepdim=True)) / xd.std(1, unbiased=False, keepdim=True)
    assert ((z - ref).abs() <= ref.abs() * 3e-3 + 2 ** -norm.OUT_FRAC).all()
