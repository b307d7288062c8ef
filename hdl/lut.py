"""Elementwise table: index in, table entry out (index -> index or index -> fixed point).

Golden twin: :mod:`golden.lut`.  Configuration: :class:`base.config.LutConfig`.
"""

from amaranth import Array, Module, Signal, unsigned
from amaranth.lib import data, memory, stream
from amaranth.lib.wiring import In, Out

from base.config import LutConfig
from base.latency import BANK, table_latency
from hdl.blocks import pipeline_advance
from hdl.component import ConfiguredComponent, write_signature

__all__ = ["ElementwiseLut", "table_latency", "table_pipeline"]


def table_pipeline(m, component, lanes, depth, width, addr_of):
    """The pipeline shared by the table units: input register, table read, output register.

    Every lane has its own copy of the table, written together through
    ``component.tbl``; lane ``p`` reads address ``addr_of(payload, p)`` of
    the registered input beat.  A table of at most 16 words is one LUTRAM
    read by a synchronous port whose data register is the output register
    (latency 2).  A deeper table is cut into banks of 16 words, all read in
    the same cycle into registers (the LUTRAM's own slice flip-flops); then
    each further stage selects one of four words by two of the registered
    upper address bits (latency ``2 + ceil((abits - 4) / 2)``, ``abits`` the
    address bits): no path crosses more than a LUTRAM read or a 4:1
    multiplexer.  Tables are LUTRAM rather than block RAM: an ECP5 block
    RAM's clock-to-out without its output register (which Yosys does not
    infer) is 5.8 ns at speed grade 6, alone more than a 200 MHz
    cycle.  Every register advances together
    (``advance = ~o.valid | o.ready``; ``i.ready = advance``).
    """
    advance = pipeline_advance(m, component.i, component.o)
    ab = max(1, (depth - 1).bit_length())
    lo = min(ab, BANK.bit_length() - 1)
    stages = table_latency(depth) - 1          # registers from s0 to o, inclusive
    # framing and valid through every stage
    v, first, last = Signal(name="s0_valid"), Signal(name="s0_first"), Signal(name="s0_last")
    s0 = Signal(component.in_layout)
    with m.If(advance):
        m.d.sync += [v.eq(component.i.valid), s0.eq(component.i.payload)]
    m.d.comb += [first.eq(s0.first), last.eq(s0.last)]
    for k in range(1, stages):
        v2, f2, l2 = Signal(name=f"s{k}_valid"), Signal(name=f"s{k}_first"), Signal(name=f"s{k}_last")
        with m.If(advance):
            m.d.sync += [v2.eq(v), f2.eq(first), l2.eq(last)]
        v, first, last = v2, f2, l2
    with m.If(advance):
        m.d.sync += [component.o.valid.eq(v), component.o.payload.first.eq(first),
                     component.o.payload.last.eq(last)]
    # the write port is registered (a write lands one cycle later; the host writes between
    # layers), with one registered enable per bank: its decode starts and ends at flip-flops
    nbanks = -(-depth // BANK)
    w_en = Signal(nbanks, name="tbl_bank_en")
    w_addr = Signal(lo, name="tbl_word_addr")
    w_data = Signal(width, name="tbl_word_data")
    tbl = component.tbl
    m.d.sync += [w_addr.eq(tbl.addr[:lo]), w_data.eq(tbl.data)]
    m.d.sync += [w_en[k].eq(tbl.en & (1 if nbanks == 1 else tbl.addr[lo:ab] == k))
                 for k in range(nbanks)]
    for p in range(lanes):
        addr = addr_of(s0, p)
        words = []
        for k in range(nbanks):
            mem = memory.Memory(shape=unsigned(width), depth=min(depth, BANK), init=[],
                                attrs={"ram_style": "distributed"})
            m.submodules[f"table{p}" if depth <= BANK else f"table{p}_bank{k}"] = mem
            wr = mem.write_port()
            rd = mem.read_port(domain="sync")
            m.d.comb += [
                wr.en.eq(w_en[k]),
                wr.addr.eq(w_addr),
                wr.data.eq(w_data),
                rd.en.eq(advance),
                rd.addr.eq(addr[:lo]),
            ]
            words.append(rd.data)
        # select the bank, two address bits (a 4:1 multiplexer) per registered stage
        hi = addr[lo:ab]
        for k in range(1, stages):
            h = Signal(len(hi), name=f"s{k}_bank{p}")
            with m.If(advance):
                m.d.sync += h.eq(hi)
            hi = h
            nxt = []
            for g in range(0, len(words), 4):
                w = Signal(width, name=f"s{k + 1}_word{p}_{g // 4}")
                group = words[g:g + 4]
                with m.If(advance):
                    m.d.sync += w.eq(Array(group)[hi[:2]] if len(group) > 1 else group[0])
                nxt.append(w)
            words, hi = nxt, hi[2:]
        m.d.comb += component.o.payload.y[p].eq(words[0])

class ElementwiseLut(ConfiguredComponent):
    """One table lookup per element: ``y = table[idx]``, P lanes, II = 1.

    The 2**ba-entry table holds ``f`` of each input centroid, either as an
    index into the output codebook (``out_width = ba``) or as a fixed-point
    number; the host computes it (:func:`golden.lut.table_to_index`,
    :func:`golden.lut.table_to_fixed`) and writes it through the ``tbl`` port,
    one entry per cycle (``tbl.en``, ``tbl.addr`` = index, ``tbl.data`` =
    entry bits, two's complement for signed entries; registered, so a write
    lands in the table one cycle later).  Every lane has its own
    copy of the table (all written together) in LUTRAM.  The host writes between
    layers, not while data it cares about is in flight; reset keeps the table.

    Latency and throughput: a beat accepted in cycle ``c`` leaves in cycle
    ``c + L`` when the output is not stalled, ``L = 2`` for ``ba <= 4`` (an
    input register, then the table's read register) and ``L = 2 +
    ceil((ba - 4) / 2)`` above (the table is read in banks of 16 words, then
    a 4:1 bank selection per stage; see :func:`table_pipeline`); one beat of
    P elements per cycle.
    ``n`` back-to-back beats take ``n + L`` cycles.  Backpressure stalls the
    whole pipeline (``i.ready = ~o.valid | o.ready``).  Framing (``first``,
    ``last``) passes through untouched: every lane is looked up whether or not
    the row fills it.

    Parameters
    ----------
    ba : int
        Index bits (1..8, default 4): a table of 2**ba entries.
    elems : int
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

    Config = LutConfig

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        ba, lanes, out_width = cfg.ba, cfg.elems, cfg.out_width
        self.in_layout = data.StructLayout({
            "idx": data.ArrayLayout(unsigned(ba), lanes), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(unsigned(out_width), lanes), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "tbl": In(write_signature(ba, unsigned(out_width))),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        table_pipeline(m, self, cfg.elems, 2 ** cfg.ba, cfg.out_width,
                       lambda s0, p: s0.idx[p])
        return m
