"""LayerNorm / RMSNorm of rows of indices by histogram.

Golden twin: :mod:`golden.norm`.  Configuration: :class:`kllm.config.NormConfig`.
"""

from amaranth import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import Out

from golden import norm as gnorm
from hdl.rows import (RowInput, banked_latency, banked_memory, delay, pipelined_mul,
                      select_pipe)
from hdl.softmax import HistogramRowUnit, leading_one
from kllm.config import NormConfig

__all__ = ["HistogramNorm", "NormBaseline"]


def rsqrt_latency():
    """Cycles of :func:`rsqrt_lookup`."""
    from hdl.rows import mul_latency
    return mul_latency(DIV3_BITS) + 1 + banked_latency(1 << gnorm.RSQRT_ADDR)


DIV3_BITS = 10      # 683 = 0b1010101011: floor(x / 3) = (x * 683) >> 11 for 0 <= x < 768


def rsqrt_lookup(m, top, name):
    """``RSQRT[min((top - 2**RA) // 3, 2**RA - 1)]`` (:mod:`golden.norm`) for the
    ``RA + 2``-bit normalized ``top`` in ``[2**RA, 4 * 2**RA)``, pipelined: the
    division by 3 as a fabric multiply by 683 (exact below 768), the clamp, then
    the 256-entry ROM in LUT banks.  Returns ``(r, latency)``, ``latency =
    rsqrt_latency()``; ``top`` below ``2**RA`` (V = 0) gives an unspecified ``r``."""
    RA, RF = gnorm.RSQRT_ADDR, gnorm.RSQRT_FRAC
    x = Signal(RA + 2, name=f"{name}_x")
    m.d.comb += x.eq(top - (1 << RA))
    q, lq = pipelined_mul(m, x, Const(683, DIV3_BITS), f"{name}_div3")
    i = Signal(RA, name=f"{name}_i")
    m.d.sync += i.eq(Mux((q >> 11) >= (1 << RA), (1 << RA) - 1, q >> 11))
    r, lr = banked_memory(m, f"{name}_rom", unsigned(RF + 1), 1 << RA, i,
                          init=gnorm.rsqrt_table().tolist())
    assert lq + 1 + lr == rsqrt_latency()
    return r, lq + 1 + lr


class HistogramNorm(HistogramRowUnit):
    """LayerNorm (``rms=0``) or RMSNorm (``rms=1``) of each row of indices (DESIGN §3.4).

    Per row (see :mod:`golden.norm`, bit-exact): ``S1 = sum_j h[j] C[j]`` and
    ``S2 = sum_j h[j] C[j]**2`` over the 2**ba bins (two multipliers, one bin
    per cycle); ``V = n S2 - S1**2`` (LayerNorm) or ``V = n S2`` (RMSNorm);
    ``1 / sqrt(V)`` from a normalized ROM: ``V = 4**e v``, ``v`` in [1, 4),
    whose top 10 bits (``v`` with 8 fraction bits) address a 1024-entry ROM
    holding ``RSQRT[min((top - 256) // 3, 255)]``, the golden 256-entry table
    over [1, 4) (so no division by 3 in hardware); then the remap table
    ``T[j] = ((n C[j] - S1) r) >> (4 + e)`` (``n C[j]`` for RMSNorm), the
    normalized value of centroid ``j`` with 12 fraction bits, signed, and 0
    for every ``j`` when ``V = 0``.  Per-channel gain and bias are not
    applied: the host folds them into the next linear layer
    (:func:`golden.norm.fold_affine`).

    The codebook ``C`` (2**ba signed ``cw``-bit centroids, flip-flops) is
    written through ``tbl`` per layer.

    Precisions (``cb = count_bits``): bins and ``n`` ``cb`` bits; ``h C``
    ``cb + cw`` bits, ``h C**2`` ``cb + 2 cw``; ``S1`` ``cb + cw`` bits signed,
    ``S2`` ``cb + 2 cw``; ``V`` ``2 cb + 2 cw`` bits (exact integers up to
    here); ``r`` 17 bits (16 fraction bits, relative error <= 0.3%); the
    numerator ``n C[j] - S1`` ``cb + cw + 2`` bits; the output ``out_bits``
    (``|z| <= sqrt(n)``), rounded toward minus infinity.

    Latency: ``compute_cycles = 2 * 2**ba + 12`` (sums ``2**ba + 2``,
    variance 2, normalization 4, remap ``2**ba + 3``, idle 1), so the first
    output beat is valid ``2 * 2**ba + 17 + Lr`` cycles after the row's last
    input beat is accepted, ``Lr`` the row buffer read
    (:func:`hdl.rows.banked_latency`; see :class:`hdl.softmax.HistogramRowUnit`
    for throughput and row length).  The per-row arithmetic here is not yet
    pipelined for 200 MHz (unregistered multipliers, a block RAM rsqrt ROM).

    Parameters
    ----------
    ba : int
        Index bits (1..6, default 4).
    lanes : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    cw : int
        Centroid width in bits, signed (2..16, default 8).
    rms : int
        0: LayerNorm, 1: RMSNorm.

    Attributes
    ----------
    i, o : streams (see :class:`hdl.softmax.HistogramRowUnit`); ``o.y``: signed outputs.
    tbl : codebook write port: ``en``, ``addr`` (``ba`` bits), ``data`` (signed ``cw``).
    overflow : a row was longer than the buffer (sticky until reset).
    """

    def __init__(self, *, ba=4, lanes=4, max_len=1024, cw=8, rms=0):
        cfg = NormConfig(ba=ba, lanes=lanes, max_len=max_len, cw=cw, rms=rms)
        tbl = wiring.Signature({"en": Out(1), "addr": Out(ba), "data": Out(signed(cw))})
        super().__init__(cfg, signed(cfg.out_bits), tbl)

    def compute(self, m, hist, nonempty, n, start, remap_we, remap_addr, remap_data, done):
        cfg = self._config
        ba, J, cw, cb = cfg.ba, 1 << cfg.ba, cfg.cw, cfg.count_bits
        RA, RF, OF = gnorm.RSQRT_ADDR, gnorm.RSQRT_FRAC, gnorm.OUT_FRAC
        VW = 2 * cb + 2 * cw
        EM = (VW - 1) // 2
        Ls, Lc, Lv, Lrom, Lmr, _ = cfg.stage_latencies

        C = [Signal(signed(cw), name=f"centroid{j}", reset_less=True) for j in range(J)]
        for j in range(J):
            with m.If(self.tbl.en & (self.tbl.addr == j)):
                m.d.sync += C[j].eq(self.tbl.data)

        names = ["idle", "sum", "var", "vsub", "lead1", "lead2", "shamt", "shift1", "shift2",
                 "shift3", "rom", "rsqrt", "map"]
        st = {s: Signal(name=f"seq_{s}", init=(s == "idle")) for s in names}

        def goto(src, dst):
            m.d.sync += [st[src].eq(0), st[dst].eq(1)]

        k = Signal(range(J + Ls + Lc + Lmr + 8))
        iss = Signal()
        m.d.comb += iss.eq((st["sum"] | st["map"]) & (k < J))
        n_u = Signal(cb)
        m.d.comb += n_u.eq(n)

        # bin k and centroid k through registered 4:1 selections (Ls stages)
        hk, ls = select_pipe(m, hist, k[:ba], "hist_k")
        ck, ls2 = select_pipe(m, C, k[:ba], "cent_k")
        assert ls == ls2 == Ls

        # SUM: t1 = h[k] C[k] (Lc), t2 = t1 C[k] (Lc), accumulate
        t1, lc = pipelined_mul(m, hk, ck, "s1_mul")
        ck_d = delay(m, ck, Lc, "cent_k1")
        t2, lc2 = pipelined_mul(m, t1, ck_d, "s2_mul")
        assert lc == lc2 == Lc
        t1_d = delay(m, t1, Lc, "s1_term")
        v_acc = delay(m, iss & st["sum"], Ls + 2 * Lc, "sum_valid")
        S1 = Signal(signed(cb + cw + 1))
        S2 = Signal(signed(cb + 2 * cw + 1))
        with m.If(v_acc):
            m.d.sync += [S1.eq(S1 + t1_d), S2.eq(S2 + t2)]

        # VAR: n S2 and S1**2 (free running on the row's sums; read Lv cycles later)
        A, la = pipelined_mul(m, S2, n_u, "var_ns2")
        B, lb = pipelined_mul(m, S1, S1, "var_s1s1")
        assert max(la, lb) == Lv
        V = Signal(VW)
        # leading one of V in two stages: per 16-bit chunk (registered), then the top chunk
        chunks = [V[c:c + 16] for c in range(0, VW, 16)]
        c_nz = [Signal(name=f"v_nz{q}") for q in range(len(chunks))]
        c_pos = [Signal(4, name=f"v_pos{q}") for q in range(len(chunks))]
        for q, ch in enumerate(chunks):
            m.d.sync += [c_nz[q].eq(ch != 0), c_pos[q].eq(leading_one(m, ch, f"v_lead{q}"))]
        lead = Const(0, range(VW))
        for q in range(len(chunks)):
            lead = Mux(c_nz[q], c_pos[q] + 16 * q, lead)
        e = Signal(range(EM + 1))
        zero = Signal()
        shamt = Signal(range(2 * EM + 1))
        # V << (RA + shamt) in three stages of 4:1 selection (by 16s, by 4s, by 0..3); the
        # rsqrt ROM reads bits [2 EM, 2 EM + RA + 2) of the result
        v1 = Signal(VW + RA + 2 * EM)
        v2 = Signal(VW + RA + 2 * EM)
        vn = Signal(VW + RA + 2 * EM)
        rom_addr = Signal(RA + 2)
        m.d.comb += rom_addr.eq(vn[2 * EM:2 * EM + RA + 2])
        R, lrom = rsqrt_lookup(m, rom_addr, "rsqrt")
        assert lrom == Lrom
        r = Signal(RF + 1)
        sh = Signal(range(EM + RF))

        # MAP: n C[k] (Lc), minus S1 (1), times r (Lmr), >> sh in three stages, write
        nc, lc3 = pipelined_mul(m, n_u, ck, "map_nc")
        assert lc3 == Lc
        num = Signal(signed(cb + cw + 2))
        m.d.sync += num.eq(nc if cfg.rms else nc - S1)
        prod, lmr = pipelined_mul(m, num, r, "map_mul")
        assert lmr == Lmr
        sh_hi = Signal.like(prod)
        m.d.sync += sh_hi.eq(prod >> Cat(Const(0, 4), sh[4:]))
        sh_mid = Signal.like(prod)
        m.d.sync += sh_mid.eq(sh_hi >> Cat(Const(0, 2), sh[2:4]))
        T = Signal(signed(cfg.out_bits))
        m.d.sync += T.eq(Mux(zero, 0, sh_mid >> sh[:2]))
        depth = Ls + Lc + 1 + Lmr + 3
        v_w = delay(m, iss & st["map"], depth, "remap_valid")
        j_w = delay(m, k[:ba], depth, "remap_j")
        m.d.comb += [remap_we.eq(v_w), remap_addr.eq(j_w), remap_data.eq(T)]

        # the per-row sequence, one-hot state flags
        with m.If(st["idle"]):
            # k runs while idle (so every selection input has been seen by an event-driven
            # simulator before the first row: no X at power-up) and starts from 0 per row
            m.d.sync += [k.eq(k + 1), S1.eq(0), S2.eq(0)]
            with m.If(start):
                m.d.sync += k.eq(0)
                goto("idle", "sum")
        with m.If(st["sum"]):
            m.d.sync += k.eq(k + 1)
            with m.If(k == J - 1 + Ls + 2 * Lc):
                m.d.sync += k.eq(0)
                goto("sum", "var")
        with m.If(st["var"]):
            m.d.sync += k.eq(k + 1)
            with m.If(k == Lv - 1):
                goto("var", "vsub")
        with m.If(st["vsub"]):
            m.d.sync += V.eq(A if cfg.rms else A - B)
            goto("vsub", "lead1")
        with m.If(st["lead1"]):
            goto("lead1", "lead2")
        with m.If(st["lead2"]):
            m.d.sync += [e.eq(lead >> 1), zero.eq(~Cat(c_nz).any())]
            goto("lead2", "shamt")
        with m.If(st["shamt"]):
            m.d.sync += shamt.eq(2 * EM - (e << 1))
            goto("shamt", "shift1")
        with m.If(st["shift1"]):
            m.d.sync += v1.eq((V << RA) << Cat(Const(0, 4), shamt[4:]))
            goto("shift1", "shift2")
        with m.If(st["shift2"]):
            m.d.sync += v2.eq(v1 << Cat(Const(0, 2), shamt[2:4]))
            goto("shift2", "shift3")
        with m.If(st["shift3"]):
            m.d.sync += [vn.eq(v2 << shamt[:2]), k.eq(0)]
            goto("shift3", "rom")
        with m.If(st["rom"]):
            m.d.sync += k.eq(k + 1)
            with m.If(k == Lrom - 1):
                goto("rom", "rsqrt")
        with m.If(st["rsqrt"]):
            m.d.sync += [r.eq(R), sh.eq(RF - OF + e), k.eq(0)]
            goto("rsqrt", "map")
        with m.If(st["map"]):
            m.d.sync += k.eq(k + 1)
            with m.If(k == J - 1 + depth):
                m.d.comb += done.eq(1)
                goto("map", "idle")


class NormBaseline(wiring.Component):
    """Baseline: a conventional fixed-point LayerNorm / RMSNorm of the same throughput.

    The input is the values themselves (``width``-bit signed, the dequantized
    centroids of the histogram unit), P lanes, II = 1.  While a row comes in:
    the row buffer, and per lane ``x`` and ``x**2`` (P multipliers) into two
    adder trees and the running sums ``S1``, ``S2`` and count ``n``.  Per row:
    ``V``, the rsqrt ROM, ``e`` exactly as :class:`HistogramNorm`.  Then the
    row is read back and every element computes ``((n x - S1) r) >> (4 + e)``
    (two multipliers per lane).  Golden twin: :func:`golden.norm.norm_values_rows`
    (the histogram arithmetic with every row its own codebook, so the two
    units give the same integers on the same values).

    Latency: the first output beat is valid 15 cycles after the row's last
    input beat is accepted (3 input stages and the start flag, the idle
    state, 6 per-row steps, 4 output stages); II = 1 in and out; rows do not overlap
    (as :class:`hdl.softmax.HistogramRowUnit`).

    Parameters
    ----------
    width : int
        Value width in bits, signed (2..16, default 8).
    lanes : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    rms : int
        0: LayerNorm, 1: RMSNorm.
    """

    def __init__(self, *, width=8, lanes=4, max_len=1024, rms=0):
        from amaranth.lib import data, stream
        from amaranth.lib.wiring import In
        from kllm.config import NormBaselineConfig
        cfg = self._config = NormBaselineConfig(width=width, lanes=lanes, max_len=max_len, rms=rms)
        self.in_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(width), lanes),
            "count": unsigned(cfg.lane_count_bits), "first": 1, "last": 1})
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(signed(cfg.out_bits), lanes),
            "count": unsigned(cfg.lane_count_bits), "first": 1, "last": 1})
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "overflow": Out(1),
        })

    @property
    def config(self):
        return self._config

    @property
    def latency(self):
        return self._config.latency

    def elaborate(self, platform):
        from amaranth import Cat
        m = Module()
        cfg = self._config
        P, W, lcb, cb = cfg.lanes, cfg.width, cfg.lane_count_bits, cfg.count_bits
        RA, RF, OF = gnorm.RSQRT_ADDR, gnorm.RSQRT_FRAC, gnorm.OUT_FRAC
        VW = 2 * cb + 2 * W
        EM = (VW - 1) // 2

        outp = Signal()
        rows = RowInput(m, self.i, self.overflow,
                        Cat(self.i.payload.x.as_value(), self.i.payload.count), cfg.max_beats)
        br, wptr, s0, s0_valid, s0_end = rows.read, rows.wptr, rows.s0, rows.s0_valid, rows.s0_end

        # stage 1: masked values and squares; stage 2: adder trees; stage 3: running sums
        xm = [Signal(signed(W), name=f"s1_x{p}") for p in range(P)]
        sq = [Signal(2 * W, name=f"s1_sq{p}") for p in range(P)]
        nv1, s1_end = Signal(range(P + 1)), Signal()
        for p in range(P):
            v = Mux(s0_valid & (s0.count > p), s0.x[p], 0)
            m.d.sync += [xm[p].eq(v), sq[p].eq(v * v)]
        nv = Const(0, 1)
        for p in range(P):
            nv = nv + (s0_valid & (s0.count > p))
        m.d.sync += [nv1.eq(nv), s1_end.eq(s0_end)]
        sum1 = Signal(signed(W + P.bit_length() + 1))
        sum2 = Signal(2 * W + P.bit_length())
        nv2, s2_end = Signal(range(P + 1)), Signal()
        t1, t2 = xm[0], sq[0]
        for p in range(1, P):
            t1, t2 = t1 + xm[p], t2 + sq[p]
        m.d.sync += [sum1.eq(t1), sum2.eq(t2), nv2.eq(nv1), s2_end.eq(s1_end)]
        S1 = Signal(signed(cb + W + 1))
        S2 = Signal(signed(cb + 2 * W + 1))
        n = Signal(cb)
        start = Signal()
        m.d.sync += [S1.eq(S1 + sum1), S2.eq(S2 + sum2), n.eq(n + nv2), start.eq(s2_end)]

        # per row: V, rsqrt (as HistogramNorm)
        n_s = Signal(signed(cb + 1))
        m.d.comb += n_s.eq(n)
        table = gnorm.rsqrt_table().tolist()
        rom_init = [table[min((t - (1 << RA)) // 3, (1 << RA) - 1)] if t >= (1 << RA) else 0
                    for t in range(4 << RA)]
        rom = memory.Memory(shape=unsigned(RF + 1), depth=4 << RA, init=rom_init)
        m.submodules.rsqrt_rom = rom
        rr = rom.read_port(domain="sync")
        A, B = Signal(signed(VW + 2)), Signal(signed(VW + 2))
        V = Signal(VW)
        e = Signal(range(EM + 1))
        zero = Signal()
        vn = Signal(VW + RA + 2 * EM)
        r = Signal(RF + 1)
        sh = Signal(range(EM + RF))
        lead = leading_one(m, V, "v_lead")
        shamt = Signal(range(2 * EM + 1))
        m.d.comb += [shamt.eq(2 * EM - (e << 1)), rr.addr.eq(vn[2 * EM:2 * EM + RA + 2])]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.next = "VAR1"
            with m.State("VAR1"):
                m.d.sync += [A.eq(n_s * S2), B.eq(S1 * S1)]
                m.next = "VAR2"
            with m.State("VAR2"):
                m.d.sync += V.eq(A if cfg.rms else A - B)
                m.next = "LEAD"
            with m.State("LEAD"):
                m.d.sync += [e.eq(lead >> 1), zero.eq(V == 0)]
                m.next = "NORMALIZE"
            with m.State("NORMALIZE"):
                m.d.sync += vn.eq((V << RA) << shamt)
                m.next = "ROM"
            with m.State("ROM"):
                m.next = "RSQRT"
            with m.State("RSQRT"):
                m.d.sync += [r.eq(rr.data), sh.eq(RF - OF + e), outp.eq(1)]
                m.next = "IDLE"

        # output: read the row back, two multipliers per lane
        adv = Signal()
        m.d.comb += adv.eq(~self.o.valid | self.o.ready)
        rptr = Signal(range(cfg.max_beats + 1))
        issue = Signal()
        m.d.comb += [issue.eq(outp & (rptr != wptr)), br.en.eq(adv), br.addr.eq(rptr)]
        vA, fA, lA = Signal(), Signal(), Signal()
        vB, fB, lB, cB = Signal(), Signal(), Signal(), Signal(lcb)
        vC, fC, lC, cC = Signal(), Signal(), Signal(), Signal(lcb)
        cA = br.data[P * W:]
        with m.If(adv):
            m.d.sync += [vA.eq(issue), fA.eq(rptr == 0), lA.eq(rptr == wptr - 1),
                         vB.eq(vA), fB.eq(fA), lB.eq(lA), cB.eq(cA),
                         vC.eq(vB), fC.eq(fB), lC.eq(lB), cC.eq(cB),
                         self.o.valid.eq(vC), self.o.payload.first.eq(fC),
                         self.o.payload.last.eq(lC), self.o.payload.count.eq(cC)]
            with m.If(issue):
                m.d.sync += rptr.eq(rptr + 1)
        for p in range(P):
            x = br.data[p * W:(p + 1) * W].as_signed()
            num = Signal(signed(cb + W + 2), name=f"num{p}")
            prod = Signal(signed(cb + W + RF + 4), name=f"prod{p}")
            with m.If(adv):
                m.d.sync += [num.eq(n_s * x if cfg.rms else n_s * x - S1),
                             prod.eq(num * r),
                             self.o.payload.y[p].eq(Mux(zero | (cC <= p), 0, prod >> sh))]

        with m.If(self.o.valid & self.o.ready & self.o.payload.last):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [outp.eq(0), rptr.eq(0), n.eq(0), S1.eq(0), S2.eq(0)]
        return m
