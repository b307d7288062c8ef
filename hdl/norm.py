"""LayerNorm / RMSNorm of rows of indices by histogram.

Golden twin: :mod:`golden.norm`.  Configuration: :class:`base.config.NormConfig`.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned

from base import formats as fmt
from base.config import NormBaselineConfig, NormConfig
from base.latency import DIV3_BITS, row_rsqrt_latency, rsqrt_latency
from hdl.blocks import (adder_tree, banked_memory, delay, leading_one_staged, pipelined_mul,
                        select_pipe, shift_right_staged)
from hdl.component import write_signature
from hdl.histogram import HistogramRowUnit
from hdl.rows import RowRead, SkidOutput, ValueRowUnit, row_input, wait_cycles

__all__ = ["HistogramNorm", "NormBaseline"]


def rsqrt_lookup(m, top, name):
    """``RSQRT[min((top - 2**RA) // 3, 2**RA - 1)]`` (:mod:`golden.norm`) for the
    ``RA + 2``-bit normalized ``top`` in ``[2**RA, 4 * 2**RA)``, pipelined: the
    division by 3 as a fabric multiply by 683 (exact below 768), the clamp, then
    the 256-entry ROM in LUT banks behind a registered copy of the address per group of
    four banks (:func:`hdl.blocks.banked_memory` with ``copies``: no address bit drives all
    16 banks' logic).  Returns ``(r, latency)``, ``latency = rsqrt_latency()``; ``top``
    below ``2**RA`` (V = 0) gives an unspecified ``r``."""
    RA, RF = fmt.RSQRT_ADDR, fmt.RSQRT_FRAC
    x = Signal(RA + 2, name=f"{name}_x")
    m.d.comb += x.eq(top - (1 << RA))
    q, lq = pipelined_mul(m, x, Const(683, DIV3_BITS), f"{name}_div3")
    i = Signal(RA, name=f"{name}_i")
    m.d.sync += i.eq(Mux((q >> 11) >= (1 << RA), (1 << RA) - 1, q >> 11))
    r, lr = banked_memory(m, f"{name}_rom", unsigned(RF + 1), 1 << RA, i,
                          init=fmt.rsqrt_table(), copies=True)
    assert lq + 1 + lr == rsqrt_latency()
    return r, lq + 1 + lr


def row_rsqrt(m, S1, S2, n, rms, VW):
    """Free-running pipeline from a row's sums to its normalization: ``V = n S2 - S1**2``
    (``n S2`` for RMSNorm; fabric multipliers), its leading one in two stages, the shift
    amount, ``V`` normalized in three stages of 4:1 shifts, :func:`rsqrt_lookup`.  Returns
    ``(r, e, zero, latency)``: the outputs hold the row's values from ``latency`` cycles
    after ``S1``, ``S2``, ``n`` become stable (``row_rsqrt_latency``) for as long as they stay."""
    RA = fmt.RSQRT_ADDR
    EM = (VW - 1) // 2
    A, la = pipelined_mul(m, S2, n, "var_ns2")
    B, lb = pipelined_mul(m, S1, S1, "var_s1s1")
    Lv = max(la, lb)
    V = Signal(VW)
    m.d.sync += V.eq(A if rms else A - B)
    # leading one of V in two stages: per 16-bit chunk (registered), then the top chunk
    lead, nonzero = leading_one_staged(m, V, "v")
    e = Signal(range(EM + 1))
    zero = Signal()
    m.d.sync += [e.eq(lead >> 1), zero.eq(~nonzero)]
    shamt = Signal(range(2 * EM + 1))
    m.d.sync += shamt.eq(2 * EM - (e << 1))
    # V << (RA + shamt) in three stages of 4:1 selection (by 16s, by 4s, by 0..3); the
    # rsqrt lookup reads bits [2 EM, 2 EM + RA + 2) of the result
    v1 = Signal(VW + RA + 2 * EM)
    v2 = Signal(VW + RA + 2 * EM)
    vn = Signal(VW + RA + 2 * EM)
    V_d = delay(m, V, 3, "v_norm")        # V meets its shift amount
    m.d.sync += [v1.eq((V_d << RA) << Cat(Const(0, 4), shamt[4:])),
                 v2.eq(v1 << Cat(Const(0, 2), shamt[2:4])),
                 vn.eq(v2 << shamt[:2])]
    # (shamt is stable from then on: V is, so a single register per stage suffices)
    rom_addr = Signal(RA + 2)
    m.d.comb += rom_addr.eq(vn[2 * EM:2 * EM + RA + 2])
    r, lrom = rsqrt_lookup(m, rom_addr, "rsqrt")
    latency = Lv + 7 + lrom
    assert latency == row_rsqrt_latency(Lv)
    return r, e, zero, latency


class HistogramNorm(HistogramRowUnit):
    """LayerNorm (``rms=0``) or RMSNorm (``rms=1``) of each row of indices (numeric contract: docs/ARCHITECTURE.md).

    Per row (see :mod:`golden.norm`, bit-exact): ``S1 = sum_j h[j] C[j]`` and
    ``S2 = sum_j h[j] C[j]**2`` over the 2**ba bins (two multipliers, one bin
    per cycle); ``V = n S2 - S1**2`` (LayerNorm) or ``V = n S2`` (RMSNorm);
    ``1 / sqrt(V)`` from a normalized lookup: ``V = 4**e v``, ``v`` in [1, 4),
    whose top 10 bits (``v`` with 8 fraction bits, ``top``) give
    ``RSQRT[min((top - 256) // 3, 255)]`` from the golden 256-entry table over
    [1, 4) (:func:`rsqrt_lookup`: the division by 3 a multiply by 683); then the remap table
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

    Pipelining for a 200 MHz clock (as :class:`hdl.softmax.HistogramSoftmax`,
    :mod:`hdl.blocks`): bin ``h[k]`` and centroid ``C[k]`` through registered
    4:1 selections (``Ls = select_latency(2**ba)``); every multiplier in the
    fabric with a register per adder level (``Lc = mul_latency(cw)`` for the
    products with a centroid, ``Lv`` the deeper of ``n S2`` and ``S1**2``,
    ``Lmr = mul_latency(17)`` for ``(n C - S1) r``); the normalization
    (:func:`row_rsqrt`) free running from the sums: ``V``, its leading one in
    two stages, the shift amount, three stages of 4:1 shifts and the rsqrt
    lookup (``Lrom = rsqrt_latency()``), ``Ln = Lv + 7 + Lrom`` cycles; the
    final shift in three stages; one-hot sequence flags, one counter whose
    step ends are registered look-ahead compares.

    Latency: ``compute_cycles = 2 * 2**ba + 13 + 2 Ls + 3 Lc + Lv + Lrom +
    Lmr`` (idle 1, sums ``2**ba + Ls + 2 Lc``, normalization ``Ln + 1``, remap
    ``2**ba + Ls + Lc + Lmr + 4``), so the first output beat is valid
    ``compute_cycles + 6 + Lr`` cycles after the row's last input beat is
    accepted, ``Lr`` the row buffer read (:func:`base.latency.banked_latency`),
    plus one cycle for the registered remap read (``pipelined_read``: the
    remap LUTRAM's read between two registers; the last-beat flag from
    registered compares); 92 for ba = 4, cw = 8, P = 4, max_len = 1024; see
    :class:`hdl.histogram.HistogramRowUnit` for throughput and row length;
    :attr:`base.config.NormConfig.latency`).

    Parameters
    ----------
    ba : int
        Index bits (1..6, default 4).
    elems : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    cw : int
        Centroid width in bits, signed (2..16, default 8).
    rms : int
        0: LayerNorm, 1: RMSNorm.

    Attributes
    ----------
    i, o : streams (see :class:`hdl.histogram.HistogramRowUnit`); ``o.y``: signed outputs.
    tbl : codebook write port: ``en``, ``addr`` (``ba`` bits), ``data`` (signed ``cw``).
    overflow : a row was longer than the buffer (sticky until reset).
    """

    pipelined_read = True    # the remap read registered, the last-beat flag from registered compares

    Config = NormConfig

    def __init__(self, config=None, **params):
        cfg = self.configure(config, params)
        ba, cw = cfg.ba, cfg.cw
        super().__init__(cfg, signed(cfg.out_bits), write_signature(ba, signed(cw)))

    def compute(self, m, hist, nonempty, n, start, start_next, remap_we, remap_addr, remap_data,
                done):
        cfg = self._config
        ba, J, cw, cb = cfg.ba, 1 << cfg.ba, cfg.cw, cfg.count_bits
        RF, OF = fmt.RSQRT_FRAC, fmt.NORM_OUT_FRAC
        VW = 2 * cb + 2 * cw
        EM = (VW - 1) // 2
        Ls, Lc, Lv, _, Lmr, _ = cfg.stage_latencies
        Ln = row_rsqrt_latency(Lv)

        C = [Signal(signed(cw), name=f"centroid{j}", reset_less=True) for j in range(J)]
        for j in range(J):
            with m.If(self.tbl.en & (self.tbl.addr == j)):
                m.d.sync += C[j].eq(self.tbl.data)

        names = ["idle", "sum", "norm", "map"]
        st = {s: Signal(name=f"seq_{s}", init=(s == "idle")) for s in names}
        k = Signal(range(J + Ls + 2 * Lc + Lmr + Ln + 8))
        iss = Signal()
        m.d.comb += iss.eq((st["sum"] | st["map"]) & (k < J))
        n_u = Signal(cb)
        m.d.comb += n_u.eq(n)

        # bin k and centroid k through registered 4:1 selections (Ls stages)
        hk, ls = select_pipe(m, hist, k[:ba], "hist_k")
        ck, ls2 = select_pipe(m, C, k[:ba], "cent_k")
        assert ls == ls2 == Ls

        S1, S2 = self._sum_pass(m, hk, ck, iss & st["sum"])

        # normalization: free running on the row's sums (stable until the row's next SUM)
        r, e, zero, lnorm = row_rsqrt(m, S1, S2, n_u, cfg.rms, VW)
        assert lnorm == Ln
        sh = Signal(range(EM + RF))
        m.d.comb += sh.eq(RF - OF + e)

        depth = self._map_pass(m, n_u, ck, S1, r, sh, zero, iss & st["map"], k[:ba],
                               remap_we, remap_addr, remap_data)
        self._sequence(m, st, k, start, start_next, depth, S1, S2, done)

    def _sum_pass(self, m, hk, ck, valid):
        """SUM: ``t1 = h[k] C[k]`` (``Lc``), ``t2 = t1 C[k]`` (``Lc``), accumulated into
        ``S1`` and ``S2`` (``valid``: bin ``k`` issued in the sum step).  Returns
        ``(S1, S2)``."""
        cfg = self._config
        cw, cb = cfg.cw, cfg.count_bits
        Ls, Lc = cfg.stage_latencies[:2]
        t1, lc = pipelined_mul(m, hk, ck, "s1_mul")
        ck_d = delay(m, ck, Lc, "cent_k1")
        t2, lc2 = pipelined_mul(m, t1, ck_d, "s2_mul")
        assert lc == lc2 == Lc
        t1_d = delay(m, t1, Lc, "s1_term")
        v_acc = delay(m, valid, Ls + 2 * Lc, "sum_valid")
        S1 = Signal(signed(cb + cw + 1))
        S2 = Signal(signed(cb + 2 * cw + 1))
        with m.If(v_acc):
            m.d.sync += [S1.eq(S1 + t1_d), S2.eq(S2 + t2)]
        return S1, S2

    def _map_pass(self, m, n_u, ck, S1, r, sh, zero, valid, j, remap_we, remap_addr,
                  remap_data):
        """MAP: ``n C[k]`` (``Lc``), minus ``S1`` (1), times ``r`` (``Lmr``), shifted right by
        ``sh`` in three stages (0 for every bin when ``zero``), written into the remap
        tables (``valid``: bin ``j`` issued in the map step).  Returns the pipeline's depth
        from the issue."""
        cfg = self._config
        cw, cb = cfg.cw, cfg.count_bits
        Ls, Lc, _, _, Lmr, _ = cfg.stage_latencies
        nc, lc3 = pipelined_mul(m, n_u, ck, "map_nc")
        assert lc3 == Lc
        num = Signal(signed(cb + cw + 2))
        m.d.sync += num.eq(nc if cfg.rms else nc - S1)
        prod, lmr = pipelined_mul(m, num, r, "map_mul")
        assert lmr == Lmr
        T = Signal(signed(cfg.out_bits))
        m.d.sync += T.eq(Mux(zero, 0, shift_right_staged(m, prod, sh)))
        depth = Ls + Lc + 1 + Lmr + 3
        v_w = delay(m, valid, depth, "remap_valid")
        j_w = delay(m, j, depth, "remap_j")
        m.d.comb += [remap_we.eq(v_w), remap_addr.eq(j_w), remap_data.eq(T)]
        return depth

    def _sequence(self, m, st, k, start, start_next, depth, S1, S2, done):
        """The per-row sequence, one-hot state flags ``st``: idle, the sum step, the
        normalization, the map step (``depth``: the map pipeline's); ``done`` at its end."""
        cfg = self._config
        J = 1 << cfg.ba
        Ls, Lc, Lv = cfg.stage_latencies[:3]
        Ln = row_rsqrt_latency(Lv)

        def goto(src, dst):
            m.d.sync += [st[src].eq(0), st[dst].eq(1)]

        # k counts every cycle and is cleared
        # where a counted step starts (one clear term, no per-state next value)
        # the ends of the counted steps are registered look-ahead compares (k one below)
        # k's clear is a register too: ``(idle & start) | end_sum | end_norm`` one cycle
        # ahead, from ``start_next`` and the next state of ``idle`` (no logic in front of k's
        # reset)
        k_clr = Signal()
        end_sum, end_norm, end_map = Signal(), Signal(), Signal()
        sum_next = st["sum"] & (k == J - 2 + Ls + 2 * Lc)
        norm_next = st["norm"] & (k == Ln - 1)
        idle_next = (st["idle"] & ~start) | end_map
        m.d.sync += [
            end_sum.eq(sum_next),
            end_norm.eq(norm_next),
            end_map.eq(st["map"] & (k == J - 2 + depth)),
            k_clr.eq((idle_next & start_next) | sum_next | norm_next),
        ]
        # (k also runs while idle, so every selection input has been seen by an
        # event-driven simulator before the first row: no X at power-up)
        m.d.sync += k.eq(Mux(k_clr, 0, k + 1))
        with m.If(st["idle"]):
            m.d.sync += [S1.eq(0), S2.eq(0)]
            with m.If(start):
                goto("idle", "sum")
        with m.If(end_sum):
            goto("sum", "norm")
        with m.If(end_norm):           # r, e, zero hold the row's values
            goto("norm", "map")
        with m.If(end_map):
            m.d.comb += done.eq(1)
            goto("map", "idle")


class NormBaseline(ValueRowUnit):
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

    Pipelined for 200 MHz with the same building blocks and memories as
    :class:`HistogramNorm`: LUTRAM row buffer (``Lr``), fabric multipliers
    with a register per adder level (``x**2`` and ``n x``: ``Lsq =
    mul_latency(width)``; ``(n x - S1) r``: ``Lmr``), lane adder trees with a
    register per level (``Lt = tree_latency(P)``), the same free-running
    normalization (:func:`row_rsqrt`, ``Ln``), the final shift in three
    stages; the output pipeline stalls on backpressure.

    Latency: the first output beat is valid ``9 + 2 Lsq + Lt + Ln + Lr +
    Lmr`` cycles after the row's last input beat is accepted (51 for width =
    8, P = 4, max_len = 1024; :attr:`base.config.NormBaselineConfig.latency`);
    II = 1 in and out; rows do not overlap (as
    :class:`hdl.histogram.HistogramRowUnit`).

    Parameters
    ----------
    width : int
        Value width in bits, signed (2..16, default 8).
    elems : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    rms : int
        0: LayerNorm, 1: RMSNorm.
    """

    Config = NormBaselineConfig

    def __init__(self, config=None, **params):
        cfg = self.configure(config, params)
        super().__init__(cfg, signed(cfg.out_bits))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        cb, W = cfg.count_bits, cfg.width
        RF, OF = fmt.RSQRT_FRAC, fmt.NORM_OUT_FRAC
        VW = 2 * cb + 2 * W
        EM = (VW - 1) // 2
        Lv, Lr = cfg.stage_latencies[2:4]
        Ln = row_rsqrt_latency(Lv)

        outp = Signal()
        rows = row_input(m, self, "x")
        assert rows.read_latency == Lr
        S1, S2, n, start = self._row_sums(m, rows)

        # per row: V, rsqrt (free running, as HistogramNorm), waited for
        r, e, zero, lnorm = row_rsqrt(m, S1, S2, n, cfg.rms, VW)
        assert lnorm == Ln
        # the output shift amount, registered (constant for the row; ready long before r)
        sh = Signal(range(EM + RF))
        m.d.sync += sh.eq(RF - OF + e)
        wait_cycles(m, start, Ln, outp)

        out = SkidOutput(m, self.o)      # o.ready reaches only the output registers
        # read once per row (rewound while outp is low, i.e. from the row's end to the next
        # row's output pass)
        rd = RowRead(m, rows, outp, out.advance)
        self._output_pass(m, out, rd, rows.read, n, S1, r, sh, zero)

        with m.If(out.last_out):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [outp.eq(0), n.eq(0), S1.eq(0), S2.eq(0)]
        return m

    def _row_sums(self, m, rows):
        """The row's sums while it comes in: masked values (registered), ``x**2`` per lane
        (fabric, ``Lsq`` stages), adder trees (``Lt`` stages), the running sums ``S1``,
        ``S2`` and count ``n`` (cleared by the unit).  Returns ``(S1, S2, n, start)``,
        ``start``: the row's sums are complete."""
        cfg = self._config
        P, W, cb = cfg.elems, cfg.width, cfg.count_bits
        Lsq, Lt = cfg.stage_latencies[:2]
        s0, s0_end = rows.s0, rows.s0_end
        ok = rows.lane_valid(m, P)
        xm = [Signal(signed(W), name=f"s1_x{p}") for p in range(P)]
        lv = [Signal(name=f"s1_lv{p}") for p in range(P)]
        for p in range(P):
            m.d.sync += [xm[p].eq(Mux(ok[p], s0.x[p], 0)), lv[p].eq(ok[p])]
        sq = []
        for p in range(P):
            q, lsq = pipelined_mul(m, xm[p], xm[p], f"sq{p}")
            assert lsq == Lsq
            sq.append(q)
        xd = [delay(m, xm[p], Lsq, f"x_sq{p}") for p in range(P)]
        lvd = [delay(m, lv[p], Lsq, f"lv_sq{p}") for p in range(P)]
        sum1, lt1 = adder_tree(m, xd, "sum1")
        sum2, lt2 = adder_tree(m, sq, "sum2")
        nv, lt3 = adder_tree(m, [x.as_unsigned() for x in lvd], "nv")
        assert lt1 == lt2 == lt3 == Lt
        S1 = Signal(signed(cb + W + 1))
        S2 = Signal(signed(cb + 2 * W + 1))
        n = Signal(cb)
        start = delay(m, s0_end, 2 + Lsq + Lt, "start")    # the row's sums are complete
        m.d.sync += [S1.eq(S1 + sum1), S2.eq(S2 + sum2), n.eq(n + nv)]
        return S1, S2, n, start

    def _output_pass(self, m, out, rd, br, n, S1, r, sh, zero):
        """The output pass: the row read back (``rd`` from ``br``); per lane ``n x``
        (``Lsq``), minus ``S1``, times ``r`` (``Lmr``), shifted right by ``sh`` in three
        stages (the last one the output register ``out``); 0 for every element when
        ``zero``.  The pipeline stalls on backpressure."""
        cfg = self._config
        P, W, cb = cfg.elems, cfg.width, cfg.count_bits
        Lsq, _, _, Lr, Lmr = cfg.stage_latencies
        adv = out.advance
        issue, at_first, at_last = rd.issue, rd.at_first, rd.at_last
        depth = Lr + Lsq + 1 + Lmr + 3
        fr = delay(m, Cat(issue, at_first, at_last), depth - 1, "frame", en=adv)
        cnt = delay(m, br.data[P * W:], depth - 1 - Lr, "count", en=adv)
        n_x = n.as_unsigned()
        for p in range(P):
            x = br.data[p * W:(p + 1) * W].as_signed()
            nx, lw = pipelined_mul(m, n_x, x, f"nx{p}", en=adv)
            assert lw == Lsq
            num = Signal(signed(cb + W + 2), name=f"num{p}")
            with m.If(adv):
                m.d.sync += num.eq(nx if cfg.rms else nx - S1)
            prod, lmr = pipelined_mul(m, num, r, f"prod{p}", en=adv)
            assert lmr == Lmr
            y = shift_right_staged(m, prod, sh, names=(f"sh_hi{p}", f"sh_mid{p}"), en=adv)
            m.d.comb += out.payload.y[p].eq(Mux(zero | (cnt <= p), 0, y))
        out.present(m, fr[0], fr[1], fr[2], cnt)
