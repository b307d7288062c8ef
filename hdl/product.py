"""Binary product table: a pair of indices in, one entry of a 2**ba x 2**ba table out.

Golden twin: :mod:`golden.product`.  Configuration: :class:`base.config.ProductConfig`.
"""

from amaranth import Cat, Module, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from base.config import ProductConfig
from hdl.component import ConfiguredComponent, write_signature
from hdl.lut import table_pipeline

__all__ = ["ProductTable"]


class ProductTable(ConfiguredComponent):
    """``y = table[a][b]`` per lane: a binary elementwise function of two index streams.

    Both operands are K-Means indices (e.g. the gate and the up projection
    of a SwiGLU FFN), so ``f(a, b)`` (``silu(gate) * up``, or a plain
    product) takes at most 4**ba values: the host fills the table with them,
    as fixed point or as indices into the output codebook
    (:func:`golden.product.table_to_fixed`, :func:`golden.product.table_to_index`),
    through the ``tbl`` port at address ``a * 2**ba + b``.  The two operand
    streams arrive joined in one beat (``a`` and ``b`` of P lanes each); an
    upstream join of two streams is ``valid = a.valid & b.valid``.  Every lane
    has its own copy of the table, in LUTRAM.

    Latency and throughput: a beat accepted in cycle ``c`` leaves in cycle
    ``c + L`` when the output is not stalled, ``L = 2`` for ``ba <= 2`` and
    ``L = 2 + ceil((2 ba - 4) / 2) = ba`` above (a table of more than 16
    words is read in banks of 16, then a 4:1 bank selection per stage:
    :func:`hdl.lut.table_pipeline`); one
    beat of P pairs per cycle; ``n`` back-to-back beats take ``n + L`` cycles.  Backpressure stalls the
    whole pipeline.  Framing passes through untouched.

    Parameters
    ----------
    ba : int
        Index bits of each operand (1..6, default 4).
    elems : int
        Pairs per beat, P (1..16, default 4).
    out_width : int
        Bits of a table entry (1..32, default 16).

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
        ``a``, ``b``: P indices of ``ba`` bits each; ``first``/``last``.
    o : Out(stream.Signature(out_layout))
        ``y``: P entries of ``out_width`` bits; ``first``/``last``.
    tbl : In(table write signature)
        ``en``, ``addr`` (``2 ba`` bits: ``a * 2**ba + b``), ``data``.
    """

    Config = ProductConfig

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        ba, lanes, out_width = cfg.ba, cfg.elems, cfg.out_width
        self.in_layout = data.StructLayout({
            "a": data.ArrayLayout(unsigned(ba), lanes),
            "b": data.ArrayLayout(unsigned(ba), lanes), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(unsigned(out_width), lanes), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "tbl": In(write_signature(2 * ba, unsigned(out_width))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        table_pipeline(m, self, cfg.elems, 4 ** cfg.ba, cfg.out_width,
                       lambda s0, p: Cat(s0.b[p], s0.a[p]))
        return m
