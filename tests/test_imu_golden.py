"""The IMU's integer references: bucket scheme == dequantize-and-multiply == float product."""

import pytest
import torch

from golden.imu import accumulator_bits, dequant_matmul, index_matmul
from golden.minilm import load_minilm
from golden.quant import fit_activation_codebook, fit_weight_codebook
from golden.text import calibration_sentences


def random_case(g, N, K, T, bw, ba, n_out, shift):
    Iw = torch.randint(0, 2 ** bw, (N, K), generator=g)
    Cw = torch.randint(-128, 128, (N, 2 ** bw), generator=g)
    ia = torch.randint(0, 2 ** ba, (T, K), generator=g)
    Ca = torch.randint(-128, 128, (2 ** ba,), generator=g)
    r = torch.zeros(T, K, dtype=torch.long)
    for t in range(T):
        pos = torch.randperm(K, generator=g)[:n_out]
        r[t, pos] = torch.randint(-2 ** 15, 2 ** 15, (len(pos),), generator=g)
    return Iw, Cw, ia, Ca, r


@pytest.mark.parametrize("N, K, T, bw, ba, n_out, shift", [
    (16, 64, 3, 4, 4, 0, 0), (33, 100, 4, 2, 3, 5, 2), (8, 257, 2, 8, 8, 16, 7), (1, 1, 1, 4, 4, 1, 0)])
def test_random_layers_identical(N, K, T, bw, ba, n_out, shift):
    g = torch.Generator().manual_seed(N * K)
    Iw, Cw, ia, Ca, r = random_case(g, N, K, T, bw, ba, n_out, shift)
    a = index_matmul(Iw, Cw, ia, Ca, shift=shift, residual=r)
    b = dequant_matmul(Iw, Cw, ia, Ca, shift=shift, residual=r)
    assert a.dtype == torch.long and torch.equal(a, b)
    # independent third statement: a plain loop
    t, n = T - 1, N - 1
    ref = sum(int(Cw[n, Iw[n, k]]) * ((int(Ca[ia[t, k]]) << shift) + int(r[t, k])) for k in range(K))
    assert int(a[t, n]) == ref


def test_one_bucket_takes_everything_and_widths_hold_at_k_max():
    K = 4096
    Iw = torch.zeros(2, K, dtype=torch.long)                # every weight in bucket 0
    Cw = torch.full((2, 16), -128)
    ia = torch.zeros(1, K, dtype=torch.long)
    Ca = torch.full((16,), -128)
    r = torch.zeros(1, K, dtype=torch.long)
    r[0, :16] = -(2 ** 15)
    y = index_matmul(Iw, Cw, ia, Ca, shift=3, residual=r)
    assert torch.equal(y, dequant_matmul(Iw, Cw, ia, Ca, shift=3, residual=r))
    bits = accumulator_bits(k_max=K, bw=4, ca=8, cw=8, shift=3, outliers=16)
    assert abs(int(y.max())) < 2 ** (bits["y"] - 1)
    assert K * 128 < 2 ** (bits["bucket"] - 1)


def test_real_layer_identical_and_equal_to_float_product():
    m = load_minilm()
    W = m.weight(2, "ffn_in")                               # 1536 x 384
    captured = {}

    from golden.minilm import Hooks

    class Capture(Hooks):
        def begin(self, batch):
            self.mask = batch.attention_mask.bool()

        def linear(self, name, act, x, weight, bias):
            if name == "layer2.ffn_in":
                captured["x"] = x[self.mask]
            return super().linear(name, act, x, weight, bias)

    m.embed(calibration_sentences(12), Capture())
    x = captured["x"]
    cb = fit_weight_codebook(W, 4, name="layer2.ffn_in")
    act = fit_activation_codebook(x, 4, k=8, name="layer2.ffn_in input")
    xi, ia, mask = act.quantize(x[:6], 8)
    residual = torch.where(mask, xi - (act.Ca[ia] << act.shift), 0)
    y_idx = index_matmul(cb.Iw, cb.Cw, ia, act.Ca, shift=act.shift, residual=residual)
    y_deq = dequant_matmul(cb.Iw, cb.Cw, ia, act.Ca, shift=act.shift, residual=residual)
    assert torch.equal(y_idx, y_deq)
    # the float product of the dequantized tensors, up to float64 rounding
    y_float = act.dequantize(xi, ia, mask) @ (cb.sw[:, None] * cb.Cw.gather(1, cb.Iw).double()).T
    scaled = y_idx.double() * act.sx * cb.sw[None, :]
    assert torch.allclose(scaled, y_float, rtol=1e-9, atol=1e-9)


def test_bad_operands():
    g = torch.Generator().manual_seed(1)
    Iw, Cw, ia, Ca, r = random_case(g, 4, 10, 2, 4, 4, 1, 0)
    with pytest.raises(ValueError, match="ia must be \\(tokens, K\\) with K = 10, got \\(2, 9\\)"):
        index_matmul(Iw, Cw, ia[:, :9], Ca)
    with pytest.raises(ValueError, match="Iw holds indices outside 0..15"):
        dequant_matmul(Iw + 16, Cw, ia, Ca)
    with pytest.raises(ValueError, match="residual must have the shape of ia"):
        index_matmul(Iw, Cw, ia, Ca, residual=r[:, :5])
