"""Activation quantizer: signed fixed-point values in, nearest-centroid indices out.

Golden twin: :mod:`golden.quantizer`.  Configuration: :class:`base.config.QuantizerConfig`.
"""

from amaranth import Cat, Module, Signal, signed, unsigned
from amaranth.lib import data, memory, stream
from amaranth.lib.wiring import In, Out

from base.config import QuantizerConfig
from hdl.blocks import pipeline_advance
from hdl.component import ConfiguredComponent, write_signature

__all__ = ["ActivationQuantizer"]


class ActivationQuantizer(ConfiguredComponent):
    """Nearest-centroid quantizer by pipelined binary search over run-time thresholds.

    Each of the ``elems`` (P) elements of a beat gets the index of its nearest
    activation centroid: the number of thresholds ``t_j <= x`` (numeric contract: docs/ARCHITECTURE.md).
    With ``2**ba - 1`` sorted thresholds that count is found by a binary search
    of ``ba`` steps, one pipeline stage per step: stage ``s`` compares ``x``
    with one threshold chosen by the ``s`` index bits found so far.  The
    thresholds of tree level ``s`` (``2**s`` of them) sit in a small
    memory per lane with an asynchronous read port (LUTRAM on ECP5), except
    the root, one register shared by all lanes; storage is ``2**ba - 2``
    words per lane plus one, and logic is one comparator per stage per lane,
    for any ``ba``.

    Thresholds are written through the ``thr`` port, one per cycle
    (``thr.en``, ``thr.addr`` = j in ``0 .. 2**ba - 2``, ``thr.data`` = t_j);
    the address ``2**ba - 1`` is ignored.  A write takes effect for elements
    that reach its search stage on the following cycles; the host writes
    between layers, not while data it cares about is in flight.  The search
    is exact only on thresholds sorted ascending: keeping them sorted is the
    host's job (:func:`golden.quantizer.threshold_writes` refuses otherwise).
    Reset clears the pipeline but keeps the thresholds.

    Latency and throughput: a beat presented in cycle ``c`` (and accepted)
    leaves in cycle ``c + ba + 1`` when the output is not stalled; one beat of
    P elements per cycle (II = 1).  ``n`` back-to-back beats take
    ``n + ba + 1`` cycles from the first input cycle to the cycle after the
    last output.  Backpressure stalls the whole pipeline
    (``i.ready = ~o.valid | o.ready``).

    Parameters
    ----------
    width : int
        Input width in bits, signed (2..32, default 16).
    ba : int
        Index bits (1..8, default 4): ``2**ba`` centroids.
    elems : int
        Elements per beat, P (1..16, default 4).

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
        ``x``: P signed values; ``first``/``last``: framing, passed through.
    o : Out(stream.Signature(out_layout))
        ``idx``: P indices of ``ba`` bits; ``first``/``last`` as they came in.
    thr : In(threshold write signature)
        ``en``, ``addr`` (``ba`` bits), ``data`` (signed ``width``).
    """

    Config = QuantizerConfig

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        width, ba, lanes = cfg.width, cfg.ba, cfg.elems
        self.in_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(width), lanes),
            "first": 1,
            "last": 1,
        })
        self.out_layout = data.StructLayout({
            "idx": data.ArrayLayout(unsigned(ba), lanes),
            "first": 1,
            "last": 1,
        })
        thr_signature = write_signature(ba, signed(width))
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "thr": In(thr_signature),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        ba, lanes, width = cfg.ba, cfg.elems, cfg.width

        advance = pipeline_advance(m, self.i, self.o)

        # Which tree level a threshold write goes to: address j sits at level
        # s when j + 1 has exactly ba - 1 - s trailing zeros, at slot
        # (j + 1) >> (ba - s).  j = 2**ba - 1 wraps to 0 and matches no level.
        a1 = Signal(ba)
        m.d.comb += a1.eq(self.thr.addr + 1)

        # Pipeline registers: stage s holds the values and the s index bits
        # found so far.  Stage 0 is the input register, stage ba the output.
        valid = [Signal(name=f"valid{s}") for s in range(ba + 1)]
        first = [Signal(name=f"first{s}") for s in range(ba + 1)]
        last = [Signal(name=f"last{s}") for s in range(ba + 1)]
        xs = [[Signal(signed(width), name=f"x{s}_{p}") for p in range(lanes)]
              for s in range(ba)]
        pre = [None] + [[Signal(s, name=f"idx{s}_{p}") for p in range(lanes)]
                        for s in range(1, ba + 1)]

        with m.If(advance):
            m.d.sync += [
                valid[0].eq(self.i.valid),
                first[0].eq(self.i.payload.first),
                last[0].eq(self.i.payload.last),
            ]
            m.d.sync += [xs[0][p].eq(self.i.payload.x[p]) for p in range(lanes)]
            for s in range(ba):
                m.d.sync += [
                    valid[s + 1].eq(valid[s]),
                    first[s + 1].eq(first[s]),
                    last[s + 1].eq(last[s]),
                ]

        for s in range(ba):
            tz = ba - 1 - s
            level_we = Signal(name=f"we_level{s}")
            m.d.comb += level_we.eq(self.thr.en & (a1[:tz + 1] == (1 << tz)))
            if s == 0:
                # the root of the tree: one threshold, shared by every lane
                root = Signal(signed(width), reset_less=True)
                with m.If(level_we):
                    m.d.sync += root.eq(self.thr.data)
            for p in range(lanes):
                if s == 0:
                    t = root
                else:
                    mem = memory.Memory(shape=signed(width), depth=2 ** s, init=[])
                    m.submodules[f"thr_l{s}_p{p}"] = mem
                    wr = mem.write_port()
                    rd = mem.read_port(domain="comb")
                    m.d.comb += [
                        wr.en.eq(level_we),
                        wr.addr.eq(a1[ba - s:]),
                        wr.data.eq(self.thr.data),
                        rd.addr.eq(pre[s][p]),
                    ]
                    t = rd.data
                bit = xs[s][p] >= t
                with m.If(advance):
                    m.d.sync += pre[s + 1][p].eq(bit if s == 0 else Cat(bit, pre[s][p]))
                    if s + 1 < ba:
                        m.d.sync += xs[s + 1][p].eq(xs[s][p])

        m.d.comb += [
            self.o.valid.eq(valid[ba]),
            self.o.payload.first.eq(first[ba]),
            self.o.payload.last.eq(last[ba]),
        ]
        m.d.comb += [self.o.payload.idx[p].eq(pre[ba][p]) for p in range(lanes)]
        return m
