"""Number formats and fixed tables that the golden model and the RTL share.

The softmax and norm units (:mod:`golden.softmax`, :mod:`golden.norm` and their RTL
twins in :mod:`hdl.softmax`, :mod:`hdl.norm`) compute in fixed point with the
fraction widths below, and read reciprocal, rsqrt and exp values from tables that
both sides build here, in plain Python, so the hardware needs no PyTorch.
"""

import math

__all__ = ["EXP_FRAC", "RECIP_ADDR", "RECIP_FRAC", "SOFTMAX_OUT_FRAC", "BASE_EXP_ADDR",
           "BASE_STEP_FRAC", "RSQRT_ADDR", "RSQRT_FRAC", "NORM_OUT_FRAC", "recip_table",
           "rsqrt_table", "baseline_exp_table"]

# -- softmax (golden.softmax)
#: Fraction bits of an exp table entry E[j] (E[m] = 2**EXP_FRAC at the row maximum).
EXP_FRAC = 15
#: Address bits of the normalized reciprocal table.
RECIP_ADDR = 8
#: Fraction bits of a reciprocal table entry.
RECIP_FRAC = 16
#: Fraction bits of a probability (unsigned).
SOFTMAX_OUT_FRAC = 15
#: The conventional baseline's exp table: 2**BASE_EXP_ADDR entries, one per
#: 2**-BASE_STEP_FRAC of ``max - x`` (so it spans [0, 16)).
BASE_EXP_ADDR = 10
BASE_STEP_FRAC = 6

# -- LayerNorm / RMSNorm (golden.norm)
#: Address bits of the normalized rsqrt table.
RSQRT_ADDR = 8
#: Fraction bits of an rsqrt table entry.
RSQRT_FRAC = 16
#: Fraction bits of a normalized output (signed).
NORM_OUT_FRAC = 12


def recip_table():
    """``RECIP[i] = round(2**RECIP_FRAC / (1 + (i + 0.5) / 2**RECIP_ADDR))`` (ties to even)."""
    return [round(2 ** RECIP_FRAC / (1 + (i + 0.5) / 2 ** RECIP_ADDR))
            for i in range(2 ** RECIP_ADDR)]


def rsqrt_table():
    """``RSQRT[i] = round(2**RSQRT_FRAC / sqrt(1 + 3 (i + 0.5) / 2**RSQRT_ADDR))``: the
    mid-points of [1, 4)."""
    return [round(2 ** RSQRT_FRAC / math.sqrt(1 + 3 * (i + 0.5) / 2 ** RSQRT_ADDR))
            for i in range(2 ** RSQRT_ADDR)]


def baseline_exp_table():
    """``EXP[a] = round(2**EXP_FRAC exp(-a / 2**BASE_STEP_FRAC))``, the baseline's table."""
    return [round(2 ** EXP_FRAC * math.exp(-a / 2 ** BASE_STEP_FRAC))
            for a in range(2 ** BASE_EXP_ADDR)]
