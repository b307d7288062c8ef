"""The golden top-k: checked against torch.topk and an independent key sort."""

import random

import pytest
import torch

from golden.orizuru import EMPTY, result, topk, topk_reference
from base.config import OrizuruConfig


def test_matches_torch_topk_on_distinct_values():
    """Distinct values: no tie to break, so torch.topk must agree on values and positions."""
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        n = int(torch.randint(1, 400, (1,), generator=g))
        k = int(torch.randint(1, 65, (1,), generator=g))
        x = torch.randperm(4 * n, generator=g)[:n] - 2 * n
        top, bot = topk(x, k)
        kk = min(k, n)
        t = torch.topk(x, kk, largest=True, sorted=True)
        b = torch.topk(x, kk, largest=False, sorted=True)
        assert top == list(zip(t.values.tolist(), t.indices.tolist()))
        assert bot == list(zip(b.values.tolist(), b.indices.tolist()))


def test_values_match_torch_topk_with_ties_and_positions_follow_the_tie_rule():
    rng = random.Random(1)
    for _ in range(300):
        n = rng.randint(1, 60)
        k = rng.randint(1, 20)
        x = [rng.randint(-3, 3) for _ in range(n)]
        top, bot = topk(x, k)
        kk = min(k, n)
        assert [v for v, _ in top] == torch.topk(torch.tensor(x), kk).values.tolist()
        assert [v for v, _ in bot] == torch.topk(torch.tensor(x), kk, largest=False).values.tolist()
        assert (top, bot) == topk_reference(x, k)
        for side in (top, bot):      # among equal values the lower position comes first
            for (v1, p1), (v2, p2) in zip(side, side[1:]):
                assert v1 != v2 or p1 < p2


def test_edge_cases():
    assert topk([5, 5, 5], 2) == ([(5, 0), (5, 1)], [(5, 0), (5, 1)])
    assert topk([7], 4) == ([(7, 0)], [(7, 0)])                    # k larger than the vector
    assert topk([], 3) == ([], [])                                  # empty vector
    assert topk([1, 2, 3], 3) == ([(3, 2), (2, 1), (1, 0)], [(1, 0), (2, 1), (3, 2)])  # n < 2k
    with pytest.raises(ValueError, match="k must be a positive integer, got 0"):
        topk([1], 0)
    with pytest.raises(TypeError, match="values must hold integers"):
        topk([0.5], 1)


def test_result_beat_pads_and_refuses():
    cfg = OrizuruConfig(width=8, elems=2, k=3, max_len=4)
    r = result(cfg, [-128, 127])
    assert r == {"top": [(127, 1, 1), (-128, 0, 1), EMPTY], "bot": [(-128, 0, 1), (127, 1, 1), EMPTY]}
    assert result(cfg, []) == {"top": [EMPTY] * 3, "bot": [EMPTY] * 3}
    with pytest.raises(ValueError, match="a vector of 5 values is longer than max_len=4"):
        result(cfg, [0] * 5)
    with pytest.raises(ValueError, match="8-bit signed range -128..127"):
        result(cfg, [128])


def test_the_scheme_selects_the_outliers_orizuru_returns():
    """golden.quant.top_outliers (the accuracy model) and the unit's twin pick the same
    positions, ties included: rows of few distinct values force ties at the cut."""
    from golden.quant import top_outliers

    g = torch.Generator().manual_seed(3)
    for k in (1, 3, 8):
        x = torch.randint(-4, 5, (50, 40), generator=g)
        mask = top_outliers(x, k)
        for row, m in zip(x, mask):
            top, bot = topk(row, k)
            assert set(torch.nonzero(m).flatten().tolist()) == {p for _, p in top + bot}


def test_real_vectors_are_real_and_fit_the_format():
    from golden.orizuru import real_vectors

    v = real_vectors(8, 100, n=6)
    assert len(v) == 6 and all(len(x) == 100 for x in v)
    flat = torch.tensor(v)
    assert flat.abs().max() <= 127
    # real activations: a heavy tail (the largest magnitude far above the typical one)
    assert float(flat.abs().max()) > 8 * float(flat.abs().float().median())
