"""Softmax of rows of indices by histogram; the row machinery shared with the norm unit.

Golden twin: :mod:`golden.softmax`.  Configuration: :class:`kllm.config.SoftmaxConfig`.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from golden import softmax as gsoftmax
from hdl.rows import RowInput
from kllm.config import SoftmaxConfig

__all__ = ["HistogramRowUnit", "HistogramSoftmax", "SoftmaxBaseline", "leading_one"]


def leading_one(m, value, name):
    """Position of the highest set bit of ``value`` (0 when ``value`` is 0), combinational."""
    pos = Signal(range(max(2, len(value))), name=name)
    for b in range(len(value)):        # the last assignment wins: the highest set bit
        with m.If(value[b]):
            m.d.comb += pos.eq(b)
    return pos


class HistogramRowUnit(wiring.Component):
    """A row of indices in, its histogram, a per-row computation, the row out through a
    2**ba-entry remap table.

    **Input** (``i``): beats ``{idx: P indices, count, first, last}``; lanes
    ``0 .. count - 1`` hold elements (``count`` in ``0 .. P``, larger reads as
    P; any beat may be partial).  A row ends with ``last`` (``first`` is
    carried for symmetry with the other units and not needed).  While a row
    comes in, each accepted beat is written into the row buffer (one word of
    ``P * ba + count`` bits per beat, ``ceil(max_len / P)`` words, block RAM)
    and counted into the histogram: per index ``j`` the number of valid lanes
    holding ``j`` is registered and added to bin ``h[j]`` (two pipeline
    stages; bins and the element count ``n`` have ``count_bits`` bits).

    **Per row**: when the histogram is complete the subclass's
    :meth:`compute` fills the per-lane remap tables ``T[j]`` (2**ba words, one
    LUTRAM copy per lane, written together) in a fixed number of cycles,
    ``compute_cycles`` (see the subclass).

    **Output** (``o``): the buffered row is read back one beat per cycle;
    each valid lane emits ``T[idx]`` (invalid lanes emit 0), with the beat's
    ``count``, ``first`` on the row's first beat and ``last`` on its last.

    **Throughput**: II = 1 within a row on input and on output (backpressure
    stalls the output pipeline: ``~o.valid | o.ready``).  Rows do not overlap:
    ``i.ready`` falls after a row's last beat and rises again in the cycle
    after its last output beat is taken, so a row of ``b`` beats occupies the
    unit for ``b + latency + b`` cycles without gaps or backpressure.
    Latency (last input beat accepted to first output beat valid) =
    ``compute_cycles + 5``: two histogram stages and the start flag, the
    computation, the row buffer read and the output register.

    **Row length**: at most ``max_len`` elements in at most
    ``ceil(max_len / P)`` beats.  Beats beyond the buffer are dropped (the
    row is cut) and ``overflow`` is set until reset.
    """

    def __init__(self, config, out_shape, tbl_signature):
        self._config = config
        P, ba = config.lanes, config.ba
        self.in_layout = data.StructLayout({
            "idx": data.ArrayLayout(unsigned(ba), P),
            "count": unsigned(config.lane_count_bits), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(out_shape, P),
            "count": unsigned(config.lane_count_bits), "first": 1, "last": 1})
        self.out_shape = out_shape
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "tbl": In(tbl_signature),
            "overflow": Out(1),
        })

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return self._config.latency

    def compute(self, m, hist, n, start, remap_we, remap_addr, remap_data, done):
        """Fill the remap tables from ``hist`` and ``n`` after ``start``; raise ``done`` once."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, ba, J = cfg.lanes, cfg.ba, 1 << cfg.ba
        cb, lcb = cfg.count_bits, cfg.lane_count_bits

        outp = Signal()          # the row is being read out

        # ---- input: row buffer and histogram
        rows = RowInput(m, self.i, self.overflow,
                        Cat(self.i.payload.idx.as_value(), self.i.payload.count), cfg.max_beats)
        br, wptr, s0, s0_valid, s0_end = rows.read, rows.wptr, rows.s0, rows.s0_valid, rows.s0_end

        lane_valid = [Signal(name=f"s0_lv{p}") for p in range(P)]
        m.d.comb += [lane_valid[p].eq(s0_valid & (s0.count > p)) for p in range(P)]
        inc = [Signal(range(P + 1), name=f"s1_inc{j}") for j in range(J)]
        n_inc = Signal(range(P + 1))
        s1_end = Signal()
        for j in range(J):
            hits = [lane_valid[p] & (s0.idx[p] == j) for p in range(P)]
            total = hits[0]
            for h in hits[1:]:
                total = total + h
            m.d.sync += inc[j].eq(total)
        nv = lane_valid[0]
        for p in range(1, P):
            nv = nv + lane_valid[p]
        m.d.sync += [n_inc.eq(nv), s1_end.eq(s0_end)]

        hist = [Signal(cb, name=f"hist{j}") for j in range(J)]
        n = Signal(cb)
        start = Signal()
        m.d.sync += [hist[j].eq(hist[j] + inc[j]) for j in range(J)]
        m.d.sync += [n.eq(n + n_inc), start.eq(s1_end)]

        # ---- per-row computation into the remap tables
        remap_we = Signal()
        remap_addr = Signal(ba)
        remap_data = Signal(self.out_shape)
        done = Signal()
        self.compute(m, hist, n, start, remap_we, remap_addr, remap_data, done)
        with m.If(done):
            m.d.sync += outp.eq(1)

        # ---- output: read the row back through the remap tables
        advance = Signal()
        m.d.comb += advance.eq(~self.o.valid | self.o.ready)
        rptr = Signal(range(cfg.max_beats + 1))
        issue = Signal()
        m.d.comb += [
            issue.eq(outp & (rptr != wptr)),
            br.en.eq(advance),
            br.addr.eq(rptr),
        ]
        v1, first1, last1 = Signal(), Signal(), Signal()
        rd_idx = [br.data[p * ba:(p + 1) * ba] for p in range(P)]
        rd_count = br.data[P * ba:]
        with m.If(advance):
            m.d.sync += [
                v1.eq(issue),
                first1.eq(rptr == 0),
                last1.eq(rptr == wptr - 1),
                self.o.valid.eq(v1),
                self.o.payload.first.eq(first1),
                self.o.payload.last.eq(last1),
                self.o.payload.count.eq(rd_count),
            ]
            with m.If(issue):
                m.d.sync += rptr.eq(rptr + 1)
        for p in range(P):
            tab = memory.Memory(shape=self.out_shape, depth=J, init=[])
            m.submodules[f"remap{p}"] = tab
            tw = tab.write_port()
            tr = tab.read_port(domain="comb")
            m.d.comb += [tw.en.eq(remap_we), tw.addr.eq(remap_addr), tw.data.eq(remap_data),
                         tr.addr.eq(rd_idx[p])]
            with m.If(advance):
                m.d.sync += self.o.payload.y[p].eq(Mux(rd_count > p, tr.data, 0))

        # ---- end of the row: clear everything for the next one
        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [outp.eq(0), rptr.eq(0), n.eq(0)]
            m.d.sync += [hist[j].eq(0) for j in range(J)]
        return m


class HistogramSoftmax(HistogramRowUnit):
    """Softmax of each row of score indices from its histogram (DESIGN §3.4).

    Per row (see :mod:`golden.softmax`, bit-exact): the maximum index present
    ``m`` (highest non-empty bin); ``D = sum_j h[j] E[m][j]`` over the 2**ba
    bins with one multiplier, reading ``E[m][j] = round(2**15 exp((Cs[j] -
    Cs[m]) ss))`` from the exp table; ``1 / D`` from a 256-entry normalized
    reciprocal ROM (``D = 2**e (1 + f)``, the 8 bits of ``f`` below the
    leading one address it); then the remap table ``T[j] = (E[m][j] r) >>
    (1 + e)``, the probability of index ``j`` with 15 fraction bits.  Every
    element's output is ``T[idx]``: the row is read back from the buffer.

    The exp table (``4**ba`` entries of 16 bits, address ``m * 2**ba + j``,
    block RAM) is written by the host through ``tbl`` for each layer's score
    codebook (:func:`golden.softmax.exp_table_writes`); only the entries with
    ``j <= m`` are ever read.  The reciprocal ROM is fixed.

    Precisions: ``E`` 16 bits unsigned (15 fraction bits, ``E <= 2**15``);
    bins and ``n`` ``count_bits`` bits; each product ``h[j] E`` and ``D``
    ``denom_bits`` bits (``D <= n 2**15``, exact); ``e`` the leading-one
    position of ``D``; reciprocal 17 bits (16 fraction bits, relative error
    <= 2**-9); ``E r`` 33 bits; output 16 bits unsigned with 15 fraction
    bits (truncated).

    Latency: ``compute_cycles = 2 * 2**ba + 11`` (maximum 1, sum ``2**ba +
    2``, normalization 4, remap ``2**ba + 3``, plus the idle state that sees
    the start flag), so the first output beat is valid ``2 * 2**ba + 16``
    cycles after the row's last input beat is accepted (see
    :class:`HistogramRowUnit` for throughput and row length).

    Parameters
    ----------
    ba : int
        Index bits (1..6, default 4).
    lanes : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).

    Attributes
    ----------
    i, o : streams (see :class:`HistogramRowUnit`); ``o.y``: 16-bit probabilities.
    tbl : exp table write port: ``en``, ``addr`` (``2 ba`` bits), ``data`` (16 bits).
    overflow : a row was longer than the buffer (sticky until reset).
    """

    def __init__(self, *, ba=4, lanes=4, max_len=1024):
        cfg = SoftmaxConfig(ba=ba, lanes=lanes, max_len=max_len)
        tbl = wiring.Signature({"en": Out(1), "addr": Out(2 * ba),
                                "data": Out(unsigned(cfg.exp_bits))})
        super().__init__(cfg, unsigned(cfg.out_bits), tbl)

    def compute(self, m, hist, n, start, remap_we, remap_addr, remap_data, done):
        cfg = self._config
        ba, J = cfg.ba, 1 << cfg.ba
        DW = cfg.denom_bits
        RA, RF, OF = gsoftmax.RECIP_ADDR, gsoftmax.RECIP_FRAC, gsoftmax.OUT_FRAC

        exp = memory.Memory(shape=unsigned(cfg.exp_bits), depth=J * J, init=[])
        m.submodules.exp_table = exp
        ew = exp.write_port()
        er = exp.read_port(domain="sync")
        m.d.comb += [ew.en.eq(self.tbl.en), ew.addr.eq(self.tbl.addr), ew.data.eq(self.tbl.data)]
        recip = memory.Memory(shape=unsigned(RF + 1), depth=1 << RA,
                              init=gsoftmax.recip_table().tolist())
        m.submodules.recip_rom = recip
        rr = recip.read_port(domain="sync")

        hist_arr = Array(hist)
        mx = Signal(ba)
        k = Signal(range(J + 4))
        a1, a2, a3 = Signal(), Signal(), Signal()
        j1, j2, j3 = Signal(ba), Signal(ba), Signal(ba)
        prod = Signal(DW)
        D = Signal(DW)
        e = Signal(range(DW))
        dn = Signal(DW)
        r = Signal(RF + 1)
        sh = Signal(range(DW + RF))
        prod2 = Signal(cfg.exp_bits + RF + 1)
        p = Signal(cfg.out_bits)

        nonempty = Signal(J)
        m.d.comb += nonempty.eq(Cat(h != 0 for h in hist))
        top = leading_one(m, nonempty, "row_max")
        lead = leading_one(m, D, "d_lead")
        shamt = Signal(range(DW))
        m.d.comb += shamt.eq(DW - 1 - e)
        m.d.comb += [
            er.addr.eq(Cat(k[:ba], mx)),
            rr.addr.eq(dn[DW - 1 - RA:DW - 1]),
            remap_we.eq(a3), remap_addr.eq(j3), remap_data.eq(p),
        ]
        m.d.sync += [a2.eq(a1), j2.eq(j1), a3.eq(a2), j3.eq(j2)]
        with m.FSM():
            with m.State("IDLE"):
                m.d.sync += a1.eq(0)
                with m.If(start):
                    m.next = "MAX"
            with m.State("MAX"):
                m.d.sync += [mx.eq(top), k.eq(0), D.eq(0)]
                m.next = "SUM"
            with m.State("SUM"):
                # read E[m][k]; multiply by h[k] one cycle later; accumulate one more later
                m.d.sync += [a1.eq(k < J), j1.eq(k), k.eq(k + 1),
                             prod.eq(er.data * hist_arr[j1])]
                with m.If(a2):
                    m.d.sync += D.eq(D + prod)
                with m.If(k == J + 1):
                    m.next = "LEAD"
            with m.State("LEAD"):
                m.d.sync += [e.eq(lead), a1.eq(0)]
                m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                m.d.sync += dn.eq(D << shamt)
                m.next = "ROM"
            with m.State("ROM"):
                m.next = "RECIP"
            with m.State("RECIP"):
                m.d.sync += [r.eq(rr.data), sh.eq(RF - OF + e), k.eq(0)]
                m.next = "MAP"
            with m.State("MAP"):
                m.d.sync += [a1.eq(k < J), j1.eq(k), k.eq(k + 1),
                             prod2.eq(er.data * r), p.eq(prod2 >> sh)]
                with m.If(k == J + 2):
                    m.d.comb += done.eq(1)
                    m.next = "IDLE"


class SoftmaxBaseline(wiring.Component):
    """Baseline: a conventional fixed-point softmax of the same throughput (P lanes, II = 1).

    The input is the scores themselves (``width``-bit signed fixed point with
    ``frac`` fraction bits), as an hls4ml-style design receives them.  Three
    passes per row (golden twin :func:`golden.softmax.softmax_baseline_rows`):

    1. while the row comes in: the row buffer (``P * width + count`` bits per
       beat) and the row maximum (a comparator tree per beat, then a running
       maximum);
    2. the row is read back once: per lane ``a = min((max - x) >> (frac - 6),
       1023)`` addresses a 1024-entry exp ROM (one per lane), an adder tree
       sums the P exps and ``D`` accumulates them;
    3. ``1 / D`` from the same normalized reciprocal ROM as the histogram unit,
       then the row is read again: per lane the exp again and a multiplier
       ``E r``, shifted right by ``1 + e``.

    Precisions as :class:`HistogramSoftmax`, plus ``max - x``: ``width + 1``
    bits, truncated to steps of 2**-6 and saturated at 1023 steps (exp(-16)).

    Latency: the first output beat is valid ``b + 18`` cycles after the last
    input beat of a row of ``b`` beats is accepted (3 input stages, the idle
    state that sees the start flag, the sum pass ``b + 5``, normalization 4,
    the output pipeline 5); output II = 1, and rows do not overlap (as
    :class:`HistogramRowUnit`), so a row occupies the unit for ``3 b + 17``
    cycles against the histogram unit's ``2 b + 2 * 2**ba + 15``.

    Parameters
    ----------
    width, frac : int
        Score width (8..24, default 16) and fraction bits (6..16, default 8).
    lanes : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    """

    def __init__(self, *, width=16, frac=8, lanes=4, max_len=1024):
        from kllm.config import SoftmaxBaselineConfig
        cfg = self._config = SoftmaxBaselineConfig(width=width, frac=frac, lanes=lanes,
                                                   max_len=max_len)
        self.in_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(width), lanes),
            "count": unsigned(cfg.lane_count_bits), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(unsigned(cfg.out_bits), lanes),
            "count": unsigned(cfg.lane_count_bits), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "overflow": Out(1),
        })

    @property
    def config(self):
        return self._config

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, W, lcb = cfg.lanes, cfg.width, cfg.lane_count_bits
        DW = cfg.denom_bits
        RA, RF, OF = gsoftmax.RECIP_ADDR, gsoftmax.RECIP_FRAC, gsoftmax.OUT_FRAC
        EA, S = gsoftmax.BASE_EXP_ADDR, cfg.frac - gsoftmax.BASE_STEP_FRAC

        outp = Signal()
        rows = RowInput(m, self.i, self.overflow,
                        Cat(self.i.payload.x.as_value(), self.i.payload.count), cfg.max_beats)
        br, wptr, s0, s0_valid, s0_end = rows.read, rows.wptr, rows.s0, rows.s0_valid, rows.s0_end

        # beat maximum over the valid lanes (invalid lanes read as the smallest value)
        lo = Const(-(1 << (W - 1)), signed(W))
        vals = [Mux(s0.count > p, s0.x[p], lo) for p in range(P)]
        while len(vals) > 1:
            nxt = []
            for k in range(0, len(vals) - 1, 2):
                nxt.append(Mux(vals[k] >= vals[k + 1], vals[k], vals[k + 1]))
            if len(vals) % 2:
                nxt.append(vals[-1])
            vals = nxt
        bmax = Signal(signed(W))
        s1_valid, s1_end = Signal(), Signal()
        m.d.sync += [bmax.eq(vals[0]), s1_valid.eq(s0_valid & (s0.count != 0)),
                     s1_end.eq(s0_end)]
        mx = Signal(signed(W))
        have = Signal()
        start = Signal()
        m.d.sync += start.eq(s1_end)
        with m.If(s1_valid & (~have | (bmax > mx))):
            m.d.sync += [mx.eq(bmax), have.eq(1)]

        # ---- read pipeline, used twice: the sum pass and the output pass
        summing = Signal()
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        rptr = Signal(range(cfg.max_beats + 1))
        issue = Signal()
        m.d.comb += [issue.eq((summing | outp) & (rptr != wptr)),
                     br.en.eq(adv), br.addr.eq(rptr)]
        vA, fA, lA = Signal(), Signal(), Signal()
        vB, fB, lB = Signal(), Signal(), Signal()
        vC, fC, lC = Signal(), Signal(), Signal()
        vD, fD, lD = Signal(), Signal(), Signal()
        cB, cC, cD = Signal(lcb), Signal(lcb), Signal(lcb)
        xA = [br.data[p * W:(p + 1) * W].as_signed() for p in range(P)]
        cA = br.data[P * W:]
        addr = [Signal(EA, name=f"exp_addr{p}") for p in range(P)]
        E = []
        r = Signal(RF + 1)
        sh = Signal(range(DW + RF))
        prod = [Signal(cfg.exp_bits + RF + 1, name=f"prod{p}") for p in range(P)]
        part = Signal(DW)
        D = Signal(DW)
        with m.If(adv):
            m.d.sync += [vA.eq(issue), fA.eq(rptr == 0), lA.eq(rptr == wptr - 1),
                         vB.eq(vA), fB.eq(fA), lB.eq(lA), cB.eq(cA),
                         vC.eq(vB), fC.eq(fB), lC.eq(lB), cC.eq(cB),
                         vD.eq(vC), fD.eq(fC), lD.eq(lC), cD.eq(cC)]
            with m.If(issue):
                m.d.sync += rptr.eq(rptr + 1)
        table = gsoftmax.baseline_exp_table().tolist()
        for p in range(P):
            d = Signal(W + 1, name=f"dist{p}")
            m.d.comb += d.eq(mx - xA[p])
            q = d >> S
            with m.If(adv):
                m.d.sync += addr[p].eq(Mux(q >= (1 << EA), (1 << EA) - 1, q))
            rom = memory.Memory(shape=unsigned(cfg.exp_bits), depth=1 << EA, init=table)
            m.submodules[f"exp_rom{p}"] = rom
            rd = rom.read_port(domain="sync")
            m.d.comb += [rd.en.eq(adv), rd.addr.eq(addr[p])]
            E.append(Mux(cC > p, rd.data, 0))
            with m.If(adv):
                m.d.sync += prod[p].eq(E[p] * r)
                m.d.sync += self.o.payload.y[p].eq(prod[p] >> sh)
        total = E[0]
        for p in range(1, P):
            total = total + E[p]
        with m.If(adv):
            m.d.sync += [part.eq(total),
                         self.o.valid.eq(vD & outp), self.o.payload.first.eq(fD),
                         self.o.payload.last.eq(lD), self.o.payload.count.eq(cD)]
        with m.If(summing & vD):
            m.d.sync += D.eq(D + part)

        recip = memory.Memory(shape=unsigned(RF + 1), depth=1 << RA,
                              init=gsoftmax.recip_table().tolist())
        m.submodules.recip_rom = recip
        rr = recip.read_port(domain="sync")
        e = Signal(range(DW))
        dn = Signal(DW)
        lead = leading_one(m, D, "d_lead")
        shamt = Signal(range(DW))
        m.d.comb += [shamt.eq(DW - 1 - e), rr.addr.eq(dn[DW - 1 - RA:DW - 1])]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [summing.eq(1), D.eq(0)]
                    m.next = "SUM"
            with m.State("SUM"):
                with m.If((rptr == wptr) & ~vA & ~vB & ~vC & ~vD):
                    m.d.sync += [summing.eq(0), rptr.eq(0)]
                    m.next = "LEAD"
            with m.State("LEAD"):
                m.d.sync += e.eq(lead)
                m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                m.d.sync += dn.eq(D << shamt)
                m.next = "ROM"
            with m.State("ROM"):
                m.next = "RECIP"
            with m.State("RECIP"):
                m.d.sync += [r.eq(rr.data), sh.eq(RF - OF + e), outp.eq(1)]
                m.next = "IDLE"

        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [outp.eq(0), rptr.eq(0), have.eq(0)]
        return m
