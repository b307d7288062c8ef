"""Index-domain nonlinear references against float, including hls4ml's LUT-softmax pitfalls."""

import pytest
import torch

from golden import lut, norm, softmax


def codebook(g, n=16, lo=-128, hi=127):
    return torch.randperm(hi - lo + 1, generator=g)[:n].add(lo).sort().values


def test_softmax_close_to_float_and_sums_to_one():
    g = torch.Generator().manual_seed(0)
    Cs, ss = codebook(g), 0.04
    idx = torch.randint(0, 16, (200, 37), generator=g)
    _, p = softmax.softmax_rows(idx, Cs, ss)
    ref = torch.softmax(Cs[idx].double() * ss, dim=-1)
    # error budget: reciprocal table with 2**8 intervals (relative 2**-9), the
    # denominator's n exp-table roundings (relative n * 2**-16 since D >= 2**15),
    # the element's own exp rounding (absolute 2**-16) and the output truncation (2**-15)
    n = idx.shape[1]
    bound = ref * (2 ** -9 + n * 2 ** -16) + 2 ** -16 + 2 ** -softmax.OUT_FRAC
    assert ((p - ref).abs() <= bound).all()
    assert ((p.sum(1) - 1).abs() <= 2 ** -8).all()


def test_softmax_exp_table_uses_only_the_nonpositive_half():
    g = torch.Generator().manual_seed(1)
    Cs = codebook(g)
    E = softmax.exp_table(Cs, 0.1, torch.tensor([15, 7, 0]))
    assert int(E.max()) == 2 ** softmax.EXP_FRAC              # exp(0) at the maximum, never above
    assert (E[1, 8:] == 2 ** softmax.EXP_FRAC).all()          # above the row max: clamped, unused


def test_softmax_edge_rows():
    Cs = torch.tensor([-100, -3, 0, 5, 100])
    # one element; all the same index; only the maximum present; a huge spread (tiny exps)
    for idx, n in [([[2]], 1), ([[1] * 9], 9), ([[4, 4, 4]], 3), ([[0, 4, 0, 0]], 4)]:
        _, p = softmax.softmax_rows(torch.tensor(idx), Cs, 1.0)
        ref = torch.softmax(Cs[torch.tensor(idx)].double(), dim=-1)
        assert (p - ref).abs().max() <= 2 ** -8, idx
    # padding does not count
    _, p = softmax.softmax_rows(torch.tensor([[3, 0, 0]]), Cs, 1.0,
                                valid=torch.tensor([[True, False, False]]))
    assert p[0, 1:].tolist() == [0, 0] and abs(float(p[0, 0]) - 1) <= 2 ** -8
    with pytest.raises(ValueError, match="at least one valid element"):
        softmax.softmax_rows(torch.tensor([[1]]), Cs, 1.0, valid=torch.tensor([[False]]))


def test_softmax_argmax_kept_where_float_is_unambiguous():
    g = torch.Generator().manual_seed(2)
    Cs = codebook(g)
    idx = torch.randint(0, 16, (500, 20), generator=g)
    _, p = softmax.softmax_rows(idx, Cs, 0.05)
    # distinct maxima are distinct indices: the arg max over probabilities is the max index
    top = Cs[idx].max(1, keepdim=True).values == Cs[idx]
    assert top.gather(1, p.argmax(1, keepdim=True)).all()


def test_layernorm_and_rmsnorm_close_to_float():
    g = torch.Generator().manual_seed(3)
    C = codebook(g)
    idx = torch.randint(0, 16, (100, 384), generator=g)
    x = C[idx].double()
    _, _, ln = norm.norm_rows(idx, C, "layernorm")
    ref = (x - x.mean(1, keepdim=True)) / x.std(1, unbiased=False, keepdim=True)
    # rsqrt table with 2**8 intervals over [1, 4): relative error <= 0.3%, plus output rounding
    assert ((ln - ref).abs() <= ref.abs() * 3e-3 + 2 ** -norm.OUT_FRAC).all()
    _, _, rms = norm.norm_rows(idx, C, "rmsnorm")
    ref = x / x.pow(2).mean(1, keepdim=True).sqrt()
    assert ((rms - ref).abs() <= ref.abs() * 3e-3 + 2 ** -norm.OUT_FRAC).all()


def test_norm_edge_rows():
    C = torch.tensor([-7, 0, 3, 9])
    for kind in ("layernorm", "rmsnorm"):
        _, out, _ = norm.norm_rows(torch.tensor([[2, 2, 2, 2]]), C, kind)
        if kind == "layernorm":
            assert out.tolist() == [[0, 0, 0, 0]]       # a constant row has no spread
        _, out, _ = norm.norm_rows(torch.tensor([[1]]), C, kind)
        assert out.tolist() == [[0]]                     # zero input, zero variance
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'"):
        norm.norm_rows(torch.tensor([[1]]), C, "batchnorm")


def test_affine_folding_is_exact_in_float():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(50, 384, generator=g, dtype=torch.float64)
    gain, beta = torch.rand(384, generator=g, dtype=torch.float64) + 0.5, torch.randn(384, generator=g, dtype=torch.float64)
    W, b = torch.randn(1536, 384, generator=g, dtype=torch.float64), torch.randn(1536, generator=g, dtype=torch.float64)
    W2, b2 = norm.fold_affine(gain, beta, W, b)
    assert torch.allclose((gain * z + beta) @ W.T + b, z @ W2.T + b2, rtol=1e-12, atol=1e-10)


@pytest.mark.parametrize("name", sorted(lut.FUNCTIONS))
def test_elementwise_tables(name):
    g = torch.Generator().manual_seed(5)
    Ca_in, Ca_out = codebook(g), codebook(g)
    s_in, s_out = 0.02, 0.03
    table = lut.table_to_index(name, Ca_in, s_in, Ca_out, s_out)
    f = lut.FUNCTIONS[name](Ca_in.double() * s_in)
    # brute force: nearest output centroid of f, exact ties to the upper one
    d = (f[:, None] - Ca_out.double()[None, :] * s_out).abs()
    best = d.min(1, keepdim=True).values
    ref = torch.where(d <= best + 1e-12, torch.arange(16), -1).max(1).values
    assert torch.equal(table, ref)
    idx = torch.randint(0, 16, (1000,), generator=g)
    assert torch.equal(lut.apply(table, idx), ref[idx])


def test_fixed_tables_and_errors():
    Ca = torch.tensor([-100, -10, 0, 10, 100])
    t = lut.table_to_fixed("exp", Ca, 0.01, out_frac_bits=12)
    assert torch.allclose(t.double() / 2 ** 12, torch.exp(Ca.double() * 0.01), atol=2 ** -13)
    with pytest.raises(ValueError, match="exp table overflows 16 bits"):
        lut.table_to_fixed("exp", Ca, 0.1, out_frac_bits=14)
    with pytest.raises(ValueError, match="unknown function 'tanh'"):
        lut.table_to_fixed("tanh", Ca, 0.1, 8)
