"""LayerNorm / RMSNorm of an index-quantized row from its histogram.

A row of n elements quantized with a sorted codebook ``C`` (integers, scale
``s``) is described by its histogram ``h``.  With ``S1 = sum_j h[j] C[j]``
and ``S2 = sum_j h[j] C[j]**2`` (exact integers):

* LayerNorm: ``(c - mean) / std = (n c - S1) / sqrt(V)`` with
  ``V = n S2 - S1**2`` (an integer, >= 0);
* RMSNorm: ``c / rms = n' c / sqrt(V)`` with ``V = n S2`` and ``n' = n``
  (so ``c / sqrt(S2 / n) = n c / sqrt(n S2)``).

``1 / sqrt(V)`` comes from a normalized lookup: ``V = 4**e * v`` with ``v``
in [1, 4), the top ``RSQRT_ADDR`` bits of ``v`` (below its 2-bit integer
part) address ``RSQRT[i] = round(2**RSQRT_FRAC / sqrt(1 + 3 (i + 0.5) / 2**RSQRT_ADDR))``.
The row's output is a 2**ba-entry remap table
``T[j] = ((n C[j] - S1) * RSQRT[i]) >> (RSQRT_FRAC + e - OUT_FRAC)``, a signed
fixed-point number with OUT_FRAC fraction bits, applied to every element.
A row whose values are all equal (V = 0) maps to 0.

The per-channel gain and bias are not applied here: the golden model folds
them into the next linear layer (:func:`fold_affine`).
"""

import torch

from base import formats
from base.formats import NORM_OUT_FRAC as OUT_FRAC
from base.formats import RSQRT_ADDR, RSQRT_FRAC

__all__ = ["RSQRT_ADDR", "RSQRT_FRAC", "OUT_FRAC", "rsqrt_table", "norm_rows", "fold_affine",
           "codebook_writes", "norm_rows_outliers"]


def rsqrt_table():
    """The normalized rsqrt table (:func:`base.formats.rsqrt_table`) as a tensor."""
    return torch.tensor(formats.rsqrt_table(), dtype=torch.long)


def norm_rows(idx, C, kind="layernorm"):
    """``(T_int, out_int, out_float)``: per-row remap tables (R, 2**ba), the output of
    every element (R, n) as integers and as floats (``/ 2**OUT_FRAC``)."""
    if kind not in ("layernorm", "rmsnorm"):
        raise ValueError(f"unknown norm {kind!r} (layernorm or rmsnorm)")
    idx = idx.long()
    R, n = idx.shape
    C = C.long()
    h = torch.zeros(R, C.numel(), dtype=torch.long).scatter_add_(1, idx, torch.ones_like(idx))
    S1 = (h * C).sum(1)
    S2 = (h * C * C).sum(1)
    if kind == "layernorm":
        V = n * S2 - S1 * S1
        num = n * C[None, :] - S1[:, None]
    else:
        V = n * S2
        num = n * C[None, :].expand(R, -1)
    T = torch.zeros(R, C.numel(), dtype=torch.long)
    table = rsqrt_table()
    for r, v in enumerate(V.tolist()):
        if v == 0:
            continue
        e = (v.bit_length() - 1) // 2                # V = 4**e * v', v' in [1, 4)
        # v' has 2 integer bits; its RSQRT_ADDR bits below them, as an index into [1, 4)
        top = v >> (2 * e - RSQRT_ADDR) if 2 * e >= RSQRT_ADDR else v << (RSQRT_ADDR - 2 * e)
        i = min(int((top - 2 ** RSQRT_ADDR) // 3), 2 ** RSQRT_ADDR - 1)
        sh = RSQRT_FRAC + e - OUT_FRAC
        prod = num[r] * int(table[i])
        T[r] = prod >> sh if sh >= 0 else prod << -sh
    out = T.gather(1, idx)
    return T, out, out.double() / 2 ** OUT_FRAC


def fold_affine(gain, bias, W, b):
    """A linear layer ``W (g * z + beta) + b`` rewritten as ``W' z + b'``: exact in float."""
    return W * gain[None, :], W @ bias + b


def codebook_writes(C, cw):
    """The host's ``(address, bits)`` writes of the norm unit's codebook (``cw``-bit two's
    complement); refuses centroids that do not fit."""
    values = torch.as_tensor(C).flatten().tolist()
    lo, hi = -(1 << (cw - 1)), (1 << (cw - 1)) - 1
    bad = [v for v in values if not lo <= v <= hi]
    if bad:
        raise ValueError(f"centroid {bad[0]} does not fit cw={cw} signed bits")
    return [(j, v & ((1 << cw) - 1)) for j, v in enumerate(values)]


def norm_values_rows(x, kind="layernorm"):
    """Golden twin of :class:`hdl.norm.NormBaseline`: the same arithmetic as
    :func:`norm_rows` on the values themselves (a conventional fixed-point
    LayerNorm / RMSNorm: sum and sum of squares, one rsqrt per row, then
    ``((n x - S1) r) >> (RSQRT_FRAC + e - OUT_FRAC)`` per element).

    Each row of integers is its own codebook, so this is :func:`norm_rows`
    with the identity index; returns the output integers (R, n) and floats.
    """
    x = x.long()
    R, n = x.shape
    out = torch.zeros(R, n, dtype=torch.long)
    for r in range(R):
        C = x[r]
        _, o, _ = norm_rows(torch.arange(n)[None, :], C, kind)
        out[r] = o[0]
    return out, out.double() / 2 ** OUT_FRAC


def norm_rows_outliers(idx, c, x=None, mask=None, kind="layernorm"):
    """LayerNorm / RMSNorm of rows whose elements are centroids ``c[idx]`` except the
    outliers (``mask``), which keep their exact values ``x`` (dense-and-sparse, as the
    linear layers' inputs): ``S1`` and ``S2`` count every element at its value, the
    rsqrt lookup is :func:`norm_rows`'s, and each element's output is
    ``((n v - S1) * RSQRT[i]) >> (RSQRT_FRAC + e - OUT_FRAC)``.  With no outliers this
    is :func:`norm_rows` exactly (the tests check it).  ``c`` and ``x`` are integers in
    the same units.  Returns the output integers (R, n)."""
    if kind not in ("layernorm", "rmsnorm"):
        raise ValueError(f"unknown norm {kind!r} (layernorm or rmsnorm)")
    idx = idx.long()
    R, n = idx.shape
    v = torch.as_tensor(c).long()[idx]
    if mask is not None:
        v = torch.where(mask, x.long(), v)
    S1 = v.sum(1)
    S2 = (v * v).sum(1)
    if kind == "layernorm":
        V = n * S2 - S1 * S1
        num = n * v - S1[:, None]
    else:
        V = n * S2
        num = n * v
    out = torch.zeros(R, n, dtype=torch.long)
    table = rsqrt_table()
    for r, val in enumerate(V.tolist()):
        if val == 0:
            continue
        e = (val.bit_length() - 1) // 2
        top = val >> (2 * e - RSQRT_ADDR) if 2 * e >= RSQRT_ADDR else val << (RSQRT_ADDR - 2 * e)
        i = min(int((top - 2 ** RSQRT_ADDR) // 3), 2 ** RSQRT_ADDR - 1)
        sh = RSQRT_FRAC + e - OUT_FRAC
        prod = num[r] * int(table[i])
        out[r] = prod >> sh if sh >= 0 else prod << -sh
    return out
