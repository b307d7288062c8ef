"""K-Means in one dimension, exact and vectorized over rows (channels).

In 1-D the clusters of a Lloyd iteration are contiguous runs of the sorted
values, split at the midpoints between neighbouring centroids.  So each row
is sorted once; an iteration finds the split positions by binary search and
takes every cluster's (weighted) mean from prefix sums, for all rows at once.
No value is reassigned one by one.
"""

import torch

from golden.minilm import LINEARS, load_minilm

__all__ = ["kmeans1d", "assign", "check_finite"]


def check_finite(t, name):
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} holds {bad} non-finite value(s) (NaN or infinity)")


def assign(x, centroids):
    """Index of the nearest of the sorted ``centroids`` (R, k) for every x (R, C).

    An exact tie goes to the upper centroid, as in the activation quantizer.
    """
    mids = (centroids[:, 1:] + centroids[:, :-1]) / 2
    return torch.searchsorted(mids.contiguous(), x.contiguous(), right=True)


def kmeans1d(x, k, weights=None, *, iters=100, name="x"):
    """Fit ``k`` centroids to every row of ``x`` (R, C).

    Parameters
    ----------
    x : tensor (R, C) or (C,)
        Values; one codebook per row.
    k : int
        Centroids per row.  Every row needs at least ``k`` distinct values.
    weights : tensor broadcastable to x, optional
        Non-negative importance of each value (sensitivity weighting).
    iters : int
        Upper bound on Lloyd iterations; stops earlier once no split moves.

    Returns ``(centroids, index)``: centroids (R, k) sorted ascending, and the
    index of each value's nearest centroid (R, C).  Deterministic: the start
    is the weighted quantiles of each row, not a random draw.
    """
    squeeze = x.dim() == 1
    x = x.reshape(1, -1) if squeeze else x
    x = x.double()
    check_finite(x, name)
    R, C = x.shape
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    w = torch.ones_like(x) if weights is None else torch.broadcast_to(
        torch.as_tensor(weights, dtype=torch.float64), x.shape).clone()
    check_finite(w, f"weights of {name}")
    if (w < 0).any():
        raise ValueError(f"weights of {name} must be non-negative")
    xs, order = x.sort(dim=1)
    distinct = 1 + (xs[:, 1:] != xs[:, :-1]).sum(dim=1)
    if int(distinct.min()) < k:
        row = int(distinct.argmin())
        raise ValueError(f"{name}: row {row} has {int(distinct[row])} distinct value(s), "
                         f"fewer than the {k} centroids requested")
    ws = w.gather(1, order) + 1e-12  # a zero-weight run still gets a defined mean
    zero = torch.zeros(R, 1, dtype=x.dtype)
    cw = torch.cat([zero, ws.cumsum(1)], 1)
    cwx = torch.cat([zero, (ws * xs).cumsum(1)], 1)

    # start: weighted quantiles
    targets = cw[:, -1:] * (torch.arange(k, dtype=x.dtype) + 0.5) / k
    pos = torch.searchsorted(cw[:, 1:].contiguous(), targets.contiguous()).clamp(max=C - 1)
    c = xs.gather(1, pos)
    c = _spread(c, xs)

    # Lloyd iterations on the rows whose splits still move (most settle in a few
    # steps); the working tensors are compacted only when rows drop out.
    active = torch.arange(R)
    xa, cwa, cwxa, ca = xs, cw, cwx, c
    ends = torch.full((R, k), -1, dtype=torch.long)
    for _ in range(iters):
        mids = (ca[:, 1:] + ca[:, :-1]) / 2
        # cluster j holds sorted positions [e_{j-1}, e_j): values below the next midpoint
        new_ends = torch.cat([torch.searchsorted(xa, mids.contiguous(), right=False),
                              torch.full((len(active), 1), C)], 1)
        moved = (new_ends != ends).any(dim=1)
        if not moved.any():
            break
        if not moved.all():
            c[active[~moved]] = ca[~moved]
            active, xa, cwa, cwxa, ca, new_ends = (
                t[moved] for t in (active, xa, cwa, cwxa, ca, new_ends))
        ends = new_ends
        starts = torch.cat([torch.zeros(len(active), 1, dtype=torch.long), ends[:, :-1]], 1)
        wsum = cwa.gather(1, ends) - cwa.gather(1, starts)
        xsum = cwxa.gather(1, ends) - cwxa.gather(1, starts)
        ca = torch.where(ends > starts, xsum / wsum.clamp(min=1e-300), ca)
        ca = _spread(ca.sort(dim=1).values, xa)
    c[active] = ca
    idx = assign(x, c)
    if squeeze:
        return c[0], idx[0]
    return c, idx


def _spread(c, xs):
    """Keep centroids distinct: a repeated centroid moves to the next distinct data value."""
    for _ in range(c.shape[1]):
        dup = torch.zeros_like(c, dtype=torch.bool)
        dup[:, 1:] = c[:, 1:] <= c[:, :-1]
        if not dup.any():
            break
        # next data value above the previous centroid
        prev = torch.cat([c[:, :1] - 1, c[:, :-1]], 1)
        nxt_pos = torch.searchsorted(xs.contiguous(), prev.contiguous(), right=True).clamp(max=xs.shape[1] - 1)
        c = torch.where(dup, xs.gather(1, nxt_pos), c)
    return c


def benchmark(bits=4, threads=2):
    """Seconds to fit every weight matrix of all-MiniLM-L6-v2 (``python -m golden.kmeans``)."""
    import time

    torch.set_num_threads(threads)
    m = load_minilm()
    Ws = [m.weight(i, n) for i in range(m.layers) for n in LINEARS]
    t = time.perf_counter()
    for W in Ws:
        kmeans1d(W, 2 ** bits)
    return len(Ws), time.perf_counter() - t


if __name__ == "__main__":
    import argparse
    p = argparse.ArgumentParser(description="Benchmark: K-Means codebooks for every MiniLM weight matrix")
    p.add_argument("--bits", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    times = []
    for _ in range(a.repeat):
        n, t = benchmark(a.bits, a.threads)
        times.append(t)
    print(f"{n} matrices at {a.bits} bits, {a.threads} threads: "
          f"best {min(times):.2f} s, median {sorted(times)[len(times) // 2]:.2f} s of {a.repeat}")
