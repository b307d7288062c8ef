"""The KLLM core's row engine: ROWOP (LUT, SOFTMAX, NORM) and ADD.

Golden twin: :func:`golden.core_ops.execute` (``_rowop``, ``_add``); cycle count:
:func:`golden.core_ops.rowop_cycles`, :func:`golden.core_ops.add_cycles`.
Configuration: :class:`base.config.CoreConfig` (the core instantiates this engine).

Interface (all synchronous to ``clk``)
--------------------------------------
* ``start`` (in, one cycle) with ``instr`` (in, 256 bits: the instruction as it sits in
  the compute queue, :func:`base.isa.encode` word 0 in bits 31:0).  The engine decodes the
  fields with :data:`base.isa.FIELDS`.  ``start`` is ignored while ``busy``.
* ``busy`` (out): from the cycle after ``start`` to ``done``; ``done`` (out, one cycle)
  and ``error`` (out, 8 bits, a :class:`base.isa.Error` code, valid with ``done``; 0 when
  the instruction completed).  Without a fault ``done`` comes exactly
  ``rowop_cycles(...)`` / ``add_cycles(...)`` cycles after ``start``.  On a fault nothing
  is written.
* ABUF read port: ``abuf_raddr`` (word address), ``abuf_ren``; ``abuf_rdata``
  (``8 * bus_bytes`` bits) holds the word the cycle after (a synchronous read port).
* ABUF write port: ``abuf_waddr``, ``abuf_wdata``, ``abuf_wen`` (``bus_bytes`` byte
  enables; 0: no write).
* TBUF read port: ``tbuf_raddr``, ``tbuf_ren``; ``tbuf_rdata`` the cycle after.
* ``check`` (out, sticky until the next ``start``): an internal schedule violation (a
  beat sent to a busy row unit, an element read before it arrived, a write still queued
  at ``done``); never set in a correct design, the bench asserts it stays low.

Faults (the golden model's order): BAD_OPCODE for a kind that does not exist, unsorted
thresholds, outliers on a kind other than NORM (and, in this stage, NORM with outliers:
not built); OVERFLOW for a row length outside ``1 .. limit``, a format of more index bits
than the unit takes, more outliers than the core takes; BAD_ADDRESS for an ABUF or TBUF
extent outside its buffer or a misaligned ABUF address or stride.

Datapath
--------
Rows are read from ABUF a word at a time into an element queue (a gearbox: one word in,
P elements out per cycle; the reader runs ahead while the queue has room), quantized
(:class:`hdl.quantizer.ActivationQuantizer`, 17-bit, thresholds clamped to
``[-2**15, 2**15]``; a format of ``ba`` bits below the quantizer's ``ba_q`` puts threshold
``j`` at ``((j + 1) << (ba_q - ba)) - 1`` and shifts the index right by ``ba_q - ba``, so
only ``2**ba - 1`` thresholds are written), then go to :class:`hdl.lut.ElementwiseLut`
(LUT), one of ``softmax_units`` :class:`hdl.softmax.HistogramSoftmax` or ``norm_units``
:class:`hdl.norm.HistogramNorm` (rows in round robin: row ``r`` to unit ``r mod N``;
a unit takes its next row ``U = 2 b + L - 1`` cycles after the previous one's first
beat), or straight to the ADD multiply-add.  NORM and ADD read their per-column affine
into a local column memory before the rows (one column a cycle).  Results are shifted
(``out_shift``) or requantized, saturated to 16 bits and written through a coalescing
word writer (byte enables) with a small queue.

Rows are issued back to back, each taking ``S = max(b, Wmax)`` cycles (``b`` beats,
``Wmax`` the most ABUF words a row of ``length`` elements can touch; ADD ``max(b, 2 Wmax)``:
two operands through one read port), so the schedule does not depend on alignment.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib.wiring import In, Out

from base.config import CoreConfig
from base.isa import FIELDS, Error, Op, RowKind
from base.rowsched import RE_FRONT, RE_OUT, RE_STREAM, row_engine_units, row_unit_configs
from hdl.component import ConfiguredComponent
from hdl.lut import ElementwiseLut
from hdl.norm import HistogramNorm
from hdl.quantizer import ActivationQuantizer
from hdl.softmax import HistogramSoftmax

__all__ = ["RowEngine"]

I16_MIN, I16_MAX = -(1 << 15), (1 << 15) - 1


def _log2(v):
    return (v - 1).bit_length()


class Gearbox:
    """A queue of ``width``-bit items in registers: up to ``kin`` pushed (``push_n``,
    ``push[0 .. push_n-1]``) and up to ``kout`` popped (``pop_n``, items ``out[0 ..]``)
    per cycle; ``cnt`` items held.  ``clear`` empties it."""

    def __init__(self, m, name, width, cap, kin, kout):
        self.buf = [Signal(width, name=f"{name}_q{k}") for k in range(cap)]
        self.cnt = Signal(range(cap + 1), name=f"{name}_cnt")
        self.push_n = Signal(range(kin + 1), name=f"{name}_push_n")
        self.push = [Signal(width, name=f"{name}_push{k}") for k in range(kin)]
        self.pop_n = Signal(range(kout + 1), name=f"{name}_pop_n")
        self.out = self.buf[:kout]
        self.clear = Signal(name=f"{name}_clear")
        self.cap = cap
        base = Signal(range(cap + 1), name=f"{name}_base")
        m.d.comb += base.eq(self.cnt - self.pop_n)
        pushes = Array(self.push + [Const(0, width)])
        for k in range(cap):
            src = [self.buf[k + j] if k + j < cap else Const(0, width) for j in range(kout + 1)]
            shifted = Array(src)[self.pop_n]
            off = Signal(signed(_log2(cap) + 2), name=f"{name}_off{k}")
            m.d.comb += off.eq(k - base)
            incoming = pushes[Mux((off >= 0) & (off < kin), off, kin).as_unsigned()]
            m.d.sync += self.buf[k].eq(Mux(k < base, shifted, incoming))
        with m.If(self.clear):
            m.d.sync += self.cnt.eq(0)
        with m.Else():
            m.d.sync += self.cnt.eq(base + self.push_n)


class RowEngine(ConfiguredComponent):
    """ROWOP and ADD of the KLLM core (see the module docstring)."""

    Config = CoreConfig

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        B = cfg.bus_bytes
        if 4 * cfg.elems > B:
            raise ValueError(f"rowengine: elems ({cfg.elems}) must be at most bus_bytes / 4 "
                             f"({B // 4}): a beat is at most half an ABUF word")
        self.abuf_words = cfg.abuf_bytes // B
        self.tbuf_lines = 4 * cfg.tbuf_words // B
        super().__init__({
            "start": In(1), "instr": In(256),
            "busy": Out(1), "done": Out(1), "error": Out(8), "check": Out(1),
            "abuf_raddr": Out(range(self.abuf_words)), "abuf_ren": Out(1),
            "abuf_rdata": In(8 * B),
            "abuf_waddr": Out(range(self.abuf_words)), "abuf_wdata": Out(8 * B),
            "abuf_wen": Out(B),
            "tbuf_raddr": Out(range(self.tbuf_lines)), "tbuf_ren": Out(1),
            "tbuf_rdata": In(8 * B),
        })

    @property
    def latency(self):
        return None

    # ------------------------------------------------------------------ elaborate
    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, B = cfg.elems, cfg.bus_bytes
        EW, TW = B // 2, B // 4                 # elements per ABUF word, words per TBUF line
        LEW, LTW = _log2(EW), _log2(TW)
        n_sm, n_nm = row_engine_units(cfg)
        ucfg = row_unit_configs(cfg)
        qba = max(cfg.lut_ba, cfg.row_ba)
        MB = -(-cfg.max_row // P)               # beats of the longest row

        # ---------------------------------------------------------------- instruction
        ins = Signal(256)
        with m.If(self.start & ~self.busy):
            m.d.sync += ins.eq(self.instr)
        op, sub = ins[0:8], ins[24:32]

        def fields(opc):
            return {name: ins[32 * w + lo:32 * w + lo + bits]
                    for name, w, lo, bits in FIELDS[opc]}
        fr, fa = fields(Op.ROWOP), fields(Op.ADD)
        is_add = Signal()
        m.d.comb += is_add.eq(op == Op.ADD)
        kind = Signal(8)
        m.d.comb += kind.eq(Mux(is_add, 0xFF, sub))
        k_lut = ~is_add & (sub == RowKind.LUT)
        k_sm = ~is_add & (sub == RowKind.SOFTMAX)
        k_nm = ~is_add & (sub == RowKind.NORM)
        R = Mux(is_add, fa["rows"], fr["rows"])
        n = Mux(is_add, fa["length"], fr["length"])
        src_a = Mux(is_add, fa["a"], fr["src"])
        stride_a = Mux(is_add, fa["stride"], fr["src_stride"])
        dst = Mux(is_add, fa["dst"], fr["dst"])
        dstride = Mux(is_add, fa["stride"], fr["dst_stride"])
        table = Mux(is_add, fa["params"], fr["table"])

        # ---------------------------------------------------------------- control
        st_names = ["idle", "check", "head", "fmt", "tab", "shw", "aff", "rows", "drain"]
        state = Signal(range(len(st_names)))
        S = {s: i for i, s in enumerate(st_names)}
        err = Signal(8)
        check = self.check
        chk_tbuf, chk_read, chk_unit, chk_queue = (Signal(name=f"chk_{k}") for k in
                                                   ("tbuf", "read", "unit", "queue"))
        with m.If(self.start & ~self.busy):
            m.d.sync += [chk_tbuf.eq(0), chk_read.eq(0), chk_unit.eq(0), chk_queue.eq(0)]
        m.d.comb += self.busy.eq(state != S["idle"])
        m.d.comb += self.error.eq(err)

        # ---------------------------------------------------------------- TBUF stream
        # pops ``tpop`` words (1, or 3 for an affine column) every ``tevery`` cycles after
        # a fixed start-up, reading TBUF lines ahead into a word gearbox
        tg = Gearbox(m, "tq", 32, 4 * TW + 4, TW, 3)
        t_go = Signal()                 # comb: start a stream this cycle
        t_addr = Signal(32)             # comb with t_go: first word address
        t_cnt = Signal(32)              # comb with t_go: words
        t_three = Signal()              # comb with t_go: pop three words at a time
        r_line = Signal(32)
        r_last = Signal(32)
        r_lo = Signal(LTW + 1)
        r_hi = Signal(LTW + 1)
        r_first = Signal()
        r_act = Signal()
        r_infl = Signal()
        r_inlo = Signal(LTW + 1)
        r_inhi = Signal(LTW + 1)
        p_left = Signal(32)             # words left to pop
        p_three = Signal()
        p_wait = Signal(range(RE_STREAM + 1))
        p_phase = Signal()
        t_fire = Signal()               # comb: words popped this cycle (tg.out)
        t_last = Signal()               # comb: the stream's last pop
        tevery3 = TW < 3                 # three words every other cycle on a 64-bit bus
        infl_words = Mux(r_infl, TW, 0)
        t_room = (tg.cnt + infl_words) <= 2 * TW + 1
        t_issue = r_act & t_room
        m.d.comb += [self.tbuf_raddr.eq(r_line), self.tbuf_ren.eq(t_issue)]
        m.d.sync += [r_infl.eq(t_issue), r_inlo.eq(Mux(r_first, r_lo, 0)),
                     r_inhi.eq(Mux(r_line == r_last, r_hi, TW - 1))]
        with m.If(t_issue):
            m.d.sync += [r_line.eq(r_line + 1), r_first.eq(0)]
            with m.If(r_line == r_last):
                m.d.sync += r_act.eq(0)
        twords = [self.tbuf_rdata[32 * i:32 * i + 32] for i in range(TW)]
        m.d.comb += tg.push_n.eq(Mux(r_infl, r_inhi - r_inlo + 1, 0))
        tarr = Array(twords)
        for i in range(TW):
            m.d.comb += tg.push[i].eq(tarr[(r_inlo + i)[:LTW] if TW > 1 else 0])
        with m.If(t_go):
            m.d.sync += [r_line.eq(t_addr >> LTW), r_last.eq((t_addr + t_cnt - 1) >> LTW),
                         r_lo.eq(t_addr[:LTW] if TW > 1 else 0),
                         r_hi.eq((t_addr + t_cnt - 1)[:LTW] if TW > 1 else 0),
                         r_first.eq(1), r_act.eq(t_cnt != 0),
                         p_left.eq(t_cnt), p_three.eq(t_three), p_wait.eq(RE_STREAM - 1),
                         p_phase.eq(0)]
            m.d.comb += tg.clear.eq(1)
        with m.Elif(p_wait != 0):
            m.d.sync += p_wait.eq(p_wait - 1)
        elif_ready = (p_wait == 0) & (p_left != 0)
        if tevery3:
            may = elif_ready & (~p_three | p_phase)
            with m.If(elif_ready & p_three & ~t_go):
                m.d.sync += p_phase.eq(~p_phase)
        else:
            may = elif_ready
        m.d.comb += [t_fire.eq(may), t_last.eq(may & (p_left == Mux(p_three, 3, 1)))]
        m.d.comb += tg.pop_n.eq(Mux(may, Mux(p_three, 3, 1), 0))
        with m.If(may):
            with m.If(~t_go):
                m.d.sync += p_left.eq(p_left - Mux(p_three, 3, 1))
            with m.If(tg.cnt < Mux(p_three, 3, 1)):
                m.d.sync += [check.eq(1), chk_tbuf.eq(1)]
        tw0 = tg.out[0].as_signed()

        # ---------------------------------------------------------------- format head
        ba = Signal(4)
        fshift = Signal(8)
        J = Signal(10)                  # 2**ba
        m.d.comb += J.eq(1 << ba)
        dq = Signal(range(qba + 1))     # quantizer index shift: qba - ba
        m.d.comb += dq.eq(qba - ba)
        max_ba = Mux(k_lut, cfg.lut_ba, cfg.row_ba)

        # ---------------------------------------------------------------- units
        q = ActivationQuantizer(ucfg["quantizer"])
        m.submodules.quantizer = q
        lut = ElementwiseLut(ucfg[RowKind.LUT])
        m.submodules.lut = lut
        sms = [HistogramSoftmax(ucfg[RowKind.SOFTMAX]) for _ in range(n_sm)]
        nms = [HistogramNorm(ucfg[RowKind.NORM]) for _ in range(n_nm)]
        for u, x in enumerate(sms):
            m.submodules[f"softmax{u}"] = x
        for u, x in enumerate(nms):
            m.submodules[f"norm{u}"] = x
        m.d.comb += q.o.ready.eq(1)
        m.d.comb += lut.o.ready.eq(1)
        for x in sms + nms:
            m.d.comb += x.o.ready.eq(1)

        # table writes (registered: a popped word lands in its unit the next cycle)
        tw_idx = Signal(16)             # index of the word popped within its stream
        tw_kind = Signal(2)             # 0 thresholds, 1 centroids, 2 lut/exp table
        thr_prev = Signal(signed(32))
        thr_bad = Signal()
        qa = Signal(qba)
        m.d.comb += qa.eq(((tw_idx[:qba] + 1) << dq) - 1)
        clamp = Mux(tw0 > (1 << 15), 1 << 15, Mux(tw0 < -(1 << 15), -(1 << 15), tw0))
        wr_thr = Signal()
        wr_cent = Signal()
        wr_tab = Signal()
        with m.If(t_fire):
            m.d.sync += tw_idx.eq(tw_idx + 1)
        m.d.sync += [
            q.thr.en.eq(wr_thr), q.thr.addr.eq(qa), q.thr.data.eq(clamp[:17]),
            lut.tbl.en.eq(wr_tab & k_lut), lut.tbl.addr.eq(tw_idx[:cfg.lut_ba]),
            lut.tbl.data.eq(tw0),
        ]
        rb = cfg.row_ba
        sm_addr = Signal(2 * rb)
        mm = Signal(8)
        jj = Signal(8)
        m.d.comb += [mm.eq(tw_idx >> ba), jj.eq(tw_idx & (J - 1)),
                     sm_addr.eq((mm[:rb] << rb) | jj[:rb])]
        for x in sms:
            m.d.sync += [x.tbl.en.eq(wr_tab & k_sm), x.tbl.addr.eq(sm_addr),
                         x.tbl.data.eq(tw0[:16])]
        for x in nms:
            m.d.sync += [x.tbl.en.eq(wr_cent & k_nm), x.tbl.addr.eq((tw_idx - (J - 1))[:rb]),
                         x.tbl.data.eq((tw0 << fshift)[:16])]
        with m.If(wr_thr):
            m.d.sync += thr_prev.eq(tw0)
            with m.If((tw_idx != 0) & (tw0 < thr_prev)):
                m.d.sync += thr_bad.eq(1)

        # ---------------------------------------------------------------- affine memory
        # per lane p: column p + P i at address i: M (32), B (64)
        aff_rd = Signal(range(MB + 1))
        aff_we = Signal()
        aff_col = Signal(16)
        aff_sh = Signal(signed(32))
        aff_M, aff_B = [], []
        from amaranth.lib import memory as _mem
        for p in range(P):
            mem = _mem.Memory(shape=unsigned(96), depth=MB, init=[])
            m.submodules[f"affine{p}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.addr.eq(aff_col >> _log2(P)),
                         wp.en.eq(aff_we & ((aff_col & (P - 1)) == p)),
                         wp.data.eq(Cat(tg.out[0], tg.out[1], tg.out[2])),
                         rp.addr.eq(aff_rd)]
            aff_M.append(rp.data[:32].as_signed())
            aff_B.append(rp.data[32:96].as_signed())
        with m.If(aff_we):
            m.d.sync += aff_col.eq(aff_col + 1)

        # ---------------------------------------------------------------- row streams
        # A: the ROWOP source or ADD's a; Bs: ADD's b
        def stream(name, base, stride):
            g = Gearbox(m, name, 16, 4 * EW, EW, P)
            s = type("S", (), {})()
            s.g = g
            s.e0 = Signal(32, name=f"{name}_e0")        # element address of the row
            s.r = Signal(16, name=f"{name}_r")
            s.w = Signal(32, name=f"{name}_w")
            s.wl = Signal(32, name=f"{name}_wl")
            s.first = Signal(name=f"{name}_first")
            s.act = Signal(name=f"{name}_act")
            s.infl = Signal(name=f"{name}_infl")
            s.inlo = Signal(LEW + 1, name=f"{name}_inlo")
            s.inhi = Signal(LEW + 1, name=f"{name}_inhi")
            s.want = Signal(name=f"{name}_want")
            s.grant = Signal(name=f"{name}_grant")
            s.base, s.stride = base, stride
            return s

        sa = stream("ra", src_a, stride_a)
        sb = stream("rb", fa["b"], fa["stride"])
        streams = [sa, sb]
        rgo = Signal()                  # comb: start reading the rows
        for s in streams:
            infl = Mux(s.infl, EW, 0)
            m.d.comb += s.want.eq(s.act & ((s.g.cnt + infl) <= 2 * EW))
            e_last = s.e0 + n - 1
            m.d.sync += [s.infl.eq(s.grant),
                         s.inlo.eq(Mux(s.first, s.e0[:LEW], 0)),
                         s.inhi.eq(Mux(s.w == s.wl, e_last[:LEW], EW - 1))]
            with m.If(s.grant):
                m.d.sync += [s.w.eq(s.w + 1), s.first.eq(0)]
                with m.If(s.w == s.wl):
                    # next row
                    e_next = s.e0 + (s.stride >> 1)
                    m.d.sync += [s.e0.eq(e_next), s.r.eq(s.r + 1), s.first.eq(1),
                                 s.w.eq(e_next >> LEW), s.wl.eq((e_next + n - 1) >> LEW)]
                    with m.If(s.r + 1 == R):
                        m.d.sync += s.act.eq(0)
            words = [self.abuf_rdata[16 * i:16 * i + 16] for i in range(EW)]
            arr = Array(words)
            m.d.comb += s.g.push_n.eq(Mux(s.infl, s.inhi - s.inlo + 1, 0))
            for i in range(EW):
                m.d.comb += s.g.push[i].eq(arr[(s.inlo + i)[:LEW]])
            with m.If(rgo):
                e = s.base >> 1
                m.d.sync += [s.e0.eq(e), s.r.eq(0), s.first.eq(1), s.w.eq(e >> LEW),
                             s.wl.eq((e + n - 1) >> LEW),
                             s.act.eq((R != 0) & (is_add if s is sb else 1))]
                m.d.comb += s.g.clear.eq(1)
        # one read port: A, or B, alternating when both want it
        last_b = Signal()
        m.d.comb += [sa.grant.eq(sa.want & ~(sb.want & ~last_b)),
                     sb.grant.eq(sb.want & ~sa.grant)]
        with m.If(sa.grant | sb.grant):
            m.d.sync += last_b.eq(sb.grant)
        m.d.comb += [self.abuf_ren.eq(sa.grant | sb.grant),
                     self.abuf_raddr.eq(Mux(sb.grant, sb.w, sa.w))]

        # ---------------------------------------------------------------- row issue
        b = Signal(16)                  # beats of a row
        last_cnt = Signal(range(P + 1))  # elements of the last beat
        Srow = Signal(16)               # cycles per row
        Uocc = Signal(16)               # unit occupancy per row
        nunits = Signal(8)
        i_go = Signal()                 # comb: start issuing rows
        i_act = Signal()
        i_rows = Signal(16)             # rows issued so far
        i_beat = Signal(16)             # beat within the row (0: between rows)
        i_gap = Signal(16)              # cycles until the next row may start
        i_unit = Signal(8)
        NU = max(n_sm, n_nm, 1)
        timers = [Signal(16, name=f"unit_timer{u}") for u in range(NU)]
        for t in timers:
            with m.If(t != 0):
                m.d.sync += t.eq(t - 1)
        # a bit select, not an Array: Icarus never evaluates a combinational process
        # whose inputs keep their initial values, so the Array's case statement stayed X
        # until the first row changed i_unit (a NORM or SOFTMAX first after reset hung)
        unit_free = Signal()
        m.d.comb += unit_free.eq(Cat(*[t == 0 for t in timers]).bit_select(i_unit, 1))
        use_units = k_sm | k_nm
        row_start = i_act & (i_beat == 0) & (i_gap == 0) & (i_rows != R) & \
            (~use_units | unit_free)
        in_row = Signal()
        m.d.comb += in_row.eq(row_start | (i_beat != 0))
        is_first = row_start
        is_last = in_row & (Mux(row_start, 0, i_beat) == b - 1)
        with m.If(i_gap != 0):
            m.d.sync += i_gap.eq(i_gap - 1)
        with m.If(in_row):
            with m.If(is_last):
                m.d.sync += [i_beat.eq(0), i_gap.eq(Srow - b), i_rows.eq(i_rows + 1),
                             i_unit.eq(Mux(i_unit + 1 == nunits, 0, i_unit + 1))]
            with m.Else():
                m.d.sync += i_beat.eq(Mux(row_start, 1, i_beat + 1))
        with m.If(row_start & use_units):
            for u, t in enumerate(timers):
                with m.If(i_unit == u):
                    m.d.sync += t.eq(Uocc - 1)
        with m.If(i_go):
            m.d.sync += [i_act.eq(1), i_rows.eq(0), i_beat.eq(0), i_gap.eq(0), i_unit.eq(0)]
            m.d.sync += [t.eq(0) for t in timers]
        cnt_now = Mux(is_last, last_cnt, P)
        for s in streams:
            popping = in_row & ((s is sa) | is_add)
            m.d.comb += s.g.pop_n.eq(Mux(popping, cnt_now, 0))
            with m.If(popping):
                with m.If(s.g.cnt < cnt_now):
                    m.d.sync += [check.eq(1), chk_read.eq(1)]
        # the issued beat, registered
        bv = Signal()
        bx = [Signal(signed(16), name=f"bx{p}") for p in range(P)]
        by = [Signal(signed(16), name=f"by{p}") for p in range(P)]
        bcnt = Signal(range(P + 1))
        bfirst, blast = Signal(), Signal()
        bunit = Signal(8)
        m.d.sync += [bv.eq(in_row), bcnt.eq(cnt_now), bfirst.eq(is_first), blast.eq(is_last),
                     bunit.eq(i_unit)]
        for p in range(P):
            m.d.sync += [bx[p].eq(Mux(p < cnt_now, sa.g.out[p], 0)),
                         by[p].eq(Mux(p < cnt_now, sb.g.out[p], 0))]

        # ---------------------------------------------------------------- quantize, units
        qin_v = bv & ~is_add
        m.d.comb += [q.i.valid.eq(qin_v), q.i.payload.first.eq(bfirst),
                     q.i.payload.last.eq(blast)]
        for p in range(P):
            m.d.comb += q.i.payload.x[p].eq(bx[p])
        QL = q.config.latency
        from hdl.blocks import delay
        qd = delay(m, Cat(bcnt, bunit), QL, "q_side")
        qcnt, qunit = qd[:len(bcnt)], qd[len(bcnt):]
        # indices shifted down to the format's bits (registered)
        iv = Signal()
        ix = [Signal(qba, name=f"ix{p}") for p in range(P)]
        icnt = Signal(range(P + 1))
        ifirst, ilast = Signal(), Signal()
        iunit = Signal(8)
        m.d.sync += [iv.eq(q.o.valid), icnt.eq(qcnt), ifirst.eq(q.o.payload.first),
                     ilast.eq(q.o.payload.last), iunit.eq(qunit)]
        for p in range(P):
            m.d.sync += ix[p].eq(q.o.payload.idx[p] >> dq)
        # LUT
        m.d.comb += [lut.i.valid.eq(iv & k_lut), lut.i.payload.first.eq(ifirst),
                     lut.i.payload.last.eq(ilast)]
        for p in range(P):
            m.d.comb += lut.i.payload.idx[p].eq(ix[p])
        LL = lut.config.latency
        lcnt = delay(m, icnt, LL, "lut_cnt")
        for kind_units, sel in ((sms, k_sm), (nms, k_nm)):
            for u, x in enumerate(kind_units):
                v = iv & sel & (iunit == u)
                m.d.comb += [x.i.valid.eq(v), x.i.payload.first.eq(ifirst),
                             x.i.payload.last.eq(ilast), x.i.payload.count.eq(icnt)]
                for p in range(P):
                    m.d.comb += x.i.payload.idx[p].eq(ix[p][:cfg.row_ba])
                with m.If(v & ~x.i.ready):
                    m.d.sync += [check.eq(1), chk_unit.eq(1)]

        # ---------------------------------------------------------------- results
        # one beat a cycle at most, in row order: values (signed, up to 33 bits), count,
        # first, last
        ov = Signal()
        oval = [Signal(signed(34), name=f"ov{p}") for p in range(P)]
        ocnt = Signal(range(P + 1))
        ofirst, olast = Signal(), Signal()
        osel_v = Signal()
        m.d.comb += osel_v.eq(0)
        sm_v = Signal()
        nm_v = Signal()
        sm_any = [x.o.valid for x in sms]
        nm_any = [x.o.valid for x in nms]
        m.d.comb += [sm_v.eq(Cat(*sm_any).any() if sms else 0),
                     nm_v.eq(Cat(*nm_any).any() if nms else 0)]

        def ormux(units, getter, width):
            acc = Const(0, width)
            for x in units:
                acc = acc | Mux(x.o.valid, getter(x), 0)
            return acc
        with m.If(lut.o.valid & k_lut):
            m.d.comb += [ov.eq(1), ocnt.eq(lcnt), ofirst.eq(lut.o.payload.first),
                         olast.eq(lut.o.payload.last)]
            for p in range(P):
                m.d.comb += oval[p].eq(lut.o.payload.y[p].as_signed())
        with m.Elif(sm_v & k_sm):
            m.d.comb += [ov.eq(1),
                         ocnt.eq(ormux(sms, lambda x: x.o.payload.count, 8)),
                         ofirst.eq(ormux(sms, lambda x: x.o.payload.first, 1)),
                         olast.eq(ormux(sms, lambda x: x.o.payload.last, 1))]
            for p in range(P):
                m.d.comb += oval[p].eq(ormux(sms, lambda x: x.o.payload.y[p], 16))
        with m.Elif(nm_v & k_nm):
            ob = ucfg[RowKind.NORM].out_bits
            m.d.comb += [ov.eq(1),
                         ocnt.eq(ormux(nms, lambda x: x.o.payload.count, 8)),
                         ofirst.eq(ormux(nms, lambda x: x.o.payload.first, 1)),
                         olast.eq(ormux(nms, lambda x: x.o.payload.last, 1))]
            for p in range(P):
                m.d.comb += oval[p].eq(
                    ormux(nms, lambda x: x.o.payload.y[p].as_unsigned(), ob)[:ob].as_signed())
        with m.Elif(bv & is_add):
            m.d.comb += [ov.eq(1), ocnt.eq(bcnt), ofirst.eq(bfirst), olast.eq(blast)]
            for p in range(P):
                m.d.comb += oval[p].eq(by[p])
        # the column beat of this result (row order)
        obeat = Signal(16)
        with m.If(ov):
            m.d.sync += obeat.eq(Mux(olast, 0, Mux(ofirst, 1, obeat + 1)))
        m.d.comb += aff_rd.eq(Mux(ofirst, 0, obeat))
        # stage 1: (affine read) register
        def reg(name, sig, shape=None):
            r_ = Signal(shape if shape is not None else sig.shape(), name=name)
            m.d.sync += r_.eq(sig)
            return r_
        s1v, s1c, s1f, s1l = reg("s1v", ov), reg("s1c", ocnt), reg("s1f", ofirst), reg("s1l", olast)
        s1x = [reg(f"s1x{p}", oval[p]) for p in range(P)]
        s1a = [reg(f"s1a{p}", bx[p]) for p in range(P)]      # ADD's a (beat order = output)
        # stage 2: product
        use_aff = is_add | k_nm
        s2 = [reg(f"s2p{p}", s1x[p] * aff_M[p], signed(72)) for p in range(P)]
        s2B = [reg(f"s2B{p}", aff_B[p]) for p in range(P)]
        s2x = [reg(f"s2x{p}", s1x[p]) for p in range(P)]
        s2a = [reg(f"s2a{p}", s1a[p]) for p in range(P)]
        s2v, s2c, s2f, s2l = reg("s2v", s1v), reg("s2c", s1c), reg("s2f", s1f), reg("s2l", s1l)
        # stage 3: + B + round, then the shift
        sh_pos = aff_sh > 0
        sh_eff = Signal(7)
        m.d.comb += sh_eff.eq(Mux(sh_pos, Mux(aff_sh > 80, 80, aff_sh[:7]), 0))
        rnd = Signal(83)
        m.d.comb += rnd.eq(Mux(sh_pos, Const(1, 1) << (sh_eff - 1)[:7], 0))
        s3 = [reg(f"s3s{p}", s2[p] + s2B[p] + rnd, signed(84)) for p in range(P)]
        s3x = [reg(f"s3x{p}", s2x[p]) for p in range(P)]
        s3a = [reg(f"s3a{p}", s2a[p]) for p in range(P)]
        s3v, s3c, s3f, s3l = reg("s3v", s2v), reg("s3c", s2c), reg("s3f", s2f), reg("s3l", s2l)
        # stage 4: result before saturation
        outsh = fr["out_shift"]
        s4 = []
        for p in range(P):
            req = (s3[p] >> sh_eff)
            plain = s3x[p] >> outsh
            val = Mux(is_add, s3a[p] + req, Mux(k_nm, req, plain))
            s4.append(reg(f"s4r{p}", val, signed(86)))
        s4v, s4c, s4f, s4l = reg("s4v", s3v), reg("s4c", s3c), reg("s4f", s3f), reg("s4l", s3l)
        # stage 5: saturate
        s5 = [reg(f"s5y{p}", Mux(s4[p] > I16_MAX, I16_MAX, Mux(s4[p] < I16_MIN, I16_MIN, s4[p]))
                  [:16]) for p in range(P)]
        s5v, s5c, s5f, s5l = reg("s5v", s4v), reg("s5c", s4c), reg("s5f", s4f), reg("s5l", s4l)

        # ---------------------------------------------------------------- writer
        # element address of the beat: dst / 2 + row * dst_stride / 2 + beat * P
        w_row = Signal(32)              # element address of the current row
        w_ea = Signal(32)               # element address of the next beat
        w_go = Signal()
        with m.If(w_go):
            m.d.sync += [w_row.eq(dst >> 1), w_ea.eq(dst >> 1)]
        ea = Mux(s5f, w_row, w_ea)
        with m.If(s5v):
            with m.If(s5l):
                m.d.sync += w_row.eq(w_row + (dstride >> 1))
            with m.Else():
                m.d.sync += w_ea.eq(ea + P)
        wq = Gearbox(m, "wq", 32 + 16 * EW + EW, 6, 2, 1)
        open_v = Signal()
        open_a = Signal(32)
        open_d = Signal(16 * EW)
        open_m = Signal(EW)
        # word addresses of the beat's window: exactly 32 bits each (``wa + 1`` would be
        # 33 bits wide and, in a Cat, shift the second word's data and byte enables)
        wa = Signal(32)
        wa1 = Signal(32)
        m.d.comb += [wa.eq(ea >> LEW), wa1.eq(wa + 1)]
        off = ea[:LEW]
        # the beat's elements placed in a two-word window at ``off``
        win_d = [Signal(16, name=f"win_d{k}") for k in range(2 * EW)]
        win_m = Signal(2 * EW)
        for k in range(2 * EW):
            sel = [s5[p] for p in range(P)]
            idx = Signal(signed(LEW + 3), name=f"win_i{k}")
            m.d.comb += idx.eq(k - off)
            inr = (idx >= 0) & (idx < s5c)
            m.d.comb += [win_d[k].eq(Array(sel + [Const(0, 16)])[Mux(inr, idx, P).as_unsigned()]),
                         win_m[k].eq(inr)]
        lo_d = Cat(*win_d[:EW])
        hi_d = Cat(*win_d[EW:])
        lo_m, hi_m = win_m[:EW], win_m[EW:]
        spans = hi_m.any()
        base_d = Mux(open_v, open_d, 0)
        base_m = Mux(open_v, open_m, 0)

        def merge(d0, m0, d1, m1):
            return Cat(*[Mux(m1[k], d1[16 * k:16 * k + 16], d0[16 * k:16 * k + 16])
                         for k in range(EW)]), m0 | m1
        md, mmask = merge(base_d, base_m, lo_d, lo_m)
        e0 = Cat(wa, md, mmask)
        e1 = Cat(wa1, hi_d, hi_m)
        ends = (off + s5c) == EW                # the beat fills its word to the end
        emit0 = spans | ends | s5l
        m.d.comb += [wq.push[0].eq(e0), wq.push[1].eq(e1),
                     wq.push_n.eq(Mux(s5v, Mux(emit0, 1, 0) + (spans & s5l), 0))]
        with m.If(s5v):
            with m.If(s5l | (ends & ~spans)):
                m.d.sync += open_v.eq(0)
            with m.Elif(spans):
                m.d.sync += [open_v.eq(1), open_a.eq(wa1), open_d.eq(hi_d), open_m.eq(hi_m)]
            with m.Else():
                m.d.sync += [open_v.eq(1), open_a.eq(wa), open_d.eq(md), open_m.eq(mmask)]
        with m.If(w_go):
            m.d.sync += open_v.eq(0)
            m.d.comb += wq.clear.eq(1)
        head = wq.out[0]
        m.d.comb += wq.pop_n.eq(wq.cnt != 0)
        hm = head[32 + 16 * EW:]
        m.d.sync += [self.abuf_waddr.eq(head[:32]), self.abuf_wdata.eq(head[32:32 + 16 * EW]),
                     self.abuf_wen.eq(Mux(wq.cnt != 0,
                                          Cat(*[Cat(hm[k], hm[k]) for k in range(EW)]), 0))]

        # ---------------------------------------------------------------- sequence
        cnt = Signal(32)                # a general countdown
        with m.If(cnt != 0):
            m.d.sync += cnt.eq(cnt - 1)
        tb_words = self.tbuf_lines * TW
        ab = cfg.abuf_bytes
        lim = Mux(k_sm, cfg.max_tokens, cfg.max_row)

        def span_bad(addr, stride, bytes_):
            end = addr + (R - 1) * stride + bytes_
            return (R != 0) & (end > ab)
        bad_a = (src_a[0] | stride_a[0]) | span_bad(src_a, stride_a, 2 * n)
        bad_b = (fa["b"][0] | fa["stride"][0]) | span_bad(fa["b"], fa["stride"], 2 * n)
        bad_d = (dst[0] | dstride[0]) | span_bad(dst, dstride, 2 * n)
        ntab = Signal(32)
        m.d.comb += ntab.eq(Mux(k_lut, J, Mux(k_sm, J * J, 1 + 3 * n)))
        bad_tab = (table + ntab) > tb_words
        outl = fr["outliers"]
        Wm = ((n + EW - 2) >> LEW) + 1          # base.rowsched.row_words
        done = self.done
        m.d.comb += [t_go.eq(0), rgo.eq(0), i_go.eq(0), w_go.eq(0)]

        m.d.sync += done.eq(0)

        def finish(code):
            m.d.sync += [err.eq(code), state.eq(S["idle"]), done.eq(1)]

        # derived per-instruction counts (registered in CHECK)
        wmax = Signal(16)
        m.d.comb += wmax.eq(Wm)
        with m.Switch(state):
            with m.Case(S["idle"]):
                with m.If(self.start):
                    m.d.sync += [state.eq(S["check"]), check.eq(0), err.eq(0)]
            with m.Case(S["check"]):
                m.d.sync += [b.eq((n + P - 1) >> _log2(P)),
                             last_cnt.eq(n - (((n + P - 1) >> _log2(P)) - 1) * P),
                             nunits.eq(Mux(k_sm, max(n_sm, 1), max(n_nm, 1)))]
                bb = (n + P - 1) >> _log2(P)
                m.d.sync += [Srow.eq(Mux(is_add, Mux(bb > 2 * wmax, bb, 2 * wmax),
                                         Mux(bb > wmax, bb, wmax))),
                             Uocc.eq(2 * bb - 1 + Mux(k_sm, ucfg[RowKind.SOFTMAX].latency,
                                                      ucfg[RowKind.NORM].latency))]
                with m.If(is_add):
                    with m.If((n < 1) | (n > cfg.max_row)):
                        finish(Error.OVERFLOW)
                    with m.Elif(bad_a | bad_b):
                        finish(Error.BAD_ADDRESS)
                    with m.Elif(table + 1 + 3 * n > tb_words):
                        finish(Error.BAD_ADDRESS)
                    with m.Elif(bad_d):
                        finish(Error.BAD_ADDRESS)
                    with m.Else():
                        m.d.comb += [t_go.eq(1), t_addr.eq(table), t_cnt.eq(1)]
                        m.d.sync += [state.eq(S["shw"])]
                with m.Elif(op != Op.ROWOP):
                    finish(Error.BAD_OPCODE)
                with m.Elif(sub > RowKind.NORM):
                    finish(Error.BAD_OPCODE)
                with m.Elif((n < 1) | (n > lim)):
                    finish(Error.OVERFLOW)
                with m.Elif(fr["fmt"] + 1 > tb_words):
                    finish(Error.BAD_ADDRESS)
                with m.Else():
                    m.d.comb += [t_go.eq(1), t_addr.eq(fr["fmt"]), t_cnt.eq(1)]
                    m.d.sync += state.eq(S["head"])
            with m.Case(S["head"]):
                with m.If(t_fire):
                    hb = tg.out[0][:8]
                    m.d.sync += [ba.eq(hb), fshift.eq(tg.out[0][8:16])]
                    with m.If((hb < 1) | (hb > max_ba)):
                        finish(Error.OVERFLOW)
                    with m.Elif(fr["fmt"] + (Const(2, 12) << hb) > tb_words):
                        finish(Error.BAD_ADDRESS)
                    with m.Else():
                        # thresholds, then (NORM) the centroids
                        m.d.comb += [t_go.eq(1), t_addr.eq(fr["fmt"] + 1),
                                     t_cnt.eq(Mux(k_nm, (Const(2, 12) << hb) - 1,
                                                  (Const(1, 12) << hb) - 1))]
                        m.d.sync += [state.eq(S["fmt"]), tw_idx.eq(0), thr_bad.eq(0)]
            with m.Case(S["fmt"]):
                with m.If(t_fire):
                    with m.If(tw_idx < J - 1):
                        m.d.comb += wr_thr.eq(1)
                    with m.Else():
                        m.d.comb += wr_cent.eq(1)
                with m.If(t_last):
                    m.d.sync += state.eq(S["tab"])
                    m.d.sync += cnt.eq(2)
            with m.Case(S["tab"]):
                # a cycle for the last sortedness compare, then the checks after the format
                with m.If(cnt == 1):
                    with m.If(thr_bad):
                        finish(Error.BAD_OPCODE)
                    with m.Elif((outl != 0) & ~k_nm):
                        finish(Error.BAD_OPCODE)
                    with m.Elif(outl > cfg.outliers):
                        finish(Error.OVERFLOW)
                    with m.Elif(outl != 0):
                        finish(Error.BAD_OPCODE)         # NORM outliers: not built yet
                    with m.Elif(bad_a):
                        finish(Error.BAD_ADDRESS)
                    with m.Elif(bad_tab):
                        finish(Error.BAD_ADDRESS)
                    with m.Elif(bad_d):
                        finish(Error.BAD_ADDRESS)
                    with m.Elif(k_nm):
                        m.d.comb += [t_go.eq(1), t_addr.eq(table), t_cnt.eq(1)]
                        m.d.sync += state.eq(S["shw"])
                    with m.Else():
                        m.d.comb += [t_go.eq(1), t_addr.eq(table), t_cnt.eq(ntab)]
                        m.d.sync += [state.eq(S["aff"]), tw_idx.eq(0)]
            with m.Case(S["shw"]):
                with m.If(t_fire):
                    m.d.sync += aff_sh.eq(tg.out[0].as_signed())
                    m.d.comb += [t_go.eq(1), t_addr.eq(table + 1), t_cnt.eq(3 * n),
                                 t_three.eq(1)]
                    m.d.sync += [state.eq(S["aff"]), aff_col.eq(0)]
            with m.Case(S["aff"]):
                # LUT / exp table words, or affine columns
                with m.If(t_fire):
                    with m.If(is_add | k_nm):
                        m.d.comb += aff_we.eq(1)
                    with m.Else():
                        m.d.comb += wr_tab.eq(1)
                with m.If(t_last):
                    m.d.comb += [rgo.eq(1), w_go.eq(1)]
                    m.d.sync += [state.eq(S["rows"]), cnt.eq(RE_FRONT - 1)]
            with m.Case(S["rows"]):
                with m.If(cnt == 1):
                    m.d.comb += i_go.eq(1)
                with m.If(i_act & (i_rows == R) & (i_beat == 0)):
                    LL = ucfg[RowKind.LUT].latency
                    tails = Mux(is_add, RE_OUT - 4,
                                Mux(k_lut, QL + LL + 1 + RE_OUT,
                                    QL + b + RE_OUT + Mux(k_sm, ucfg[RowKind.SOFTMAX].latency,
                                                          ucfg[RowKind.NORM].latency)))
                    m.d.sync += [i_act.eq(0), state.eq(S["drain"]), cnt.eq(tails)]
            with m.Case(S["drain"]):
                with m.If(cnt == 1):
                    with m.If(wq.cnt != 0):
                        m.d.sync += [check.eq(1), chk_queue.eq(1)]
                    finish(Error.NONE)
        return m

