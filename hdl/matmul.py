"""The KLLM core's MATMUL datapath (stage B of :mod:`hdl.core`).

Golden twin: :func:`golden.core_ops._matmul` (semantics) and :func:`golden.core_ops.
matmul_cycles` (the cycles, a closed formula this datapath meets exactly).  The datapath
composes the units, each with its own contract and tests:

* :class:`hdl.quantizer.ActivationQuantizer` (``ba`` = the core's, inputs 17 bits wide):
  the activation indices.  A format of fewer index bits ``ba' < ba`` pads the thresholds
  above its ``2**ba' - 1`` with 2**16 - 1 (never reached by a 16-bit value), so the binary search
  of ``ba`` steps returns the index of the ``ba'``-bit format; every threshold is clamped to
  -2**16 .. 2**16, which keeps ``t <= x`` for every 16-bit ``x``.
* :class:`hdl.orizuru.Orizuru` (``merge=0``: no minimum vector length, no bubble) on the same
  beats: the ``k`` largest and smallest values of each token with their positions.
* :class:`hdl.imu.Imu` with two extensions (parameters whose defaults keep its netlist):
  ``ext_wmem`` -- the weight-index memory is WBUF itself, read by the IMU through a port
  with the block RAM's timing; ``wide_wcb`` -- one codebook write fills entry ``j`` of every
  lane.
* the requantization ``sat16((y M + B + 2**(sh-1)) >> sh)`` (64-bit wrap, as the golden
  model's int64) and the writer into ABUF.

**Weights.**  WBUF keeps the slots exactly as LOAD writes them (:func:`base.isa.
slot_layout`); the index section *is* the IMU's weight memory: the IMU's streaming port
reads WBUF row ``slot * stride / L E + r`` (one row of all L lanes, ``L E`` bytes, is one
bus word or a fixed part of one; the core requires ``L E`` to divide ``bus_bytes``) and its
outlier port a second read port of WBUF.  The slots are the banks: a LOAD fills one slot
through WBUF's write port while a MATMUL streams another through its read ports (the
tokens order the two).  Nothing of the index section is copied.

**Schedule** (cycles from the compute engine's start ``t``):

* ``t``: the instruction is latched and the format's header word read from TBUF;
  ``t + 1``: every fault check (:func:`golden.core_ops._matmul`'s order) -- a fault ends
  the instruction here;
* setup, ``S = max(2**ba + 1, W + 1 + 2**bw)`` cycles: two TBUF read ports give threshold
  ``j`` and centroid ``j`` in cycle ``j`` (written into both quantizers, the IMU's
  activation codebook and the residual's centroid copy one cycle later), while WBUF's
  second port reads the ``W`` words that hold the slot's codebooks and requantization
  (into registers), after which the ``2**bw`` wide codebook writes fill every lane;
* the stream: one beat a cycle read from ABUF (two read ports: a beat of any 16-bit
  alignment is cut from two words), forked into the quantizer and Orizuru, the quantizer
  into the IMU; the stream stalls only when the IMU does, so from its first accepted beat
  the IMU follows its exact schedule :func:`golden.imu.stream_cycles`;
* outliers: each token's Orizuru result is held, its ``2 k'`` entries (``k' = min(k,
  K // 2)``; one empty pair when ``k = 0``) go one a cycle through a one-element quantizer
  and the centroid copy into ``r = x - (Ca[q(x)] << shift)`` (0 for a smallest-side entry
  whose position is also a largest-side one), into a FIFO before the IMU's ``r`` port.  They
  reach it before its tail needs them (``2**bw`` COMBINE and ``shift`` DOUBLE operations
  after the token), so the IMU never waits for them;
* the writer takes a result when it is free, then one lane a cycle through the
  requantization pipeline and the ABUF write (``lanes`` cycles a token; when
  ``lanes`` exceeds the IMU's interval between results the IMU waits, see
  :func:`golden.core_ops.matmul_cycles`);
* the tokens are given in the cycle after the last write.

Throughput: L x P MACs a cycle while the IMU streams (``ceil(K / P) >= max(2**bw + 5,
T)``), the setup once per MATMUL.
"""

from amaranth import Array, Cat, Const, Mux, Signal, signed, unsigned
from amaranth.lib import fifo

from base.config import OrizuruConfig, QuantizerConfig
from base.isa import Error
from hdl.imu import ImuBaselineLutMultipliers, ImuLutMultipliers
from hdl.orizuru import Orizuru
from hdl.quantizer import ActivationQuantizer

__all__ = ["MatmulEngine", "image_words", "check_config"]

#: Width of the quantizers' inputs: a 16-bit value and thresholds clamped to +-2**16.
QW = 17
THR_MAX = (1 << 16) - 1
THR_MIN = -(1 << 16)


def image_words(cfg):
    """``(first, count)``: the slot-relative bus words that hold its codebooks and
    requantization (read into registers in the setup)."""
    lay, B = cfg.slot, cfg.bus_bytes
    end = lay.requant + 4 + 12 * cfg.outputs
    first = lay.codebook // B
    return first, (end - 1) // B - first + 1


def setup_cycles(cfg):
    """Cycles of a MATMUL's setup (see the module's docstring)."""
    _, W = image_words(cfg)
    return max((1 << cfg.ba) + 1, W + 1 + (1 << cfg.bw))


def check_config(cfg):
    row = cfg.outputs * cfg.slot.entry_bytes
    if row & (row - 1) or row > cfg.bus_bytes:
        raise ValueError(f"core: a WBUF index row (outputs x entry_bytes = {row} bytes) must be "
                         f"a power of 2 of at most bus_bytes ({cfg.bus_bytes})")


def _sel(value, width, index, n):
    """Element ``index`` (a signal) of ``n`` elements of ``width`` bits packed in ``value``."""
    return value[:n * width].word_select(index, width)


def _pick(values, index):
    """``values[index]`` as a shift of their concatenation (a continuous assignment: Icarus
    never evaluates a combinational process whose inputs do not change after time 0)."""
    width = len(values[0])
    out = Cat(*values).word_select(index, width)
    return out.as_signed() if values[0].shape().signed else out


class MatmulEngine:
    """Builds the datapath into module ``m`` of the core (see the module docstring).

    ``ins``: the latched instruction (256 bits); ``go``: the setup starts (one cycle, after
    the checks); the engine reports ``busy`` and ``finish`` (the cycle it gives its tokens).
    ``abuf_rd``: two ABUF read ports, ``abuf_wr`` a write port; ``wbuf_rd``: two WBUF read
    ports; ``tbuf_rd``: two TBUF read ports (the first also reads the header at start)."""

    def __init__(self, m, cfg, *, ins, go, abuf_rd, abuf_wr, wbuf_rd, tbuf_rd, slot_word,
                 ba_w, shift_w):
        self.m, self.cfg = m, cfg
        B = cfg.bus_bytes
        LB = (B - 1).bit_length()
        L, P, bw, BA = cfg.outputs, cfg.elems, cfg.bw, cfg.ba
        EB = cfg.slot.entry_bytes
        icfg = cfg.imu
        f = lambda w, lo, bits: ins[32 * w + lo:32 * w + lo + bits]
        x_addr, x_stride = f(1, 0, 32), f(2, 0, 32)
        T, K = f(3, 0, 16), f(3, 16, 16)
        lanes, kout = f(4, 0, 16), f(4, 16, 8)
        fmt, y_addr = f(5, 0, 32), f(6, 0, 32)
        y_ts, y_ns = f(7, 0, 16), f(7, 16, 16)

        self.busy = busy = Signal(name="mm_busy")
        self.finish = finish = Signal(name="mm_finish")
        setup = Signal(name="mm_setup")
        running = Signal(name="mm_run")
        m.d.comb += busy.eq(setup | running)
        S = setup_cycles(cfg)
        s = Signal(range(S + 1), name="mm_s")
        with m.If(go):
            m.d.sync += [setup.eq(1), s.eq(0)]
        with m.If(setup):
            m.d.sync += s.eq(s + 1)
            with m.If(s == S - 1):
                m.d.sync += [setup.eq(0), running.eq(1)]
        first_run = Signal(name="mm_first_run")
        m.d.comb += first_run.eq(setup & (s == S - 1))

        # ------------------------------------------------------------ units
        q = ActivationQuantizer(QuantizerConfig(width=QW, ba=BA, elems=P))
        q1 = ActivationQuantizer(QuantizerConfig(width=QW, ba=BA, elems=1))
        oz = Orizuru(OrizuruConfig(width=16, elems=P, k=max(1, cfg.outliers),
                                   max_len=icfg.positions, merge=0))
        imu_cls = ImuBaselineLutMultipliers if cfg.baseline else ImuLutMultipliers
        imu = imu_cls(icfg, ext_wmem=True, wide_wcb=True)
        m.submodules.mm_quantizer = q
        m.submodules.mm_out_quantizer = q1
        m.submodules.mm_orizuru = oz
        m.submodules.mm_imu = imu
        self.imu = imu

        # ------------------------------------------------------------ setup: TBUF
        J = Signal(9, name="mm_J")
        m.d.comb += J.eq(Const(1, 9) << ba_w)
        t_thr, t_cb = tbuf_rd
        WPB = B // 4                               # 32-bit words a bus word
        LW = (WPB - 1).bit_length()
        thr_w = Signal(33, name="mm_thr_word")
        cb_w = Signal(33, name="mm_cb_word")
        m.d.comb += [thr_w.eq(fmt + 1 + s), cb_w.eq(fmt + J + s)]
        tb_valid = Signal(name="mm_tb_valid")
        tb_j = Signal(BA + 1, name="mm_tb_j")
        tb_sub = [Signal(max(1, LW), name=f"mm_tb_sub{i}") for i in range(2)]
        reading_t = setup & (s < (1 << BA))
        with m.If(reading_t):
            m.d.comb += [t_thr.addr.eq(thr_w[LW:]), t_cb.addr.eq(cb_w[LW:]),
                         t_thr.en.eq(1), t_cb.en.eq(1)]
        m.d.sync += [tb_valid.eq(reading_t), tb_j.eq(s),
                     tb_sub[0].eq(thr_w[:LW] if LW else 0), tb_sub[1].eq(cb_w[:LW] if LW else 0)]
        thr_word = _sel(t_thr.data, 32, tb_sub[0], WPB).as_signed()
        cb_word = _sel(t_cb.data, 32, tb_sub[1], WPB).as_signed()
        thr_val = Signal(signed(QW), name="mm_thr_val")
        m.d.comb += thr_val.eq(Mux(tb_j + 1 < J,
                                   Mux(thr_word > THR_MAX, THR_MAX,
                                       Mux(thr_word < THR_MIN, THR_MIN, thr_word)),
                                   THR_MAX))
        for qq in (q, q1):
            m.d.comb += [qq.thr.en.eq(tb_valid), qq.thr.addr.eq(tb_j[:BA]),
                         qq.thr.data.eq(thr_val)]
        ca_copy = Array([Signal(signed(8), name=f"mm_ca{j}") for j in range(1 << BA)])
        ca_we = tb_valid & (tb_j < J)
        m.d.comb += [imu.acb.en.eq(ca_we), imu.acb.addr.eq(tb_j[:BA]),
                     imu.acb.data.eq(cb_word[:8]), imu.acb.shift.eq(shift_w)]
        with m.If(ca_we):
            m.d.sync += ca_copy[tb_j[:BA]].eq(cb_word[:8])

        # ------------------------------------------------------------ setup: WBUF image
        w_a, w_b = wbuf_rd
        first_w, NW = image_words(cfg)
        lay = cfg.slot
        img_lo = lay.codebook
        img_n = lay.requant + 4 + 12 * L - img_lo
        img = [Signal(8, name=f"mm_img{i}") for i in range(img_n)]
        reading_w = setup & (s < NW)
        img_valid = Signal(name="mm_img_valid")
        img_w = Signal(range(max(2, NW)), name="mm_img_w")
        m.d.sync += [img_valid.eq(reading_w), img_w.eq(s)]
        for wi in range(NW):
            with m.If(img_valid & (img_w == wi)):
                for i in range(img_n):
                    o = img_lo + i
                    if o // B - first_w == wi:
                        m.d.sync += img[i].eq(w_b.data.word_select(o % B, 8))
        C = 1 << bw
        jw = Signal(range(S + 1), name="mm_wcb_j")
        m.d.comb += jw.eq(s - (NW + 1))
        wcb_en = setup & (s >= NW + 1) & (s < NW + 1 + C)
        m.d.comb += [imu.wcb.en.eq(wcb_en), imu.wcb.addr.eq(jw[:bw]), imu.wcb.lane.eq(0)]
        for n in range(L):
            m.d.comb += imu.wcb.data[n].eq(
                _pick([img[n * C + j] for j in range(C)], jw[:bw]).as_signed())
        rq0 = C * L

        def word(i):
            return Cat(*img[i:i + 4])
        sh = word(rq0).as_signed()
        Mv = [word(rq0 + 4 + 12 * n).as_signed() for n in range(L)]
        Bv = [Cat(word(rq0 + 8 + 12 * n), word(rq0 + 12 + 12 * n)).as_signed() for n in range(L)]

        # ------------------------------------------------------------ WBUF rows for the IMU
        ROW = L * EB
        R = B // ROW                       # rows a bus word
        LR = (R - 1).bit_length()
        PB = P * bw

        def rows(data, sub):
            row = data.word_select(sub, 8 * ROW) if R > 1 else data
            return Cat(*[row[8 * EB * n:8 * EB * n + PB] for n in range(L)])
        rw = imu.wrow
        m.d.comb += w_a.addr.eq(slot_word + (rw.a_addr >> LR))
        a_q = Signal(8 * B, name="mm_wrow_a")
        a_sub = [Signal(max(1, LR), name=f"mm_wrow_asub{i}") for i in range(2)]
        m.d.sync += [a_q.eq(w_a.data), a_sub[0].eq(rw.a_addr[:LR] if LR else 0),
                     a_sub[1].eq(a_sub[0])]
        m.d.comb += rw.a_data.eq(rows(a_q, a_sub[1]))
        b_q = Signal(8 * B, name="mm_wrow_b")
        b_sub = [Signal(max(1, LR), name=f"mm_wrow_bsub{i}") for i in range(2)]
        with m.If(reading_w):
            m.d.comb += [w_b.addr.eq(slot_word + first_w + s), w_b.en.eq(1)]
        with m.Else():
            m.d.comb += [w_b.addr.eq(slot_word + (rw.b_addr >> LR)), w_b.en.eq(rw.b_en)]
        with m.If(rw.b_en):
            m.d.sync += [b_q.eq(w_b.data), b_sub[0].eq(rw.b_addr[:LR] if LR else 0),
                         b_sub[1].eq(b_sub[0])]
        m.d.comb += rw.b_data.eq(rows(b_q, b_sub[1]))

        # ------------------------------------------------------------ the ABUF reader
        x_a, x_b = abuf_rd
        nbeats = Signal(16, name="mm_nbeats")
        lastcount = Signal(range(P + 1), name="mm_lastcount")
        with m.If(go):
            m.d.sync += [nbeats.eq((K + P - 1) >> (P - 1).bit_length()),
                         lastcount.eq(K - (((K - 1) >> (P - 1).bit_length())
                                           << (P - 1).bit_length()))]
        tok = Signal(16, name="mm_rtok")
        beat = Signal(16, name="mm_rbeat")
        row_addr = Signal(32, name="mm_rrow")
        beat_addr = Signal(32, name="mm_rbeat_addr")
        more = Signal(name="mm_rmore")
        rv = Signal(name="mm_rv")
        roff = Signal(LB, name="mm_roff")
        rfirst, rlast = Signal(name="mm_rfirst"), Signal(name="mm_rlast")
        take = Signal(name="mm_take")
        adv_r = Signal(name="mm_adv_r")
        m.d.comb += [take.eq(rv & q.i.ready & oz.i.ready), adv_r.eq(~rv | take)]
        with m.If(go):
            m.d.sync += [tok.eq(0), beat.eq(0), row_addr.eq(x_addr), beat_addr.eq(x_addr),
                         more.eq(T != 0)]
        issue = Signal(name="mm_rissue")
        m.d.comb += issue.eq(running & more & adv_r)
        wa = beat_addr[LB:]
        m.d.comb += [x_a.addr.eq(wa), x_b.addr.eq(wa + 1), x_a.en.eq(adv_r), x_b.en.eq(adv_r)]
        with m.If(adv_r):
            m.d.sync += rv.eq(issue)
        with m.If(issue):
            lastb = beat == nbeats - 1
            m.d.sync += [roff.eq(beat_addr[:LB]), rfirst.eq(beat == 0), rlast.eq(lastb)]
            with m.If(lastb):
                nxt = row_addr + x_stride
                m.d.sync += [beat.eq(0), tok.eq(tok + 1), row_addr.eq(nxt), beat_addr.eq(nxt),
                             more.eq(tok + 1 != T)]
            with m.Else():
                m.d.sync += [beat.eq(beat + 1), beat_addr.eq(beat_addr + 2 * P)]
        both = Cat(x_a.data, x_b.data)
        xs = Signal(16 * P, name="mm_x")
        m.d.comb += xs.eq(both.bit_select(Cat(Const(0, 3), roff), 16 * P))
        count = Mux(rlast, lastcount, P)
        m.d.comb += [q.i.valid.eq(rv & oz.i.ready), oz.i.valid.eq(rv & q.i.ready),
                     q.i.payload.first.eq(rfirst), q.i.payload.last.eq(rlast),
                     oz.i.payload.first.eq(rfirst), oz.i.payload.last.eq(rlast),
                     oz.i.payload.count.eq(count)]
        for p in range(P):
            # lanes past K read as 0 (whatever ABUF holds there)
            xp = Mux(p < count, xs[16 * p:16 * p + 16].as_signed(), 0)
            m.d.comb += [q.i.payload.x[p].eq(xp), oz.i.payload.x[p].eq(xp)]
        # quantizer -> IMU
        m.d.comb += [imu.i.valid.eq(q.o.valid), q.o.ready.eq(imu.i.ready),
                     imu.i.payload.first.eq(q.o.payload.first),
                     imu.i.payload.last.eq(q.o.payload.last),
                     imu.i.payload.count.eq(Mux(q.o.payload.last, lastcount, P))]
        for p in range(P):
            m.d.comb += imu.i.payload.idx[p].eq(q.o.payload.idx[p])

        # ------------------------------------------------------------ outliers
        kk = Signal(9, name="mm_kk")          # k' = min(k, K // 2)
        with m.If(go):
            m.d.sync += kk.eq(Mux(kout < (K >> 1), kout, K >> 1))
        KO = max(1, cfg.outliers)
        top = oz.o.payload.top
        bot = oz.o.payload.bot
        pb = icfg.pos_bits
        h_val = [Signal(signed(16), name=f"mm_ov{i}") for i in range(2 * KO)]
        h_pos = [Signal(pb, name=f"mm_op{i}") for i in range(2 * KO)]
        o_busy = Signal(name="mm_obusy")
        o_i = Signal(range(2 * KO + 1), name="mm_oi")
        m.d.comb += oz.o.ready.eq(~o_busy)
        with m.If(oz.o.valid & ~o_busy):
            m.d.sync += [o_busy.eq(1), o_i.eq(0)]
            for i in range(KO):
                m.d.sync += [h_val[i].eq(top[i].value), h_pos[i].eq(top[i].pos),
                             h_val[KO + i].eq(bot[i].value), h_pos[KO + i].eq(bot[i].pos)]
        FD = 4 * KO + 4
        ofifo = fifo.SyncFIFO(width=pb + icfg.rbits + 1, depth=FD)
        m.submodules.mm_ofifo = ofifo
        space = Signal(range(FD + 1), init=FD, name="mm_ospace")
        o_issue = Signal(name="mm_oissue")
        m.d.comb += o_issue.eq(o_busy & (space != 0))
        nk = Mux(kk == 0, 1, kk << 1)
        o_last = o_i == nk - 1
        on_bot = o_i >= kk
        bi = (o_i - kk)[:max(1, (KO - 1).bit_length())] if KO > 1 else Const(0, 1)
        ti = o_i[:len(bi)]
        e_val = Mux(kk == 0, 0, Mux(on_bot, _pick(h_val[KO:], bi), _pick(h_val[:KO], ti)))
        e_pos = Mux(kk == 0, 0, Mux(on_bot, _pick(h_pos[KO:], bi), _pick(h_pos[:KO], ti)))
        dup_any = Cat(*[(j < kk) & (h_pos[j] == e_pos) for j in range(KO)]).any()
        e_zero = (kk == 0) | (on_bot & dup_any)
        with m.If(o_issue):
            m.d.sync += o_i.eq(o_i + 1)
            with m.If(o_last):
                m.d.sync += o_busy.eq(0)
        m.d.comb += [q1.i.valid.eq(o_issue), q1.i.payload.x[0].eq(e_val),
                     q1.i.payload.first.eq(1), q1.i.payload.last.eq(1), q1.o.ready.eq(1)]
        side = Cat(e_pos, e_zero, o_last, e_val)
        for k in range(BA + 1):
            nxt = Signal(len(side), name=f"mm_oside{k}")
            m.d.sync += nxt.eq(side)
            side = nxt
        s_pos, s_zero, s_last = side[:pb], side[pb], side[pb + 1]
        s_val = side[pb + 2:pb + 18].as_signed()
        ca_o = _pick(list(ca_copy), q1.o.payload.idx[0])
        r = Signal(signed(icfg.rbits), name="mm_r")
        m.d.comb += r.eq(Mux(s_zero, 0, s_val - (ca_o << shift_w)))
        m.d.comb += [ofifo.w_en.eq(q1.o.valid), ofifo.w_data.eq(Cat(s_pos, r, s_last))]
        m.d.comb += [imu.r.valid.eq(ofifo.r_rdy), imu.r.payload.pos.eq(ofifo.r_data[:pb]),
                     imu.r.payload.r.eq(ofifo.r_data[pb:pb + icfg.rbits]),
                     imu.r.payload.last.eq(ofifo.r_data[pb + icfg.rbits]),
                     ofifo.r_en.eq(imu.r.ready)]
        m.d.sync += space.eq(space - o_issue + (ofifo.r_en & ofifo.r_rdy))

        # ------------------------------------------------------------ requant and writer
        y_hold = [Signal(signed(icfg.ybits), name=f"mm_y{n}") for n in range(L)]
        w_busy = Signal(name="mm_wbusy")
        wn = Signal(range(L + 1), name="mm_wn")
        done_tok = Signal(16, name="mm_wtok")
        tok_addr = Signal(32, name="mm_wtok_addr")
        lane_addr = Signal(32, name="mm_wlane_addr")
        w_last = Signal(name="mm_wlast")
        m.d.comb += w_last.eq(wn == lanes - 1)
        free = ~w_busy | w_last
        m.d.comb += imu.o.ready.eq(free)
        capture = imu.o.valid & free
        with m.If(go):
            m.d.sync += [done_tok.eq(0), tok_addr.eq(y_addr)]
        with m.If(w_busy):
            m.d.sync += [wn.eq(wn + 1), lane_addr.eq(lane_addr + y_ns)]
            with m.If(w_last):
                m.d.sync += w_busy.eq(0)
        with m.If(capture):
            m.d.sync += [w_busy.eq(1), wn.eq(0), done_tok.eq(done_tok + 1),
                         lane_addr.eq(tok_addr), tok_addr.eq(tok_addr + y_ts)]
            m.d.sync += [y_hold[n].eq(imu.o.payload.y[n]) for n in range(L)]
        # 1: the lane's operands; 2: product; 3: + B + round (mod 2**64); 4: shift, saturate;
        # then the write
        v1, v2, v3, v4 = (Signal(name=f"mm_rq_v{i}") for i in range(1, 5))
        y1 = Signal(signed(icfg.ybits), name="mm_rq_y")
        m1 = Signal(signed(32), name="mm_rq_m")
        b1, b2 = Signal(signed(64), name="mm_rq_b1"), Signal(signed(64), name="mm_rq_b2")
        a1, a2, a3, a4 = (Signal(32, name=f"mm_rq_a{i}") for i in range(1, 5))
        p2 = Signal(signed(64), name="mm_rq_p")
        s3 = Signal(signed(64), name="mm_rq_s")
        o4 = Signal(16, name="mm_rq_o")
        m.d.sync += [v1.eq(w_busy), v2.eq(v1), v3.eq(v2), v4.eq(v3),
                     y1.eq(_pick(y_hold, wn)), m1.eq(_pick(Mv, wn)), b1.eq(_pick(Bv, wn)),
                     a1.eq(lane_addr), a2.eq(a1), a3.eq(a2), a4.eq(a3),
                     p2.eq(y1 * m1), b2.eq(b1)]      # mod 2**64, as int64
        sh_pos = sh > 0
        rnd = Mux(sh_pos, Const(1, 64) << (sh[:6] - 1)[:6], 0)
        m.d.sync += s3.eq(p2 + b2 + rnd)              # mod 2**64
        shifted = Signal(signed(64), name="mm_rq_shifted")
        m.d.comb += shifted.eq(Mux(sh_pos, s3 >> sh[:6], s3))
        m.d.sync += o4.eq(Mux(shifted > 32767, 32767, Mux(shifted < -32768, -32768, shifted)))
        m.d.comb += [abuf_wr.addr.eq(a4[LB:]), abuf_wr.data.eq(Cat(*[o4] * (B // 2))),
                     abuf_wr.en.eq(Mux(v4, Const(3, B) << Cat(Const(0, 1), a4[1:LB]), 0))]
        # the end: every token captured, the writer and its pipeline empty
        with m.If(running & ~more & (done_tok == T) & ~w_busy & ~v1 & ~v2 & ~v3 & ~v4
                  & ~rv):
            m.d.comb += finish.eq(1)
            m.d.sync += running.eq(0)
        self.first_run = first_run
