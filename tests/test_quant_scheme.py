"""The quantization scheme: formats exact as DESIGN §2 fixes them, clear errors, and a small run."""

import pytest
import torch

from golden.eval import metrics
from golden.minilm import load_minilm
from golden.quant import Scheme, calibrate, fit_activation_codebook, fit_weight_codebook, top_outliers
from golden.quantizer import quantize, thresholds_from_codebook
from golden.text import calibration_sentences, evaluation_sentences


def test_activation_format_matches_the_quantizer_contract():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(200, 64, generator=g) * 3
    cb = fit_activation_codebook(v, 4, k=2, ca=8, xbits=16)
    assert cb.Ca.min() >= -128 and cb.Ca.max() <= 127 and (cb.Ca[1:] >= cb.Ca[:-1]).all()
    assert torch.equal(cb.thresholds, thresholds_from_codebook(cb.Ca << cb.shift))
    assert abs(cb.sa - cb.sx * 2 ** cb.shift) < 1e-15
    x, idx, mask = cb.quantize(v, 2)
    assert x.abs().max() < 2 ** 15
    assert torch.equal(idx, quantize(x, cb.thresholds))
    assert (mask.sum(-1) == 4).all()
    deq = cb.dequantize(x, idx, mask)
    assert torch.equal(deq[mask], x[mask].double() * cb.sx)      # outliers exact (fixed point)


def test_weight_format():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(32, 96, generator=g)
    cb = fit_weight_codebook(W, 3, cw=8)
    assert cb.Cw.shape == (32, 8) and cb.Iw.shape == (32, 96)
    assert cb.Cw.abs().max() <= 128 and (cb.Cw.abs().amax(1) == 127).all()
    assert cb.bits_per_weight == pytest.approx(3 + (8 * 8 + 16) / 96)
    err = (cb.dequantize() - W).pow(2).mean() / W.pow(2).mean()
    assert err < 0.05
    sp = fit_weight_codebook(W, 3, sparse=0.01)
    assert len(sp.sparse_pos) == round(0.01 * W.numel())
    assert (sp.dequantize() - W).pow(2).mean() < (cb.dequantize() - W).pow(2).mean()


def test_compensation_and_sparse_lower_the_output_error():
    """GPTQ-style assignment onto the same codebooks: lower ||(W - Q) X|| than nearest
    rounding on correlated inputs; SpQR-style sparse weights lower it further."""
    g = torch.Generator().manual_seed(2)
    X = torch.randn(2000, 64, generator=g, dtype=torch.float64) @ torch.randn(64, 64, generator=g, dtype=torch.float64)
    W = torch.randn(48, 64, generator=g)
    H = X.T @ X / len(X)

    def out_err(cb):
        return float(((cb.dequantize().double() - W.double()) @ X.T).pow(2).mean())

    plain = fit_weight_codebook(W, 3, H=H)
    comp = fit_weight_codebook(W, 3, H=H, gptq=True)
    sparse = fit_weight_codebook(W, 3, H=H, gptq=True, sparse=0.05)
    assert torch.equal(plain.Cw, comp.Cw)                  # same codebooks, other indices
    assert out_err(comp) < 0.8 * out_err(plain)
    assert out_err(sparse) < out_err(comp)
    assert len(sparse.sparse_pos) == 64 * round(0.05 * 48)
    assert sparse.bits_per_weight == pytest.approx(3 + (8 * 8 + 16) / 64 + 32 * 64 * 2 / (48 * 64))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="layer0.query holds 1 non-finite"):
        fit_weight_codebook(torch.tensor([[1.0, float("inf"), 2, 3]]), 1, name="layer0.query")
    with pytest.raises(ValueError, match="acts holds 2 non-finite"):
        fit_activation_codebook(torch.tensor([[float("nan"), 1.0, float("nan")]]), 1, name="acts")
    with pytest.raises(ValueError, match="row 0 has 2 distinct value\\(s\\), fewer than the 4"):
        fit_weight_codebook(torch.tensor([[1.0, 1, 2, 2]]), 2)
    with pytest.raises(ValueError, match="outlier count k=9 is larger than the vector length 8"):
        top_outliers(torch.zeros(3, 8), 9)
    with pytest.raises(ValueError, match="scheme s: wbits must be in 2..8, got 9"):
        Scheme("s", wbits=9)
    with pytest.raises(ValueError, match="scheme s: unknown method 'log'"):
        Scheme("s", method="log")


def test_small_run_kmeans_beats_uniform():
    """16 calibration and 40 evaluation sentences: K-Means W4A4 with outliers stays
    close to FP32 and clearly above uniform W4A4 (the full report: `kllm eval`)."""
    m = load_minilm()
    cal, ev = calibration_sentences(16), evaluation_sentences(40)
    ref = m.embed(ev)
    km = calibrate(m, Scheme("km", wbits=4, abits=4, outliers=8), cal)
    un = calibrate(m, Scheme("un", method="uniform", wbits=4, abits=4), cal)
    r_km, r_un = metrics(ref, m.embed(ev, km)), metrics(ref, m.embed(ev, un))
    assert r_km["cos_mean"] > 0.93
    assert r_km["cos_mean"] > r_un["cos_mean"] + 0.1
    assert km.outlier_share() == pytest.approx(
        (4 * 16 / 384 * 384 + 16 / 384 * 384 + 16 / 1536 * 1536) / (5 * 384 + 1536), rel=1e-6)
