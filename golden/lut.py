"""Index-domain elementwise functions: a 2**ba-entry table per function (docs/ARCHITECTURE.md).

An input quantized with a 2**ba-entry codebook takes only 2**ba values, so
``f`` is exact on them: ``table[j] = f(c_in[j])``, stored either as an
index into the output codebook (index -> index) or as a fixed-point number
(index -> fixed point).  The table is built once per layer by the host.
"""

import math

import torch

from golden.quantizer import quantize, thresholds_from_codebook

__all__ = ["FUNCTIONS", "table_to_index", "table_to_fixed", "apply", "table_writes"]

FUNCTIONS = {
    "gelu": lambda v: 0.5 * v * (1.0 + torch.erf(v / math.sqrt(2.0))),
    "silu": lambda v: v * torch.sigmoid(v),
    "exp": torch.exp,
}


def _function(name):
    try:
        return FUNCTIONS[name]
    except KeyError:
        raise ValueError(f"unknown function {name!r} (functions: {', '.join(FUNCTIONS)})") from None


def table_to_index(name, Ca_in, s_in, Ca_out, s_out):
    """index -> index table: ``f`` of each input centroid, requantized by the output
    codebook's threshold rule (nearest output centroid, ties up).

    ``Ca_*`` are sorted integer centroids, ``s_*`` their scales.  The output
    centroids are expressed in a fixed-point unit 2**-16 of ``s_out`` for
    the comparison, so the rounding of ``f`` costs nothing visible.
    """
    f = _function(name)
    v = f(Ca_in.double() * s_in)                       # exact f at the 2**ba inputs
    frac = 16
    fixed = torch.round(v / s_out * 2 ** frac).long()
    return quantize(fixed, thresholds_from_codebook(Ca_out.long() << frac))


def table_to_fixed(name, Ca_in, s_in, out_frac_bits, out_bits=16):
    """index -> fixed-point table: ``round(f(c_j) * 2**out_frac_bits)``, saturated."""
    f = _function(name)
    q = 2 ** (out_bits - 1)
    fixed = torch.round(f(Ca_in.double() * s_in) * 2 ** out_frac_bits)
    if (fixed.abs() >= q).any():
        raise ValueError(f"{name} table overflows {out_bits} bits with {out_frac_bits} "
                         f"fraction bits: choose fewer fraction bits")
    return fixed.long()


def apply(table, idx):
    """The unit's whole job: one table lookup per element."""
    return table[idx.long()]


def table_writes(table, out_width):
    """The host's ``(address, bits)`` writes that load ``table`` into :mod:`hdl.lut`
    (two's complement bits of ``out_width``); refuses entries that do not fit."""
    values = torch.as_tensor(table).flatten().tolist()
    lo, hi = -(1 << (out_width - 1)), (1 << out_width) - 1
    bad = [v for v in values if v < lo or v > hi]
    if bad:
        raise ValueError(f"table entry {bad[0]} does not fit out_width={out_width} bits")
    return [(j, v & ((1 << out_width) - 1)) for j, v in enumerate(values)]
