"""Elementwise table: index in, table entry out (index -> index or index -> fixed point).

Golden twin: :mod:`golden.lut`.  Configuration: :class:`kllm.config.LutConfig`.
"""

from amaranth import Module, Signal, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from kllm.config import LutConfig

__all__ = ["ElementwiseLut", "table_pipeline"]


def table_pipeline(m, component, lanes, depth, width, addr_of):
    """The pipeline shared by the table units: input register, table read, output register.

    One memory of ``depth`` words per lane, written together through
    ``component.tbl``; lane ``p`` reads address ``addr_of(payload, p)`` of
    the registered input beat with a synchronous read port (enabled when
    the pipeline advances), whose data register is the output register.
    """
    advance = Signal()
    m.d.comb += [
        advance.eq(~component.o.valid | component.o.ready),
        component.i.ready.eq(advance),
    ]
    s0 = Signal(component.in_layout)
    s0_valid = Signal()
    with m.If(advance):
        m.d.sync += [s0_valid.eq(component.i.valid), component.o.valid.eq(s0_valid)]
        m.d.sync += s0.eq(component.i.payload)
        m.d.sync += [component.o.payload.first.eq(s0.first),
                     component.o.payload.last.eq(s0.last)]
    for p in range(lanes):
        mem = memory.Memory(shape=unsigned(width), depth=depth, init=[])
        m.submodules[f"table{p}"] = mem
        wr = mem.write_port()
        rd = mem.read_port(domain="sync")
        m.d.comb += [
            wr.en.eq(component.tbl.en),
            wr.addr.eq(component.tbl.addr),
            wr.data.eq(component.tbl.data),
            rd.en.eq(advance),
            rd.addr.eq(addr_of(s0, p)),
            component.o.payload.y[p].eq(rd.data),
        ]


class ElementwiseLut(wiring.Component):
    """One table lookup per element: ``y = table[idx]``, P lanes, II = 1.

    The 2**ba-entry table holds ``f`` of each input centroid, either as an
    index into the output codebook (``out_width = ba``) or as a fixed-point
    number; the host computes it (:func:`golden.lut.table_to_index`,
    :func:`golden.lut.table_to_fixed`) and writes it through the ``tbl`` port,
    one entry per cycle (``tbl.en``, ``tbl.addr`` = index, ``tbl.data`` =
    entry bits, two's complement for signed entries).  Every lane has its own
    copy of the table (all written together), read by a synchronous port
    (LUTRAM or block RAM plus its output register).  The host writes between
    layers, not while data it cares about is in flight; reset keeps the table.

    Latency and throughput: a beat accepted in cycle ``c`` leaves in cycle
    ``c + 2`` when the output is not stalled (an input register, then the
    table's read register); one beat of P elements per cycle.  ``n``
    back-to-back beats take ``n + 2`` cycles.  Backpressure stalls the whole
    pipeline (``i.ready = ~o.valid | o.ready``).  Framing (``first``,
    ``last``) passes through untouched: every lane is looked up whether or not
    the row fills it.

    Parameters
    ----------
    ba : int
        Index bits (1..8, default 4): a table of 2**ba entries.
    lanes : int
        Elements per beat, P (1..16, default 4).
    out_width : int
        Bits of a table entry (1..32, default 16).

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
        ``idx``: P indices of ``ba`` bits; ``first``/``last``: framing.
    o : Out(stream.Signature(out_layout))
        ``y``: P table entries of ``out_width`` bits; ``first``/``last``.
    tbl : In(table write signature)
        ``en``, ``addr`` (``ba`` bits), ``data`` (``out_width`` bits).
    """

    def __init__(self, *, ba=4, lanes=4, out_width=16):
        self._config = LutConfig(ba=ba, lanes=lanes, out_width=out_width)
        self.in_layout = data.StructLayout({
            "idx": data.ArrayLayout(unsigned(ba), lanes), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(unsigned(out_width), lanes), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "tbl": In(wiring.Signature({"en": Out(1), "addr": Out(ba),
                                        "data": Out(unsigned(out_width))})),
        })

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return self._config.latency

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        table_pipeline(m, self, cfg.lanes, 2 ** cfg.ba, cfg.out_width,
                       lambda s0, p: s0.idx[p])
        return m
