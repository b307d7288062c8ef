"""hls4ml's LUT-softmax pitfalls, checked on the histogram softmax's golden twin (which the
RTL matches bit for bit; the unused-half case is also checked on the RTL by its bench)."""

import torch

from golden import softmax


def codebook(g, n=16):
    return torch.randperm(256, generator=g)[:n].sub(128).sort().values


def test_reciprocal_table_is_fully_used():
    """The reciprocal is looked up by the normalized denominator, so every entry of the table
    is reachable whatever the row's length or scores (a table addressed by the raw value
    would use only the entries its value range reaches)."""
    g = torch.Generator().manual_seed(0)
    used = torch.zeros(2 ** softmax.RECIP_ADDR, dtype=torch.bool)
    for n, ss in [(n, ss) for n in (1, 3, 40, 384) for ss in (0.01, 0.05, 0.3)]:
        Cs = codebook(g)
        idx = torch.randint(0, 16, (400, n), generator=g)
        m = idx.amax(1)
        h = torch.zeros(400, 16, dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
        D = (h * softmax.exp_table(Cs, ss, m)).sum(1)
        for d in D.tolist():
            e = d.bit_length() - 1
            used[(d << softmax.RECIP_ADDR >> e) - 2 ** softmax.RECIP_ADDR] = True
    assert used.float().mean() > 0.95, f"only {int(used.sum())} of 256 entries used"


def test_inputs_narrow_and_wide_for_the_table():
    """The exp table is indexed by centroid index, not by the score's bits: scores that span a
    tiny range (all exps ~1) or a huge one (all but the maximum underflow to 0) are as exact
    as ordinary ones."""
    g = torch.Generator().manual_seed(1)
    Cs = codebook(g)
    idx = torch.randint(0, 16, (200, 37), generator=g)
    for ss in (1e-5, 1e-3, 10.0):
        _, p = softmax.softmax_rows(idx, Cs, ss)
        ref = torch.softmax(Cs[idx].double() * ss, dim=-1)
        bound = ref * (2 ** -9 + 37 * 2 ** -16) + 2 ** -16 + 2 ** -softmax.OUT_FRAC
        assert ((p - ref).abs() <= bound).all(), ss
    _, p = softmax.softmax_rows(idx, Cs, 1e-5)
    assert ((p - 1 / 37).abs() <= 2 ** -9 / 37 + 2 ** -14).all()        # nearly uniform


def test_argmax_cannot_flip():
    """The probability is a non-decreasing function of the score index (sorted codebook,
    monotone exp table, one reciprocal per row, truncation), so the element of the largest
    score always has the largest probability; only ties can appear."""
    g = torch.Generator().manual_seed(2)
    for ss in (0.01, 0.1, 1.0):
        Cs = codebook(g)
        idx = torch.randint(0, 16, (300, 50), generator=g)
        p, _ = softmax.softmax_rows(idx, Cs, ss)
        order = idx.argsort(1)
        ps = p.gather(1, order)
        assert (ps[:, 1:] >= ps[:, :-1]).all()
        top = idx.argmax(1, keepdim=True)
        assert (p.gather(1, top) == p.amax(1, keepdim=True)).all()
