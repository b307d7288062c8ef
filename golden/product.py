"""Binary product table: ``f(a, b)`` of two index-quantized operands (docs/ARCHITECTURE.md).

Two operands quantized with codebooks ``Ca`` (scale ``sa``) and ``Cb``
(scale ``sb``) take at most ``2**ba x 2**ba`` value pairs, so any binary
elementwise function is one table: ``T[a][b] = f(Ca[a] sa, Cb[b] sb)``,
stored as fixed point or as an index into an output codebook.  The SwiGLU
FFN's ``silu(gate) * up`` is the case that matters; ``mul`` is the plain
product.  Golden twin of :mod:`hdl.product`; the host writes the flattened
table (address ``a * 2**ba + b``) through the unit's table port.
"""

import torch

from golden.lut import FUNCTIONS
from golden.quantizer import quantize, thresholds_from_codebook

__all__ = ["BINARY", "table_to_fixed", "table_to_index", "apply", "table_writes"]

BINARY = {
    "mul": lambda a, b: a * b,
    "swiglu": lambda a, b: FUNCTIONS["silu"](a) * b,
}


def _values(name, Ca, sa, Cb, sb):
    try:
        f = BINARY[name]
    except KeyError:
        raise ValueError(f"unknown binary function {name!r} (functions: {', '.join(BINARY)})") from None
    return f(Ca.double()[:, None] * sa, Cb.double()[None, :] * sb)


def table_to_fixed(name, Ca, sa, Cb, sb, out_frac_bits, out_bits=16):
    """``round(f(a, b) * 2**out_frac_bits)``, (2**ba, 2**ba) signed integers; refuses overflow."""
    fixed = torch.round(_values(name, Ca, sa, Cb, sb) * 2 ** out_frac_bits)
    if (fixed.abs() >= 2 ** (out_bits - 1)).any():
        raise ValueError(f"{name} table overflows {out_bits} bits with {out_frac_bits} "
                         f"fraction bits: choose fewer fraction bits")
    return fixed.long()


def table_to_index(name, Ca, sa, Cb, sb, Cout, sout):
    """Index of the nearest output centroid (ties up), as :func:`golden.lut.table_to_index`."""
    frac = 16
    fixed = torch.round(_values(name, Ca, sa, Cb, sb) / sout * 2 ** frac).long()
    return quantize(fixed, thresholds_from_codebook(Cout.long() << frac))


def apply(table, a, b):
    """The unit's whole job: one lookup per pair."""
    return table[a.long(), b.long()]


def table_writes(table, out_width):
    """The host's ``(address, bits)`` writes: address ``a * 2**ba + b``, two's complement bits."""
    flat = table.flatten().tolist()
    lo, hi = -(1 << (out_width - 1)), (1 << out_width) - 1
    if any(v < lo or v > hi for v in flat):
        raise ValueError(f"table entries do not fit {out_width} bits")
    return [(k, v & ((1 << out_width) - 1)) for k, v in enumerate(flat)]
