"""Softmax of rows of indices by histogram, and its conventional fixed-point baseline.

Golden twin: :mod:`golden.softmax`.  Configuration: :class:`base.config.SoftmaxConfig`.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned

from base import formats as fmt
from base.config import SoftmaxBaselineConfig, SoftmaxConfig
from hdl.blocks import (adder_tree, banked_memory, delay, leading_one, leading_one_staged,
                        pipelined_mul, select_pipe, shift_right_staged)
from hdl.component import write_signature
from hdl.histogram import HistogramRowUnit
from hdl.rows import RowRead, SkidOutput, ValueRowUnit, row_input, wait_cycles

__all__ = ["HistogramSoftmax", "SoftmaxBaseline", "recip_lookup"]


def recip_lookup(m, dn):
    """The normalized reciprocal of ``dn`` (``D`` shifted left until its leading one is the
    top bit): the ``RECIP_ADDR`` bits below the leading one address the fixed reciprocal
    ROM (:func:`base.formats.recip_table`, ``RECIP_FRAC + 1`` bits) in LUT banks.  Returns
    ``(r, latency)``, ``latency = banked_latency(2**RECIP_ADDR)``."""
    DW, RA, RF = len(dn), fmt.RECIP_ADDR, fmt.RECIP_FRAC
    recip_addr = Signal(RA)
    m.d.comb += recip_addr.eq(dn[DW - 1 - RA:DW - 1])
    return banked_memory(m, "recip_rom", unsigned(RF + 1), 1 << RA, recip_addr,
                         init=fmt.recip_table())


class HistogramSoftmax(HistogramRowUnit):
    """Softmax of each row of score indices from its histogram (numeric contract: docs/ARCHITECTURE.md).

    Per row (see :mod:`golden.softmax`, bit-exact): the maximum index present
    ``m`` (highest non-empty bin); ``D = sum_j h[j] E[m][j]`` over the 2**ba
    bins with one multiplier, reading ``E[m][j] = round(2**15 exp((Cs[j] -
    Cs[m]) ss))`` from the exp table; ``1 / D`` from a 256-entry normalized
    reciprocal ROM (``D = 2**e (1 + f)``, the 8 bits of ``f`` below the
    leading one address it); then the remap table ``T[j] = (E[m][j] r) >>
    (1 + e)``, the probability of index ``j`` with 15 fraction bits.  Every
    element's output is ``T[idx]``: the row is read back from the buffer.

    The exp table (``4**ba`` entries of 16 bits, address ``m * 2**ba + j``,
    LUTRAM banks, written a cycle after ``tbl`` presents an entry) is written by
    the host through ``tbl`` for each layer's score
    codebook (:func:`golden.softmax.exp_table_writes`); only the entries with
    ``j <= m`` are ever read.  The reciprocal ROM is fixed.

    Precisions: ``E`` 16 bits unsigned (15 fraction bits, ``E <= 2**15``);
    bins and ``n`` ``count_bits`` bits; each product ``h[j] E`` and ``D``
    ``denom_bits`` bits (``D <= n 2**15``, exact); ``e`` the leading-one
    position of ``D``; reciprocal 17 bits (16 fraction bits, relative error
    <= 2**-9); ``E r`` 33 bits; output 16 bits unsigned with 15 fraction
    bits (truncated).

    Pipelining for a 200 MHz clock (ECP5, :mod:`hdl.blocks`): the exp table is
    read in ``Le = banked_latency(4**ba) + 1`` cycles (the banks, then one copy
    register per multiplier, so each copy drives one multiplier's partial
    products), the reciprocal ROM (logic)
    in ``Lrom = banked_latency(256)``; both multiplies are fabric adder trees
    (``Lm = mul_latency(count_bits)``, ``Lm2 = mul_latency(16)``); the bin
    lookup ``h[k]`` is a registered 4:1 selection tree (at most ``Le``
    stages, delayed to meet ``E``); the normalizing shift of ``D`` and the
    final shift of ``E r`` take two and three stages of at most 4:1.  The
    per-row sequence is one-hot (one flag register per step, so every
    register enable is a flag), and the ends of the sum and remap steps and
    of the row read are registered look-ahead compares (``rptr == wlast - 1``
    as the pointer advances).

    Latency: ``compute_cycles = 2 * 2**ba + 11 + 2 Le + Lm + Lm2 + Lrom``
    (idle 1, maximum 1, sum ``2**ba + Le + Lm``, normalization ``6 + Lrom``:
    the leading one of ``D`` in two stages, per 16-bit chunk then the top
    chunk, remap ``2**ba + Le + Lm2 + 3``), so the first output beat is valid
    ``compute_cycles + 5 + Lr`` cycles after the row's last input beat is
    accepted (72 for ba = 4, P = 4, max_len = 1024; see
    :class:`HistogramRowUnit` for throughput and row length;
    :attr:`base.config.SoftmaxConfig.latency`).

    Parameters
    ----------
    ba : int
        Index bits (1..6, default 4).
    elems : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).

    Attributes
    ----------
    i, o : streams (see :class:`HistogramRowUnit`); ``o.y``: 16-bit probabilities.
    tbl : exp table write port: ``en``, ``addr`` (``2 ba`` bits), ``data`` (16 bits).
    overflow : a row was longer than the buffer (sticky until reset).
    """

    Config = SoftmaxConfig

    def __init__(self, config=None, **params):
        cfg = self.configure(config, params)
        ba = cfg.ba
        super().__init__(cfg, unsigned(cfg.out_bits),
                         write_signature(2 * ba, unsigned(cfg.exp_bits)))

    def compute(self, m, hist, nonempty, n, start, start_next, remap_we, remap_addr, remap_data,
                done):
        k, mx, E_rd, dn, R = self._tables(m)
        summing, mapping, D, E_map, v_e, j_e = self._sum_pass(m, hist, k, E_rd)
        r, sh = self._map_pass(m, mapping, E_map, v_e, j_e, remap_we, remap_addr, remap_data)
        self._sequence(m, nonempty, start, done, k, mx, summing, mapping, D, dn, R, r, sh)

    def _tables(self, m):
        """The exp table (LUTRAM banks; the write port registered, so a write lands a cycle
        later), addressed by the row maximum ``mx`` and the bin counter ``k``, and the
        reciprocal ROM, addressed by the normalized ``dn``.  Returns ``(k, mx, E, dn, R)``."""
        cfg = self._config
        ba, J = cfg.ba, 1 << cfg.ba
        DW = cfg.denom_bits
        Le, _, Lm2, Lrom = cfg.stage_latencies[:4]

        tw_en, tw_addr = Signal(), Signal(2 * ba)
        tw_data = Signal(cfg.exp_bits)
        m.d.sync += [tw_en.eq(self.tbl.en), tw_addr.eq(self.tbl.addr), tw_data.eq(self.tbl.data)]
        k = Signal(range(J + Le + Lm2 + Lrom + 4))
        mx = Signal(ba)
        ea = Signal(2 * ba)
        m.d.comb += ea.eq(Cat(k[:ba], mx))
        E_rd, le = banked_memory(m, "exp_table", unsigned(cfg.exp_bits), J * J, ea,
                                 we=tw_en, waddr=tw_addr, wdata=tw_data)
        assert le + 1 == Le
        dn = Signal(DW)
        R, lr = recip_lookup(m, dn)
        assert lr == Lrom
        return k, mx, E_rd, dn, R

    def _sum_pass(self, m, hist, k, E_rd):
        """SUM: issue bin ``k`` (exp read, histogram bin registered and delayed alongside),
        multiply (``Lm`` stages), accumulate into ``D``.  Returns ``(summing, mapping, D,
        E_map, v_e, j_e)``: the two passes' flags, the sum, the map pass's copy of the exp
        read, and the issue flag and bin delayed to meet the exp read."""
        cfg = self._config
        ba, J = cfg.ba, 1 << cfg.ba
        Le, Lm = cfg.stage_latencies[:2]
        summing, mapping = Signal(), Signal()
        iss = Signal()
        m.d.comb += iss.eq((summing | mapping) & (k < J))
        # one copy of E per multiplier (gated differently, so they are not merged): each
        # drives one multiplier's partial products, halving the fan-out of the exp read
        E_sum, E_map = Signal.like(E_rd, name="exp_sum"), Signal.like(E_rd, name="exp_map")
        m.d.sync += [E_sum.eq(Mux(summing, E_rd, 0)), E_map.eq(Mux(mapping, E_rd, 0))]
        hk, lh = select_pipe(m, hist, k[:ba], "hist_k")
        hk_e = delay(m, hk, Le - lh, "hist_k")
        v_e = delay(m, iss, Le, "exp_valid")
        j_e = delay(m, k[:ba], Le, "exp_j")
        prod, lm = pipelined_mul(m, E_sum, hk_e, "sum_mul")
        assert lm == Lm
        v_p = delay(m, v_e & summing, Lm, "sum_valid")
        D = Signal(cfg.denom_bits)
        with m.If(v_p):
            m.d.sync += D.eq(D + prod)
        return summing, mapping, D, E_map, v_e, j_e

    def _map_pass(self, m, mapping, E_map, v_e, j_e, remap_we, remap_addr, remap_data):
        """MAP: ``E r`` (``Lm2`` stages), shifted right by ``sh`` in three stages, written
        into the remap tables.  Returns ``(r, sh)``, the reciprocal and the shift, set by
        the sequence."""
        cfg = self._config
        DW, RF = cfg.denom_bits, fmt.RECIP_FRAC
        Lm2 = cfg.stage_latencies[2]
        r = Signal(RF + 1)
        sh = Signal(range(DW + RF))
        prod2, lm2 = pipelined_mul(m, r, E_map, "map_mul")
        assert lm2 == Lm2
        v_q = delay(m, v_e & mapping, Lm2, "map_valid")
        j_q = delay(m, j_e, Lm2, "map_j")
        # (E r) >> sh in three stages of 4:1 selection: by 16s, by 4s, by 0..3
        p = Signal(cfg.out_bits)
        m.d.sync += p.eq(shift_right_staged(m, prod2, sh))
        v_w = delay(m, v_q, 3, "remap_valid")
        j_w = delay(m, j_q, 3, "remap_j")
        m.d.comb += [remap_we.eq(v_w), remap_addr.eq(j_w), remap_data.eq(p)]
        return r, sh

    def _sequence(self, m, nonempty, start, done, k, mx, summing, mapping, D, dn, R, r, sh):
        """The per-row sequence as one-hot state flags (each register enable is one flag):
        the row maximum, the sum pass, the normalization of ``D`` and the reciprocal, the
        map pass; ``done`` at its end."""
        cfg = self._config
        J, DW = 1 << cfg.ba, cfg.denom_bits
        RF, OF = fmt.RECIP_FRAC, fmt.SOFTMAX_OUT_FRAC
        Le, Lm, Lm2, Lrom = cfg.stage_latencies[:4]

        top = leading_one(m, nonempty, "row_max")
        # leading one of D in two stages: per 16-bit chunk (registered, free running: D is
        # still from the "lead" step on), then the top non-empty chunk
        lead, _ = leading_one_staged(m, D, "d")
        e = Signal(range(DW))
        shamt = Signal(range(DW))
        d1 = Signal(DW)
        names = ["idle", "max", "sum", "chunks", "lead", "shamt", "shift", "normalize", "rom", "recip",
                 "map"]
        st = {s: Signal(name=f"seq_{s}", init=(s == "idle")) for s in names}

        def goto(src, dst):
            m.d.sync += [st[src].eq(0), st[dst].eq(1)]

        with m.If(st["idle"] & start):
            goto("idle", "max")
        # the ends of the two long counted steps are registered look-ahead compares (set
        # in the cycle before k reaches the end)
        sum_end, map_end = Signal(), Signal()
        with m.If(st["max"]):
            m.d.sync += [mx.eq(top), k.eq(0), D.eq(0), summing.eq(1), sum_end.eq(0)]
            goto("max", "sum")
        with m.If(st["sum"]):
            m.d.sync += [k.eq(k + 1), sum_end.eq(k == J - 2 + Le + Lm)]
            with m.If(sum_end):
                m.d.sync += summing.eq(0)
                goto("sum", "chunks")
        with m.If(st["chunks"]):         # D final: its chunks' leading ones registered
            goto("chunks", "lead")
        with m.If(st["lead"]):
            m.d.sync += e.eq(lead)
            goto("lead", "shamt")
        with m.If(st["shamt"]):
            m.d.sync += shamt.eq(DW - 1 - e)
            goto("shamt", "shift")
        with m.If(st["shift"]):          # D << shamt in two stages: by 4s, then by 0..3
            m.d.sync += d1.eq(D << Cat(Const(0, 2), shamt[2:]))
            goto("shift", "normalize")
        with m.If(st["normalize"]):
            m.d.sync += [dn.eq(d1 << shamt[:2]), k.eq(0)]
            goto("normalize", "rom")
        with m.If(st["rom"]):
            m.d.sync += k.eq(k + 1)
            with m.If(k == Lrom - 1):
                goto("rom", "recip")
        with m.If(st["recip"]):
            m.d.sync += [r.eq(R), sh.eq(RF - OF + e), k.eq(0), mapping.eq(1), map_end.eq(0)]
            goto("recip", "map")
        with m.If(st["map"]):
            m.d.sync += [k.eq(k + 1), map_end.eq(k == J + 1 + Le + Lm2)]
            with m.If(map_end):
                m.d.comb += done.eq(1)
                m.d.sync += mapping.eq(0)
                goto("map", "idle")


class SoftmaxBaseline(ValueRowUnit):
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

    Pipelined for 200 MHz with the same building blocks and memories as
    :class:`HistogramSoftmax`: LUTRAM row buffer (``Lr``), the comparator and
    adder trees with a register per level (``Lt = tree_latency(P)``; the
    comparator tree two registers per level: compare, then select), the
    exp ROMs in LUT banks behind per-group address copies (``Le =
    banked_latency(1024) + 1``), the reciprocal ROM in LUT banks (``Lrom``),
    fabric multipliers ``E r`` with a register per adder level (``Lmr =
    mul_latency(16)``), staged shifts; the normalization runs free from
    ``D`` (leading one, shift amount, two shift stages, ROM); the read
    pipeline stalls on backpressure.

    Latency: the first output beat is valid ``b + 17 + 3 Lt + 2 Lr + 2 Le +
    Lrom + Lmr`` cycles after the last input beat of a row of ``b`` beats is
    accepted (``b + 47`` for P = 4, max_len = 1024;
    :meth:`base.config.SoftmaxBaselineConfig.row_latency`); output II = 1,
    and rows do not overlap (as :class:`HistogramRowUnit`), so a row
    occupies the unit for ``2 b + latency - 1`` cycles, against the
    histogram unit's ``2 b + latency - 1`` with a latency independent of
    ``b``.

    Parameters
    ----------
    width, frac : int
        Score width (8..24, default 16) and fraction bits (6..16, default 8).
    elems : int
        Elements per beat, P (1..16, default 4).
    max_len : int
        Longest row in elements (1..65536, default 1024).
    """

    Config = SoftmaxBaselineConfig

    def __init__(self, config=None, **params):
        cfg = self.configure(config, params)
        super().__init__(cfg, unsigned(cfg.out_bits))

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        P, W = cfg.elems, cfg.width
        Lr = cfg.stage_latencies[1]

        outp = Signal()
        rows = row_input(m, self, "x")
        assert rows.read_latency == Lr
        mx, have, start = self._row_max(m, rows)

        # ---- read pipeline, used twice: the sum pass and the output pass
        summing = Signal()
        reading = Signal()
        out = SkidOutput(m, self.o)      # o.ready reaches only the output registers
        adv = out.advance
        m.d.comb += reading.eq(summing | outp)
        # read twice (sum pass, output pass): rewound while neither pass runs
        rd = RowRead(m, rows, reading, adv)
        E, cnt_e = self._exps(m, rows.read, mx, adv)
        D, last_acc = self._sum_pass(m, rd, E, cnt_e, start, summing, adv)
        r, sh = self._normalization(m, D, last_acc, summing, outp)
        self._output_pass(m, out, rd, E, rows.read.data[P * W:], r, sh, outp)

        with m.If(out.last_out):
            m.d.comb += rows.clear.eq(1)
            m.d.sync += [outp.eq(0), have.eq(0)]
        return m

    def _row_max(self, m, rows):
        """The row maximum while the row comes in: the beat maximum over the valid lanes
        (invalid lanes read as the smallest value), masked lanes registered, then a
        comparator tree, each level in two stages (the compare registered with both
        operands, then the selection), then a running maximum.  Returns ``(mx, have,
        start)``: the maximum, its valid flag (cleared by the unit) and ``start``, the
        row maximum is complete."""
        cfg = self._config
        P, W = cfg.elems, cfg.width
        Lt = cfg.stage_latencies[0]
        s0, s0_valid, s0_end = rows.s0, rows.s0_valid, rows.s0_end
        lo = Const(-(1 << (W - 1)), signed(W))
        vals = [Signal(signed(W), name=f"s1_x{p}") for p in range(P)]
        for p in range(P):
            m.d.sync += vals[p].eq(Mux(s0.count > p, s0.x[p], lo))
        bv = Signal()
        m.d.sync += bv.eq(s0_valid & (s0.count != 0))
        level = 0
        while len(vals) > 1:
            level += 1
            nxt = []
            for k in range(0, len(vals), 2):
                w = Signal(signed(W), name=f"bmax_l{level}_{k // 2}")
                if k + 1 < len(vals):
                    a = delay(m, vals[k], 1, f"bmax_l{level}_{k // 2}_a")
                    b = delay(m, vals[k + 1], 1, f"bmax_l{level}_{k // 2}_b")
                    ge = Signal(name=f"bmax_l{level}_{k // 2}_ge")
                    m.d.sync += [ge.eq(vals[k] >= vals[k + 1]), w.eq(Mux(ge, a, b))]
                else:
                    m.d.sync += w.eq(delay(m, vals[k], 1, f"bmax_l{level}_{k // 2}_a"))
                nxt.append(w)
            vals = nxt
        assert level == Lt
        bmax = vals[0]
        bvalid = delay(m, bv, 2 * Lt, "bmax_valid")
        mx = Signal(signed(W))
        have = Signal()
        start = delay(m, s0_end, 2 + 2 * Lt, "start")    # the row maximum is complete
        with m.If(bvalid & (~have | (bmax > mx))):
            m.d.sync += [mx.eq(bmax), have.eq(1)]
        return mx, have, start

    def _exps(self, m, br, mx, adv):
        """Per lane of the row read back (``br``, advancing with ``adv``): ``mx - x`` (1
        stage), the saturated exp ROM address (1 stage), the ROM (``Le``: address copies,
        LUT banks).  Returns ``(E, cnt_e)``: the P exps, and the beat's count delayed to
        meet them."""
        cfg = self._config
        P, W = cfg.elems, cfg.width
        EA, S = fmt.BASE_EXP_ADDR, cfg.frac - fmt.BASE_STEP_FRAC
        Le = cfg.stage_latencies[2]
        table = fmt.baseline_exp_table()
        cnt_r = br.data[P * W:]
        cnt_e = delay(m, cnt_r, 2 + Le, "count_e", en=adv)
        E = []
        for p in range(P):
            x = br.data[p * W:(p + 1) * W].as_signed()
            d = Signal(W + 1, name=f"dist{p}")
            q = d >> S
            addr = Signal(EA, name=f"exp_addr{p}")
            with m.If(adv):
                m.d.sync += [d.eq(mx - x), addr.eq(Mux(q >= (1 << EA), (1 << EA) - 1, q))]
            ep, le = banked_memory(m, f"exp_rom{p}", unsigned(cfg.exp_bits), 1 << EA, addr,
                                   init=table, en=adv, copies=True)
            assert le == Le
            E.append(ep)
        return E, cnt_e

    def _sum_pass(self, m, rd, E, cnt_e, start, summing, adv):
        """The sum pass (``summing``, set at ``start``): masked exps (1 stage), adder tree
        (``Lt``), accumulated into ``D``.  Returns ``(D, last_acc)``, ``last_acc`` high as
        the row's last beat is accumulated."""
        cfg = self._config
        P = cfg.elems
        Lt, Lr, Le = cfg.stage_latencies[:3]
        Em = [Signal(cfg.exp_bits, name=f"exp_m{p}") for p in range(P)]
        with m.If(adv):
            m.d.sync += [Em[p].eq(Mux(cnt_e > p, E[p], 0)) for p in range(P)]
        part, lt = adder_tree(m, Em, "exp_sum", en=adv)
        assert lt == Lt
        dsum = Lr + 3 + Le + Lt
        v_acc = delay(m, rd.issue & summing, dsum, "sum_valid", en=adv)
        last_acc = delay(m, rd.issue & summing & rd.at_last, dsum, "sum_last", en=adv)
        D = Signal(cfg.denom_bits)
        with m.If(start):
            m.d.sync += [D.eq(0), summing.eq(1)]
        with m.Elif(v_acc):
            m.d.sync += D.eq(D + part)
        return D, last_acc

    def _normalization(self, m, D, last_acc, summing, outp):
        """The normalization, free running on ``D``: ``e``, the shift amount, ``D << shamt``
        in two stages, the reciprocal ROM; after the sum pass (``last_acc``) it is waited
        for, then the output pass (``outp``) starts.  Returns ``(r, sh)``: the reciprocal
        and the output shift amount."""
        cfg = self._config
        DW = cfg.denom_bits
        RF, OF = fmt.RECIP_FRAC, fmt.SOFTMAX_OUT_FRAC
        Lrom = cfg.stage_latencies[3]
        lead = leading_one(m, D, "d_lead")
        e = Signal(range(DW))
        shamt = Signal(range(DW))
        d1 = Signal(DW)
        dn = Signal(DW)
        D_d = delay(m, D, 2, "d_norm")
        m.d.sync += [e.eq(lead), shamt.eq(DW - 1 - e),
                     d1.eq(D_d << Cat(Const(0, 2), shamt[2:])), dn.eq(d1 << shamt[:2])]
        r, lrom = recip_lookup(m, dn)
        assert lrom == Lrom
        Lnd = 4 + Lrom
        # the output shift amount, registered (constant for the row; ready long before r)
        sh = Signal(range(DW + RF))
        m.d.sync += sh.eq(RF - OF + e)
        with m.If(last_acc):
            m.d.sync += summing.eq(0)
        wait_cycles(m, last_acc, Lnd, outp)
        return r, sh

    def _output_pass(self, m, out, rd, E, cnt_r, r, sh, outp):
        """The output pass (``outp``): per lane ``E r`` (``Lmr``), shifted right by ``sh``
        in three stages (the last one the output register ``out``)."""
        cfg = self._config
        P = cfg.elems
        _, Lr, Le, _, Lmr = cfg.stage_latencies
        adv = out.advance
        depth = Lr + 2 + Le + Lmr + 3
        fr = delay(m, Cat(rd.issue & outp, rd.at_first, rd.at_last), depth - 1, "frame", en=adv)
        cnt = delay(m, cnt_r, depth - 1 - Lr, "count", en=adv)
        for p in range(P):
            prod, lmr = pipelined_mul(m, r, E[p], f"prod{p}", en=adv)
            assert lmr == Lmr
            y = shift_right_staged(m, prod, sh, names=(f"sh_hi{p}", f"sh_mid{p}"), en=adv)
            m.d.comb += out.payload.y[p].eq(Mux(cnt > p, y, 0))
        out.present(m, fr[0], fr[1], fr[2], cnt)
