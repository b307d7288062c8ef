"""1-D K-Means: a true Lloyd fixed point, deterministic, fast, and clear errors."""


import pytest
import torch

from golden.kmeans import assign, kmeans1d


def is_lloyd_fixed_point(x, w, c, idx):
    """Every value at its nearest centroid, every centroid the weighted mean of its values."""
    for r in range(x.shape[0]):
        d = (x[r, :, None] - c[r, None, :]).abs()
        assert torch.allclose(d.gather(1, idx[r, :, None]).squeeze(1), d.min(1).values)
        for j in range(c.shape[1]):
            sel = idx[r] == j
            if sel.any():
                mean = (x[r, sel] * w[r, sel]).sum() / w[r, sel].sum()
                assert torch.isclose(c[r, j], mean, rtol=1e-9, atol=1e-12), (r, j)


def test_fixed_point_unweighted_and_weighted():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 300, generator=g, dtype=torch.float64) ** 3
    c, idx = kmeans1d(x, 8)
    assert (c[:, 1:] > c[:, :-1]).all()
    is_lloyd_fixed_point(x, torch.ones_like(x), c, idx)
    w = torch.rand(6, 300, generator=g, dtype=torch.float64) + 0.1
    cw, idxw = kmeans1d(x, 8, w)
    is_lloyd_fixed_point(x, w, cw, idxw)
    assert not torch.allclose(c, cw)  # weighting changes the answer


def test_deterministic_and_vector_input():
    x = torch.linspace(-1, 1, 1000) ** 3
    a, ia = kmeans1d(x, 16)
    b, ib = kmeans1d(x.clone(), 16)
    assert torch.equal(a, b) and torch.equal(ia, ib) and a.shape == (16,)


def test_assign_ties_go_up():
    c = torch.tensor([[0.0, 2.0]])
    assert assign(torch.tensor([[0.9, 1.0, 1.1]]), c).tolist() == [[0, 1, 1]]


def test_errors_name_the_tensor():
    with pytest.raises(ValueError, match="W holds 1 non-finite value"):
        kmeans1d(torch.tensor([[1.0, float("nan"), 2.0]]), 2, name="W")
    with pytest.raises(ValueError, match="W: row 1 has 3 distinct value\\(s\\), fewer than the 4 centroids"):
        kmeans1d(torch.tensor([[1.0, 2, 3, 4, 5], [1.0, 1, 2, 3, 3]]), 4, name="W")
