"""The machinery the histogram row units share: a row of indices in, its histogram, a
per-row computation, the row out through a 2**ba-entry remap table.

The softmax (:mod:`hdl.softmax`) and norm (:mod:`hdl.norm`) units subclass
:class:`HistogramRowUnit` and supply only the per-row computation.
"""

from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream
from amaranth.lib.wiring import In, Out

from hdl.blocks import delay
from hdl.component import ConfiguredComponent
from hdl.rows import SkidOutput, last_beat_compares, row_input, row_layouts

__all__ = ["HistogramRowUnit"]


class HistogramRowUnit(ConfiguredComponent):
    """A row of indices in, its histogram, a per-row computation, the row out through a
    2**ba-entry remap table.

    **Input** (``i``): beats ``{idx: P indices, count, first, last}``; lanes
    ``0 .. count - 1`` hold elements (``count`` in ``0 .. P``, larger reads as
    P; any beat may be partial).  A row ends with ``last`` (``first`` is
    carried for symmetry with the other units and not needed).  While a row
    comes in, each accepted beat is written into the row buffer (one word of
    ``P * ba + count`` bits per beat, ``ceil(max_len / P)`` words, LUTRAM
    banks read with latency ``Lr = banked_latency(ceil(max_len / P))``,
    :class:`hdl.rows.RowInput`) and counted into the histogram: per lane and
    index a registered hit bit, per index ``j`` the number of hits
    (registered), added to bin ``h[j]`` (three pipeline stages; bins and the
    element count ``n`` have ``count_bits`` bits).

    **Per row**: when the histogram is complete the subclass's
    :meth:`compute` fills the per-lane remap tables ``T[j]`` (2**ba words, one
    LUTRAM copy per lane, written together) in a fixed number of cycles,
    ``compute_cycles`` (see the subclass).

    **Output** (``o``): the buffered row is read back one beat per cycle;
    each valid lane emits ``T[idx]`` (invalid lanes emit 0), with the beat's
    ``count``, ``first`` on the row's first beat and ``last`` on its last.

    **Throughput**: II = 1 within a row on input and on output (backpressure
    stalls the read pipeline through :class:`hdl.rows.SkidOutput`: output and
    skid registers, the pipeline's enable a register).  Rows do not overlap:
    ``i.ready`` falls after a row's last beat and rises again in the cycle
    after its last output beat left the pipeline (the cycle it is first on
    ``o``; with ``o.ready`` high the cycle after it is taken), so a row of
    ``b`` beats occupies the unit for ``2 b + latency - 1`` cycles without
    gaps or backpressure (``b / (2 b + latency - 1)`` beats per cycle for a
    stream of such rows).
    Latency (last input beat accepted to first output beat valid) =
    ``compute_cycles + 5 + Lr``: the input register, three histogram stages
    and the start flag, the computation, the row buffer read ``Lr`` and the
    output register; one more with ``pipelined_read`` (the remap read
    registered).

    **Row length**: at most ``max_len`` elements in at most
    ``ceil(max_len / P)`` beats.  Beats beyond the buffer are dropped (the
    row is cut) and ``overflow`` is set until reset.
    """

    #: The read path with one stage more (a subclass's choice; its latency formula counts
    #: it): the remap read registered before the output stage, and the last-beat flag from
    #: registered compares (no compare in front of it).
    pipelined_read = False

    def __init__(self, config, out_shape, tbl_signature):
        self._config = config
        P, ba = config.elems, config.ba
        self.in_layout, self.out_layout = row_layouts(
            "idx", unsigned(ba), out_shape, P, config.lane_count_bits)
        self.out_shape = out_shape
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "tbl": In(tbl_signature),
            "overflow": Out(1),
        })

    def compute(self, m, hist, nonempty, n, start, start_next, remap_we, remap_addr, remap_data,
                done):
        """Fill the remap tables from ``hist`` (``nonempty``: bit ``j`` set when ``hist[j]``
        is not 0, one cycle behind) and ``n`` after ``start``; raise ``done`` once.
        ``start_next`` is ``start`` one cycle ahead (a register), for look-aheads."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        outp = Signal()          # the row is being read out (until its last beat is issued)
        rows = row_input(m, self, "idx")
        hist, nonempty, n, start, start_next = self._histogram(m, rows)

        # ---- per-row computation into the remap tables
        remap_we = Signal()
        remap_addr = Signal(cfg.ba)
        remap_data = Signal(self.out_shape)
        done = Signal()
        self.compute(m, hist, nonempty, n, start, start_next, remap_we, remap_addr, remap_data,
                     done)

        out, rptr, issue, at_first, at_last = self._read_control(m, rows, outp, start, done)
        self._output_stage(m, rows, out, issue, at_first, at_last,
                           remap_we, remap_addr, remap_data)

        # ---- end of the row (its last beat is in the output registers): clear everything
        # for the next one
        with m.If(out.last_out):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [rptr.eq(0), n.eq(0)]
            m.d.sync += [hist[j].eq(0) for j in range(1 << cfg.ba)]
        return m

    def _histogram(self, m, rows):
        """The histogram of the incoming row: per lane and index a registered hit bit, per
        index the number of hits (registered), added to its bin.  Returns ``(hist, nonempty,
        n, start, start_next)``: the bins, their non-empty flags (registered), the element
        count, ``start`` (the histogram is complete) and ``start_next`` (``start`` one cycle
        ahead)."""
        cfg = self._config
        P, J, cb = cfg.elems, 1 << cfg.ba, cfg.count_bits
        s0, s0_end = rows.s0, rows.s0_end

        lane_valid = rows.lane_valid(m, P)
        # stage 1: one-hot bin hits per lane (registered); stage 2: per-bin counts
        hit = [Signal(P, name=f"s1_hit{j}") for j in range(J)]
        lv1 = Signal(P)
        s1_end = Signal()
        for j in range(J):
            m.d.sync += hit[j].eq(Cat(lane_valid[p] & (s0.idx[p] == j) for p in range(P)))
        m.d.sync += [lv1.eq(Cat(lane_valid)), s1_end.eq(s0_end)]
        inc = [Signal(range(P + 1), name=f"s2_inc{j}") for j in range(J)]
        n_inc = Signal(range(P + 1))
        s2_end = Signal()
        for j in range(J):
            total = hit[j][0]
            for p in range(1, P):
                total = total + hit[j][p]
            m.d.sync += inc[j].eq(total)
        nv = lv1[0]
        for p in range(1, P):
            nv = nv + lv1[p]
        m.d.sync += [n_inc.eq(nv), s2_end.eq(s1_end)]

        hist = [Signal(cb, name=f"hist{j}") for j in range(J)]
        nonempty = Signal(J)     # registered: read by compute() two cycles after the last bin update
        n = Signal(cb)
        start = Signal()
        m.d.sync += [hist[j].eq(hist[j] + inc[j]) for j in range(J)]
        m.d.sync += [n.eq(n + n_inc), start.eq(s2_end)]
        m.d.sync += nonempty.eq(Cat(h != 0 for h in hist))
        return hist, nonempty, n, start, s2_end

    def _read_control(self, m, rows, outp, start, done):
        """The read-back of the buffered row: ``outp`` set when the tables are ``done`` and
        cleared once the row's last beat is issued; the read pointer and its first / last
        flags (registered look-aheads).  Returns ``(out, rptr, issue, at_first, at_last)``,
        ``out`` the :class:`hdl.rows.SkidOutput`."""
        cfg = self._config
        br, wptr = rows.read, rows.wptr
        out = SkidOutput(m, self.o)      # o.ready reaches only the output registers
        advance = out.advance
        rptr = Signal(range(cfg.max_beats + 1))
        issue = Signal()
        step = Signal()
        wlast = Signal.like(wptr)        # the row's last beat (wptr is still while it is read)
        wlast1 = Signal.like(wptr)       # wlast - 1 (registered; still while the row is read)
        m.d.sync += [wlast.eq(wptr - 1), wlast1.eq(wlast - 1)]
        at_first = Signal(init=1)        # registered look-ahead: rptr == 0
        at_last = Signal()               # registered look-ahead: rptr == wlast
        # ``outp``: set when the tables are done, cleared once the row's last beat is issued,
        # so an issue step is ``advance & outp`` (three inputs)
        m.d.comb += [
            issue.eq(outp),
            step.eq(advance & issue),
            br.en.eq(advance),
            br.addr.eq(rptr),
        ]
        with m.If(done):
            m.d.sync += outp.eq(1)
        with m.Elif(step & at_last):
            m.d.sync += outp.eq(0)
        if self.pipelined_read:
            # the compares registered (rptr and wlast are still from the row's start to its
            # first step)
            next_last, last_only = last_beat_compares(m, rptr, wlast, wlast1, step)
        else:
            last_only = wlast == 0
            next_last = rptr == wlast1
        with m.If(start):
            # wlast and wlast1 are final by then (three cycles after the last beat)
            m.d.sync += [at_first.eq(1), at_last.eq(last_only)]
        with m.Elif(step):
            m.d.sync += [at_first.eq(0), at_last.eq(next_last), rptr.eq(rptr + 1)]
        return out, rptr, issue, at_first, at_last

    def _output_stage(self, m, rows, out, issue, at_first, at_last,
                      remap_we, remap_addr, remap_data):
        """The row read back (``read_latency`` cycles, one more with ``pipelined_read``)
        through the per-lane remap tables (written through ``remap_*``) into ``out``."""
        cfg = self._config
        P, ba, J = cfg.elems, cfg.ba, 1 << cfg.ba
        br, advance = rows.read, out.advance
        # with ``pipelined_read`` the remap read is registered: one stage more
        lo = rows.read_latency + self.pipelined_read
        v0, first0, last0 = Signal(), Signal(), Signal()
        m.d.comb += [v0.eq(issue), first0.eq(at_first), last0.eq(at_last)]
        v1 = delay(m, v0, lo, "rd_valid", en=advance)
        first1 = delay(m, first0, lo, "rd_first", en=advance)
        last1 = delay(m, last0, lo, "rd_last", en=advance)
        rd_idx = [br.data[p * ba:(p + 1) * ba] for p in range(P)]
        rd_count = br.data[P * ba:]
        out.present(m, v1, first1, last1,
                    delay(m, rd_count, self.pipelined_read, "rd_count", en=advance))
        for p in range(P):
            tab = memory.Memory(shape=self.out_shape, depth=J, init=[])
            m.submodules[f"remap{p}"] = tab
            tw = tab.write_port()
            tr = tab.read_port(domain="comb")
            m.d.comb += [tw.en.eq(remap_we), tw.addr.eq(remap_addr), tw.data.eq(remap_data),
                         tr.addr.eq(rd_idx[p])]
            y = Mux(rd_count > p, tr.data, 0)
            if self.pipelined_read:
                yr = Signal(self.out_shape, name=f"rd_y{p}")
                with m.If(advance):
                    m.d.sync += yr.eq(y)
                y = yr
            m.d.comb += out.payload.y[p].eq(y)
