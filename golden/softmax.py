"""Softmax of an index-quantized row from its histogram.

A row of scores quantized with a sorted codebook ``Cs`` (integers, scale
``ss``) has at most 2**ba distinct values.  Per row:

1. ``m`` = the largest index present (the row maximum: subtracting it keeps
   every exponent <= 0, so the exp table needs no positive half);
2. ``h[j]`` = how many elements have index j (the histogram);
3. ``E[j] = round(2**EXP_FRAC * exp((Cs[j] - Cs[m]) * ss))``, a 2**ba-entry
   table relative to the maximum (``E[m] = 2**EXP_FRAC``);
4. ``D = sum_j h[j] * E[j]`` (integer; ``D >= 2**EXP_FRAC``);
5. ``1 / D`` by a normalized lookup: ``D = 2**e * (1 + f)``, ``f`` in [0, 1),
   the top ``RECIP_ADDR`` bits of ``f`` address
   ``RECIP[i] = round(2**RECIP_FRAC / (1 + (i + 0.5) / 2**RECIP_ADDR))``;
6. each element's probability ``p = (E[idx] * RECIP[i]) >> (RECIP_FRAC + e - OUT_FRAC)``,
   an unsigned fixed-point number with OUT_FRAC fraction bits.

Precisions: E has EXP_FRAC + 1 bits; D has EXP_FRAC + 1 + ceil(log2(n))
bits for a row of n elements; RECIP has RECIP_FRAC + 1 bits; p has
OUT_FRAC + 1 bits.  The reciprocal's relative error is at most about
2**-(RECIP_ADDR + 1) (the mid-point of each table interval), which bounds
the error of every probability.
"""

import torch

from base import formats
from base.formats import BASE_EXP_ADDR, BASE_STEP_FRAC, EXP_FRAC, RECIP_ADDR, RECIP_FRAC
from base.formats import SOFTMAX_OUT_FRAC as OUT_FRAC

__all__ = ["EXP_FRAC", "RECIP_ADDR", "RECIP_FRAC", "OUT_FRAC", "exp_table", "recip_table",
           "softmax_rows", "softmax_rows_table", "exp_table_writes"]


def exp_table(Cs, ss, m):
    """E[j] relative to the maximum index ``m`` (a tensor of row maxima, shape (R,))."""
    d = (Cs.double()[None, :] - Cs.double()[m][:, None]) * ss      # <= 0 for j <= m
    return torch.round(torch.exp(d.clamp(max=0)) * 2 ** EXP_FRAC).long()


def recip_table():
    """The normalized reciprocal table (:func:`base.formats.recip_table`) as a tensor."""
    return torch.tensor(formats.recip_table(), dtype=torch.long)


def softmax_rows(idx, Cs, ss, valid=None):
    """Fixed-point probabilities (R, n) of rows of indices ``idx`` (R, n).

    ``valid`` (R, n) bool marks real elements (others get probability 0 and
    take no part in the histogram).  Returns ``(p_int, p_float)`` with
    ``p_float = p_int / 2**OUT_FRAC``.
    """
    J = Cs.numel()
    return softmax_rows_table(idx, exp_table(Cs, ss, torch.arange(J)), valid)


def softmax_rows_table(idx, table, valid=None):
    """:func:`softmax_rows` with the exp table given: ``table[m, j]`` = E[j] for a row whose
    maximum index is ``m`` (J x J, :func:`exp_table` of every ``m``, as the host loads it)."""
    idx = idx.long()
    table = torch.as_tensor(table).long()
    R, n = idx.shape
    J = table.shape[-1]
    valid = torch.ones_like(idx, dtype=torch.bool) if valid is None else valid.bool()
    if not valid.any(dim=1).all():
        raise ValueError("every row needs at least one valid element")
    m = torch.where(valid, idx, -1).amax(dim=1)                        # row maximum
    h = torch.zeros(R, J, dtype=torch.long).scatter_add_(1, idx, valid.long())
    E = table[m]                                                      # (R, J)
    D = (h * E).sum(dim=1)                                            # (R,)
    e = torch.tensor([int(d).bit_length() - 1 for d in D.tolist()])
    # top RECIP_ADDR bits below the leading one
    frac_bits = torch.where(e >= RECIP_ADDR, D >> (e - RECIP_ADDR).clamp(min=0),
                            D << (RECIP_ADDR - e).clamp(min=0))
    i = frac_bits - 2 ** RECIP_ADDR
    r = recip_table()[i]
    num = E.gather(1, idx) * r[:, None]
    sh = RECIP_FRAC + e - OUT_FRAC                                    # >= 1 since D >= 2**EXP_FRAC
    p = num >> sh[:, None]
    p = torch.where(valid, p, 0)
    return p, p.double() / 2 ** OUT_FRAC


def exp_table_writes(Cs, ss):
    """The host's ``(address, value)`` writes of the unit's exp table: ``E[m][j]`` at
    address ``m * 2**ba + j`` for every possible row maximum ``m`` (entries ``j > m``
    are never read; they hold ``exp(0)``)."""
    J = Cs.numel()
    E = exp_table(Cs, ss, torch.arange(J))
    return [(m * J + j, int(E[m, j])) for m in range(J) for j in range(J)]


# ------------------------------------------------ conventional fixed-point baseline

def baseline_exp_table():
    """The baseline's exp table (:func:`base.formats.baseline_exp_table`) as a tensor:
    one entry per 2**-BASE_STEP_FRAC of ``max - x`` (exp(-16) rounds to 0)."""
    return torch.tensor(formats.baseline_exp_table(), dtype=torch.long)


def softmax_baseline_rows(x, frac):
    """Golden twin of :class:`hdl.softmax.SoftmaxBaseline`: conventional fixed-point softmax
    of rows ``x`` (R, n) of signed integers with ``frac`` fraction bits (``frac >=
    BASE_STEP_FRAC``).

    Per element: ``d = max - x`` (exact), ``a = min(d >> (frac - BASE_STEP_FRAC),
    2**BASE_EXP_ADDR - 1)`` (truncated to steps of 2**-6, saturated), ``E =
    EXP[a]``; then ``D = sum E``, the same normalized reciprocal and output as
    :func:`softmax_rows`.  Returns ``(p_int, p_float)``.
    """
    if frac < BASE_STEP_FRAC:
        raise ValueError(f"frac must be >= {BASE_STEP_FRAC}, got {frac}")
    x = x.long()
    d = x.amax(1, keepdim=True) - x
    a = (d >> (frac - BASE_STEP_FRAC)).clamp(max=2 ** BASE_EXP_ADDR - 1)
    E = baseline_exp_table()[a]
    D = E.sum(1)
    e = torch.tensor([int(v).bit_length() - 1 for v in D.tolist()])
    i = ((D << RECIP_ADDR) >> e) - 2 ** RECIP_ADDR
    r = recip_table()[i]
    p = (E * r[:, None]) >> (RECIP_FRAC + e - OUT_FRAC)[:, None]
    return p, p.double() / 2 ** OUT_FRAC
