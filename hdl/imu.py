"""Index MatMul unit (IMU) and its dequantize-and-multiply baseline.

Golden twin: :mod:`golden.imu`.  Configuration: :class:`base.config.ImuConfig`
(the baseline's: :class:`base.config.ImuBaselineConfig`).

Both units compute, for every token vector of activation indices ``ia`` and
each of the L output channels n held in the unit (numeric contract: docs/ARCHITECTURE.md),

    y[n] = (sum_k Cw[n, Iw[n, k]] * Ca[ia[k]]) << shift  +  sum_outliers r * Cw[n, Iw[n, pos]]

with the same ports, the same storage (weight indices in block RAM, codebooks
in LUTRAM) and the same *tail* (shift and sparse outlier correction); they
differ only in how the dense sum is formed:

* :class:`Imu`: per lane, P bucket files (2**bw entries, LUTRAM, two banks):
  each element adds its activation centroid into the bucket its weight index
  names (adds only).  After the vector, the tail reads the 2**bw buckets of
  the full bank, sums the P files and multiplies each bucket by its weight
  centroid on one multiplier per lane, while the next vector fills the other
  bank.
* :class:`ImuBaseline`: per lane, P multipliers dequantize-and-multiply
  ``Cw[n, Iw] * Ca[ia]`` every cycle; an adder tree and an accumulator form
  the dense sum, which the tail takes over.
"""

from dataclasses import dataclass
from typing import NamedTuple

from amaranth import Const, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from base.config import ImuBaselineConfig, ImuConfig
from hdl.blocks import adder_tree, kept_logic, kept_register, register
from hdl.component import ConfiguredComponent
from hdl.primitives import block_ram, dsp_mul, verilog_definitions

__all__ = ["Imu", "ImuBaseline", "ImuLutMultipliers", "ImuBaselineLutMultipliers"]

# Tail operation kinds
COMBINE, DOUBLE, CORRECT = 0, 1, 2

# -- pipeline records: the signals one part of the unit hands to the next


class HostWrites(NamedTuple):
    """The host's writes, registered at the unit's input (one cycle later)."""
    wmem_we: list       # per lane: write the weight memory (a kept copy)
    wmem_addr: Signal
    wmem_data: Signal
    wcb_we: list        # per lane: write the weight codebook (a kept copy)
    wcb_addr: Signal
    wcb_data: Signal
    acb_en: Signal      # write the activation codebook
    acb_addr: Signal
    acb_data: Signal


class Framing(NamedTuple):
    """The input beat as framed in F0."""
    take: Signal        # a beat is taken
    start: Signal       # ... and starts a vector
    drop: Signal        # ... and is dropped (between vectors, without `first`)
    row: Signal         # the beat's weight row
    bank: Signal        # the vector's bank
    release: Signal     # in: the tail has read a bank (pulse)
    clearing: Signal    # after reset: the tail first sweeps every bucket


class Front(NamedTuple):
    """The input pipeline: F0's weight row, F1, and F2 as the dense datapath reads it."""
    row0: Signal
    v1: Signal
    first1: Signal
    last1: Signal
    bank1: Signal
    a1: list            # P activation centroids
    v2: Signal = None
    first2: Signal = None
    last2: Signal = None
    bank2: Signal = None
    a2: list = None     # P activation centroids
    iw2: list = None    # per lane, the P weight indices of the row
    host: HostWrites = None


@dataclass(frozen=True)
class TailOp:
    """The fields of one tail operation at a pipeline stage (``None``: not carried there)."""
    v: Value            # a valid op
    kind: Value         # COMBINE, DOUBLE or CORRECT
    last: Value         # the token's last op
    init: Value = None  # an op of the sweep after reset
    j: Value = None     # the bucket (COMBINE)
    bank: Value = None  # the bank of the token
    r: Value = None     # the outlier value (CORRECT)
    col: Value = None   # the outlier's column in its weight row (T1 only)

    #: The fields carried up to the multiplier's operands (the snapshot, the centroid
    #: address and the data operand read them), and those carried after it (the
    #: accumulator and the output read them).
    EARLY = ("v", "init", "kind", "j", "bank", "last", "r")
    LATE = ("v", "kind", "last")

    def carry(self, m, prefix, en, fields=EARLY):
        """The op one stage further: ``fields`` registered (when ``en``) as
        ``<prefix>_<field>``; the valid and sweep flags with a reset."""
        return TailOp(**{k: register(m, getattr(self, k), f"{prefix}_{k}", en=en,
                                     reset_less=(k not in ("v", "init")))
                         for k in fields})


class IssueState(NamedTuple):
    """The tail's issue registers and the signals decoded from them."""
    shift_nz: Signal    # shift != 0
    shift_is1: Signal   # shift == 1
    shift_m1: Signal    # shift - 1
    in_comb: Signal     # phase COMBINE
    in_dbl: Signal      # phase DOUBLE
    in_corr: Signal     # phase CORRECT
    j: Signal           # bucket counter
    j_nz: Signal        # j != 0
    j_last: Signal      # j == C - 1
    d_rem: Signal       # DOUBLE ops left after this one
    d_last: Signal      # d_rem == 0
    tbank: Signal       # bank of the token the tail works on
    kind: Signal        # the phase's op kind
    issue_c: Signal     # a COMBINE op issues
    step: Signal        # j steps
    sweep: Signal       # IMU: the sweep after reset or j != 0 (None in the baseline)
    wrap: Signal        # j steps from the last bucket


class IssueOp(NamedTuple):
    """The operation issued in a cycle and the ends of the tail's phases."""
    issue: Signal
    last: Signal
    take_vector: Signal
    r_val: Signal
    pos: Signal
    end_comb: Value
    end_dbl: Value
    end_corr: Value


class Tail(NamedTuple):
    """The tail's issue side, as the front and the tail's datapath read it."""
    adv: Signal         # the tail advances
    adv_l: list         # ... per lane (from per-lane copies of the skid flag)
    skid_full: Signal   # the output's skid register is full
    ready: Signal       # in: a vector waits for the tail (a register)
    take_vector: Signal  # the tail takes a vector
    release: Signal     # the tail has read a bank
    row: Signal         # the outlier's weight row (port B's address)
    t1: TailOp          # the issued op, in T1
    j_next_l: list      # IMU, per lane: the bucket the banks are read at next
    tbank: Signal       # bank of the token the tail works on


class TailOperands(NamedTuple):
    """Per lane, the multiplier's operands as the operand stage reads them."""
    sums: list          # the lane's sum (IMU: the running total; baseline: the dense sum)
    snaps: list         # IMU: the snapshot of the same bucket (None in the baseline)
    iwc: list           # the outlier's weight index


class OutputControl(NamedTuple):
    """Per lane, the output stage's copies of the skid flag and of its register enables."""
    full_l: list
    load_y_l: list
    load_skid_l: list


def _lutram(m, name, shape, depth, wen, waddr, wdata):
    """A small memory with one write port and one asynchronous read port (LUTRAM)."""
    mem = memory.Memory(shape=shape, depth=depth, init=[])
    m.submodules[name] = mem
    wr = mem.write_port()
    rd = mem.read_port(domain="comb")
    m.d.comb += [wr.en.eq(wen), wr.addr.eq(waddr), wr.data.eq(wdata)]
    return rd


class _ImuUnit(ConfiguredComponent):
    """Ports, host memories, input stage and tail shared by the IMU and its baseline."""

    _combine = True     # the tail multiplies bucket sums (IMU) or loads a dense sum (baseline)
    _primitives = True  # ECP5 primitives (hdl.primitives); False: the same registers in Amaranth
    #: The netlist's top module name (hdl.generate sets it): the primitive wrappers are
    #: named after it, ``<top>_mul`` and ``<top>_bram``, so two netlists never share one.
    module_name = None

    def __init__(self, config=None, *, ext_wmem=False, wide_wcb=False, **params):
        cfg = self._config = self.configure(config, params)
        L, P = cfg.outputs, cfg.elems
        #: The weight-index memory outside the unit (``wrow`` port, see :class:`Imu`).
        self._ext_wmem = bool(ext_wmem)
        #: The ``wcb`` port writes entry ``addr`` of every lane at once.
        self._wide_wcb = bool(wide_wcb)
        self.in_layout = data.StructLayout({
            "idx": data.ArrayLayout(unsigned(cfg.ba), P),
            "count": unsigned(cfg.count_bits),
            "first": 1,
            "last": 1,
        })
        self.outlier_layout = data.StructLayout({
            "pos": unsigned(cfg.pos_bits),
            "r": signed(cfg.rbits),
            "last": 1,
        })
        self.out_layout = data.StructLayout({
            "y": data.ArrayLayout(signed(cfg.ybits), L),
        })
        self.wmem_layout = data.ArrayLayout(unsigned(cfg.bw), P)
        members = {
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "err": Out(1),
            "wmem": In(wiring.Signature({
                "en": Out(1), "lane": Out(cfg.lane_bits), "addr": Out(cfg.row_bits),
                "data": Out(self.wmem_layout)})),
            "wcb": In(wiring.Signature({
                "en": Out(1), "lane": Out(cfg.lane_bits), "addr": Out(cfg.bw),
                "data": Out(data.ArrayLayout(signed(cfg.cw), L) if self._wide_wcb
                            else signed(cfg.cw))})),
            "acb": In(wiring.Signature({
                "en": Out(1), "addr": Out(cfg.ba), "data": Out(signed(cfg.ca)),
                "shift": Out(cfg.shift_bits)})),
        }
        if cfg.outliers:
            members["r"] = In(stream.Signature(self.outlier_layout))
        if self._ext_wmem:
            members["wrow"] = Out(wiring.Signature({
                "a_addr": Out(cfg.row_bits), "a_data": In(L * P * cfg.bw),
                "b_addr": Out(cfg.row_bits), "b_en": Out(1), "b_data": In(L * P * cfg.bw)}))
        super().__init__(members)

    def _wcb_data(self, host, n):
        """Lane n's weight-codebook write data (its own with ``wide_wcb``)."""
        return host.wcb_data[n] if self._wide_wcb else host.wcb_data

    @property
    def _helper_base(self):
        return self.module_name or f"kllm_{self.Config.UNIT}"

    @property
    def verilog_extra(self):
        """Verilog appended to the netlist: the definitions of ``kllm_imu_mul`` and
        ``kllm_imu_bram``."""
        if not self._primitives:
            return ""
        return verilog_definitions(self._helper_base)

    # -- the unit ----------------------------------------------------------

    def elaborate(self, platform):
        m = Module()
        host = self._host_regs(m)
        framing = self._framing(m)
        front = self._front_f0_f1(m, framing, host)
        tail = self._tail_issue(m, framing.clearing)
        iw2, raw2 = self._weight_memories(m, host, front.row0, tail)
        front = self._front_f2(m, front, iw2, host)
        done, vals = self._dense(m, front, tail)

        # ---- vectors ready for the tail
        ready_cnt = Signal(2)
        ready_nxt = Signal(2)
        m.d.comb += ready_nxt.eq(ready_cnt + done - tail.take_vector)
        # the tail reads `ready_cnt != 0` as a register of its own
        m.d.sync += [ready_cnt.eq(ready_nxt), tail.ready.eq(ready_nxt != 0)]
        m.d.comb += framing.release.eq(tail.release)

        self._tail_datapath(m, tail, vals, raw2, host)
        return m

    def _host_regs(self, m):
        """The host write ports, registered: ``wmem`` and ``wcb`` address and data once, their
        write enables decoded per lane into kept copies (``wmem_we[n]``, ``wcb_we[n]``), and
        ``acb`` (its enable drives only the P activation-codebook copies) once.

        The host's writes land one cycle after they are presented; each lane's write enable
        is a register of its own (a kept copy), so that a lane's block RAM and codebooks take
        their enables from a register next to them, not from a decode of the host's lane
        shared by every lane.  (The layer's shift is registered by the tail's issue logic, as
        the flags it reads.)"""
        cfg = self._config
        L = cfg.outputs
        wm, wc, ac = self.wmem, self.wcb, self.acb
        return HostWrites(
            wmem_we=[kept_register(m, wm.en & (wm.lane == n), f"wmem_we_l{n}",
                                   reset_less=False) for n in range(L)],
            wmem_addr=register(m, wm.addr, "wmem_addr_r"),
            wmem_data=register(m, wm.data.as_value(), "wmem_data_r"),
            wcb_we=[kept_register(m, wc.en if self._wide_wcb else wc.en & (wc.lane == n),
                                  f"wcb_we_l{n}", reset_less=False)
                    for n in range(L)],
            wcb_addr=register(m, wc.addr, "wcb_addr_r"),
            wcb_data=([register(m, wc.data[n], f"wcb_data_r{n}") for n in range(L)]
                      if self._wide_wcb else register(m, wc.data, "wcb_data_r")),
            acb_en=register(m, ac.en, "acb_en_r", reset_less=False),
            acb_addr=register(m, ac.addr, "acb_addr_r"),
            acb_data=register(m, ac.data, "acb_data_r"),
        )

    # -- input stage -----------------------------------------------------------

    def _framing(self, m):
        """Input stage F0: framing, the vector's bank and weight row.

        A vector is the beats from one with `first` to the next with `last`.  Between a
        `last` (or reset) and the next `first`, beats are taken and dropped, and a beat
        with `first` inside a vector is taken as part of it; both set the sticky `err`.
        `ready` depends on no payload bit: a vector may start only while a bank is free."""
        cfg = self._config
        expect_first = Signal(init=1)     # between vectors
        row_cnt = Signal(cfg.row_bits)
        bank_in = Signal(init=1)          # bank of the vector being accepted
        inflight = Signal(2)              # vectors started whose bank is not yet released
        release = Signal()                # the tail has read a bank (pulse)
        clearing = Signal(init=1)         # after reset: the tail first sweeps every bucket
        m.d.comb += self.i.ready.eq((~expect_first | (inflight != 2)) & ~clearing)
        take = Signal()
        m.d.comb += take.eq(self.i.valid & self.i.ready)
        first_in, last_in = self.i.payload.first, self.i.payload.last
        start = Signal()
        drop = Signal()
        m.d.comb += [start.eq(expect_first & first_in), drop.eq(expect_first & ~first_in)]
        row = Signal(cfg.row_bits)
        m.d.comb += row.eq(Mux(start, 0, row_cnt))
        bank = Signal()
        m.d.comb += bank.eq(Mux(start, ~bank_in, bank_in))
        with m.If(take & ~drop):
            m.d.sync += [row_cnt.eq(row + 1), expect_first.eq(last_in), bank_in.eq(bank)]
        m.d.sync += inflight.eq(inflight + (take & start) - release)
        err = Signal()
        with m.If(take & (drop | (~expect_first & first_in))):
            m.d.sync += err.eq(1)
        m.d.comb += self.err.eq(err)
        return Framing(take=take, start=start, drop=drop, row=row, bank=bank,
                       release=release, clearing=clearing)

    def _front_f0_f1(self, m, framing, host):
        """F0 registers (the weight row is read from block RAM in F0, data in F2); F1: the
        activation centroids looked up once (P copies), broadcast to every lane."""
        cfg = self._config
        P, ba = cfg.elems, cfg.ba
        count = self.i.payload.count
        v0 = register(m, framing.take & ~framing.drop, "f0_valid", reset_less=False)
        first0 = register(m, framing.start, "f0_first")
        last0 = register(m, self.i.payload.last, "f0_last")
        bank0 = register(m, framing.bank, "f0_bank")
        idx0 = [register(m, self.i.payload.idx[p], f"f0_idx{p}") for p in range(P)]
        lv0 = [register(m, count > p, f"f0_lv{p}") for p in range(P)]
        row0 = register(m, framing.row, "f0_row")

        v1 = register(m, v0, "f1_valid", reset_less=False)
        first1 = register(m, first0, "f1_first")
        last1 = register(m, last0, "f1_last")
        bank1 = register(m, bank0, "f1_bank")
        a1 = []
        for p in range(P):
            rd = _lutram(m, f"ca_p{p}", signed(cfg.ca), 2 ** ba,
                         host.acb_en, host.acb_addr, host.acb_data)
            m.d.comb += rd.addr.eq(idx0[p])
            a1.append(register(m, Mux(lv0[p], rd.data, 0), f"f1_a{p}", shape=signed(cfg.ca)))
        return Front(row0=row0, v1=v1, first1=first1, last1=last1, bank1=bank1, a1=a1)

    def _weight_memories(self, m, host, row0, tail):
        """The weight-index memories, one per lane: port A streams rows (address in F0, data
        in F2), port B takes the host's writes and reads outlier rows (address at issue, data
        in T2: its two read registers advance with the tail).  Returns ``(iw2, raw2)``: per
        lane, the P indices of the streamed row and the raw outlier row."""
        cfg = self._config
        L, P, bw = cfg.outputs, cfg.elems, cfg.bw
        iw2 = []
        raw2 = []
        if self._ext_wmem:
            # the memory is the host's: row addresses out, rows (L lanes, lane n at bits
            # n P bw ..) in with the block RAM's timing (port A: data two cycles after the
            # address; port B: its two read registers advance with ``b_en``)
            w = self.wrow
            m.d.comb += [w.a_addr.eq(row0), w.b_addr.eq(tail.row), w.b_en.eq(tail.adv)]
            for n in range(L):
                da = w.a_data[n * P * bw:(n + 1) * P * bw]
                iw2.append([da[p * bw:(p + 1) * bw] for p in range(P)])
                raw2.append(w.b_data[n * P * bw:(n + 1) * P * bw])
            return iw2, raw2
        for n in range(L):
            # port B: the host's address while it writes this lane, else the tail's row
            we = host.wmem_we[n]
            addr2 = Signal(cfg.row_bits, name=f"wmem_addr2_l{n}")
            m.d.comb += addr2.eq(Mux(we, host.wmem_addr, tail.row)
                                 if cfg.outliers else host.wmem_addr)
            da = Signal(P * bw, name=f"wmem_da_l{n}")
            db = Signal(P * bw, name=f"wmem_db_l{n}")
            block_ram(m, f"wmem_l{n}", depth=cfg.depth, a_addr=row0, a_data=da, b_addr=addr2,
                      b_we=we, b_wdata=host.wmem_data, b_en=tail.adv_l[n], b_data=db,
                      b_read=bool(cfg.outliers), vendor=self._primitives,
                      base=self._helper_base)
            iw2.append([da[p * bw:(p + 1) * bw] for p in range(P)])
            raw2.append(db)
        return iw2, raw2

    def _front_f2(self, m, front, iw2, host):
        """F2: indices from the block RAMs' output registers; the dense datapath from here."""
        P = self._config.elems
        v2 = register(m, front.v1, "f2_valid", reset_less=False)
        first2 = register(m, front.first1, "f2_first")
        last2 = register(m, front.last1, "f2_last")
        bank2 = register(m, front.bank1, "f2_bank")
        a2 = [register(m, front.a1[p], f"f2_a{p}") for p in range(P)]
        return front._replace(v2=v2, first2=first2, last2=last2, bank2=bank2, a2=a2,
                              iw2=iw2, host=host)

    # -- tail -----------------------------------------------------------------
    #
    # One operation per cycle per token: COMBINE j (IMU: bucket j of the P files times
    # Cw[j]; baseline: one op loading the dense sum), `shift` DOUBLE ops, then one
    # CORRECT op per outlier beat (r * Cw[Iw[pos]]).  The accumulator is 0 when a token's
    # first op arrives (cleared after the previous token's last op); the last op sends it out.

    def _tail_issue(self, m, clearing):
        """The tail's issue logic and its T1 stage (the issued operation)."""
        cfg = self._config
        # the tail advances unless the output's skid register is full: a flip-flop, so the
        # enable of every tail register (and the banks' read addresses) depends on no input
        adv = Signal(name="t_adv")
        skid_full = Signal(name="o_skid_full")
        m.d.comb += adv.eq(~skid_full)
        # the same, per lane, from per-lane copies of the skid flag (driven in the datapath):
        # the enables of a lane's tail registers, so that no one net reaches every lane
        adv_l = [Signal(name=f"t_adv_l{n}") for n in range(cfg.outputs)]
        # a vector waits for the tail: a register (= ready_cnt != 0, kept in elaborate)
        ready = Signal(name="t_ready")

        st = self._issue_state(m, clearing, adv, ready)
        op = self._issue_op(m, st, adv)
        j_nxt = self._issue_next_state(m, st, op, clearing, adv)

        row = Signal(cfg.row_bits, name="t_row")
        m.d.comb += row.eq(op.pos[cfg.col_bits:])
        # T1: the issued operation; the banks are read at its address in T1
        t1 = TailOp(
            v=register(m, op.issue, "t1_valid", en=adv, reset_less=False),
            init=register(m, clearing, "t1_clearing", en=adv, reset_less=False),
            kind=register(m, st.kind, "t1_kind", en=adv),
            j=register(m, st.j, "t1_j", en=adv),
            last=register(m, op.last, "t1_last", en=adv),
            bank=register(m, st.tbank, "t1_bank", en=adv),
            r=register(m, op.r_val, "t1_r", en=adv),
            col=register(m, op.pos[:cfg.col_bits], "t1_col", en=adv)
            if cfg.col_bits else Const(0, 1),
        )
        j_next_l = self._bank_read_addresses(m, j_nxt, adv_l)
        # a bank is released once its last bucket has been read (captured in T2), so that the
        # next vector's writes into it come after that read even when the output is stalled
        rel = Signal(name="t_release")
        m.d.comb += rel.eq(adv & t1.v & (t1.kind == COMBINE) & (t1.j == cfg.combine_ops - 1))
        return Tail(adv=adv, adv_l=adv_l, skid_full=skid_full, ready=ready,
                    take_vector=op.take_vector, release=rel, row=row, t1=t1,
                    j_next_l=j_next_l, tbank=st.tbank)

    def _issue_state(self, m, clearing, adv, ready):
        """The issue state registers, the op kind and the bucket counter's step.

        The issue state is kept as registers whose next state is a few LUTs of registers:
        beside the bucket counter j, the flags it and the phase would otherwise compute from
        it (j != 0, j == C - 1), the phase one-hot, the DOUBLE count as a down-counter with
        its own last flag, and the layer's shift as the flags the tail reads (all registered
        with the shift).  They are encodings of the same state: no cycle changes."""
        cfg = self._config
        C = cfg.combine_ops
        shift_nz = Signal(name="t_shift_nz")           # shift != 0
        shift_is1 = Signal(name="t_shift_is1")         # shift == 1
        shift_m1 = Signal(cfg.shift_bits, name="t_shift_m1")    # shift - 1
        with m.If(self.acb.en):
            m.d.sync += [shift_nz.eq(self.acb.shift != 0), shift_is1.eq(self.acb.shift == 1),
                         shift_m1.eq(self.acb.shift - 1)]
        in_comb = Signal(name="t_in_comb", init=1)    # phase COMBINE
        in_dbl = Signal(name="t_in_dbl")               # phase DOUBLE
        in_corr = Signal(name="t_in_corr")             # phase CORRECT
        j = Signal(max(1, (C - 1).bit_length()), name="t_j")
        j_nz = Signal(name="t_j_nz")                   # j != 0
        j_last = Signal(name="t_j_last", init=int(C == 1))    # j == C - 1
        d_rem = Signal(cfg.shift_bits, name="t_d_rem")        # DOUBLE ops left after this one
        d_last = Signal(name="t_d_last")                      # d_rem == 0
        tbank = Signal(name="t_bank")            # bank of the token the tail works on

        kind = Signal(2, name="t_kind")
        m.d.comb += kind.eq(Mux(in_dbl, DOUBLE, Mux(in_corr, CORRECT, COMBINE)))
        # a COMBINE op issues: the first of a vector when one is ready, the others in a row;
        # not during the sweep after reset (clearing), which steps j with no op
        issue_c = Signal(name="t_issue_comb")
        m.d.comb += issue_c.eq(in_comb & ~clearing & (ready | j_nz))
        # j steps: every cycle of the sweep and every COMBINE op.  For the IMU, as
        # adv & (clearing | issue_c) = adv & (sweep | in_comb & ready), sweep = clearing | j != 0
        # a register (j != 0 only in the COMBINE phase): one LUT4 of four flip-flops
        step = Signal(name="t_step")
        sweep = None
        if self._combine:
            sweep = Signal(name="t_sweep", init=1)
            m.d.comb += step.eq(adv & (sweep | (in_comb & ready)))
        else:
            m.d.comb += step.eq(adv & issue_c)
        wrap = Signal(name="t_wrap")             # the step from the last bucket (j: C-1 -> 0)
        m.d.comb += wrap.eq(step & j_last)
        return IssueState(shift_nz=shift_nz, shift_is1=shift_is1, shift_m1=shift_m1,
                          in_comb=in_comb, in_dbl=in_dbl, in_corr=in_corr, j=j, j_nz=j_nz,
                          j_last=j_last, d_rem=d_rem, d_last=d_last, tbank=tbank, kind=kind,
                          issue_c=issue_c, step=step, sweep=sweep, wrap=wrap)

    def _issue_op(self, m, st, adv):
        """The operation issued this cycle (combinational) and the ends of the phases."""
        has_out = bool(self._config.outliers)
        issue = Signal(name="t_issue")
        last = Signal(name="t_last")
        take_vector = Signal(name="t_take_vector")
        r_val = Signal(signed(self._config.rbits), name="t_r")
        pos = Signal(self._config.pos_bits, name="t_pos")
        # Combinational issue signals as plain expressions, not inside a Switch: Icarus never
        # evaluates a combinational process whose inputs do not change after time 0.
        end_comb = adv & st.issue_c & st.j_last
        end_dbl = adv & st.in_dbl & st.d_last
        if has_out:
            end_corr = adv & st.in_corr & self.r.valid & self.r.payload.last
            m.d.comb += [
                issue.eq(st.issue_c | st.in_dbl | (st.in_corr & self.r.valid)),
                last.eq(st.in_corr & self.r.payload.last),
                r_val.eq(self.r.payload.r),
                pos.eq(self.r.payload.pos),
                self.r.ready.eq(adv & st.in_corr),
            ]
        else:
            end_corr = Const(0)
            m.d.comb += [
                issue.eq(st.issue_c | st.in_dbl),
                last.eq((st.in_comb & st.j_last & ~st.shift_nz) | (st.in_dbl & st.d_last)),
            ]
        m.d.comb += [
            take_vector.eq(adv & st.issue_c & ~st.j_nz),
        ]
        return IssueOp(issue=issue, last=last, take_vector=take_vector, r_val=r_val, pos=pos,
                       end_comb=end_comb, end_dbl=end_dbl, end_corr=end_corr)

    def _issue_next_state(self, m, st, op, clearing, adv):
        """The next state of the issue registers (and of ``clearing``); returns j's."""
        cfg = self._config
        C = cfg.combine_ops
        has_out = bool(cfg.outliers)
        j, j_last = st.j, st.j_last
        after_combine = Mux(st.shift_nz, DOUBLE, CORRECT if has_out else COMBINE)
        phase_nxt = Signal(2, name="t_phase_nxt")
        m.d.comb += phase_nxt.eq(Mux(op.end_comb, after_combine,
                                     Mux(op.end_dbl, CORRECT if has_out else COMBINE,
                                         Mux(op.end_corr, COMBINE, st.kind))))
        m.d.sync += [st.in_comb.eq(phase_nxt == COMBINE), st.in_dbl.eq(phase_nxt == DOUBLE),
                     st.in_corr.eq(phase_nxt == CORRECT)]
        j_nxt = Signal.like(j, name="t_j_nxt")
        j_nz_nxt = Signal(name="t_j_nz_nxt")
        if C == 1:
            m.d.comb += [j_nxt.eq(0), j_nz_nxt.eq(0)]
        else:
            wrapped = j + 1 if C == 2 ** len(j) else Mux(j_last, 0, j + 1)
            m.d.comb += [j_nxt.eq(Mux(st.step, wrapped, j)),
                         j_nz_nxt.eq(Mux(st.step, ~j_last, st.j_nz))]
            m.d.sync += j_last.eq(Mux(st.step, j == C - 2, j_last))
        m.d.sync += [j.eq(j_nxt), st.j_nz.eq(j_nz_nxt), st.tbank.eq(st.tbank ^ st.wrap)]
        with m.If(op.end_comb):
            m.d.sync += [st.d_rem.eq(st.shift_m1), st.d_last.eq(st.shift_is1)]
        with m.Elif(adv & st.in_dbl):
            m.d.sync += [st.d_rem.eq(st.d_rem - 1), st.d_last.eq(st.d_rem == 1)]
        if self._combine:
            # after reset: sweep j over the buckets of bank 0, then of bank 1 (the IMU takes a
            # snapshot of every bucket sum, see Imu), then start
            clearing_nxt = Signal(name="t_clearing_nxt")
            m.d.comb += clearing_nxt.eq(clearing & ~(st.wrap & st.tbank))
            m.d.sync += [clearing.eq(clearing_nxt), st.sweep.eq(clearing_nxt | j_nz_nxt)]
        else:
            # the baseline has nothing to sweep
            m.d.sync += clearing.eq(0)
        return j_nxt

    def _bank_read_addresses(self, m, j_nxt, adv_l):
        """IMU: the address the banks are read at in the next cycle (j of the op in T1 then),
        per lane, from per-lane copies of j (registers of j's next state, kept apart in
        synthesis): j itself then drives only its own next state and T1.  The baseline has
        no banks: an empty list."""
        j_next_l = []
        if self._combine:
            for n in range(self._config.outputs):
                j_n = kept_register(m, j_nxt, f"t_j_l{n}", reset_less=False)      # = j
                t1_j_n = register(m, j_n, f"t1_j_l{n}", en=adv_l[n])      # = t1.j
                j_next_n = Signal.like(j_nxt, name=f"t_j_next_l{n}")
                m.d.comb += j_next_n.eq(Mux(adv_l[n], j_n, t1_j_n))
                j_next_l.append(j_next_n)
        return j_next_l

    def _tail_datapath(self, m, tail, vals, raw2, host):
        """T2 .. output: bucket sums / dense sums, weight centroid, multiply, accumulate."""
        pre, ops = self._tail_operands(m, tail, vals, raw2)
        tp, q_regs = self._tail_products(m, tail, pre, ops, host)
        self._output_stage(m, tail, tp, q_regs)

    def _tail_operands(self, m, tail, vals, raw2):
        """T2 .. the multiplier's operand stage: the op's per-lane value summed over the P
        files (or the dense sum), and the outlier's weight index.  Returns the op at the
        operand stage and the per-lane :class:`TailOperands`."""
        cfg = self._config
        L, P, bw = cfg.outputs, cfg.elems, cfg.bw
        adv, adv_l = tail.adv, tail.adv_l
        # T2: the op's per-lane value (bucket-file reads or the dense sum) and the raw weight
        # row of an outlier: block RAM output straight into a register (its clock-to-out is
        # most of a cycle on ECP5); the index is selected from it one stage later
        t2 = tail.t1.carry(m, "t2", adv)
        col2 = register(m, tail.t1.col, "t2_col", en=adv)
        if not cfg.outliers:
            raw2 = [Const(0, P * bw) for n in range(L)]

        def select(raw, col):
            if not cfg.outliers or P == 1:
                return raw[:bw]
            return data.ArrayLayout(unsigned(bw), P)(raw)[col]

        # vals[n]: list of per-lane values registered in T2 (P bucket files, or one dense sum)
        width = cfg.sum_bits if self._combine else cfg.dense_bits
        sums = [adder_tree(m, vals[n], f"t_tree{n}", en=adv_l[n], width=width)[0]
                for n in range(L)]
        # the op fields wait for the tree; the outlier index is selected in its first level.
        # The baseline has no tree here: it takes one stage of the same kind (its dense sum
        # registered again), so that its outlier index too is selected from the block RAM's
        # output in one cycle and read from the codebook in the next
        stage = t2
        if self._combine:
            depth = cfg.tree_depth
        else:
            depth = 1
            sums = [register(m, sums[n], f"t_lv0_dense{n}", en=adv_l[n]) for n in range(L)]
        iwc = None
        for lv in range(depth):
            stage = stage.carry(m, f"t_lv{lv}", adv)
            if lv == 0:
                iwc = [register(m, select(raw2[n], col2), f"t_lv0_iwc{n}", en=adv_l[n],
                                shape=unsigned(bw)) for n in range(L)]
            else:
                iwc = [register(m, iwc[n], f"t_lv{lv}_iwc{n}", en=adv_l[n])
                       for n in range(L)]
        if iwc is None:
            iwc = [select(raw2[n], col2) for n in range(L)]
        if not self._combine:
            return stage, TailOperands(sums=sums, snaps=None, iwc=iwc)
        # IMU, Ts: the lane's sum and its snapshot (read at the tree output) registered
        pre = stage.carry(m, "ts", adv)
        sum_s = [register(m, sums[n], f"ts_sum{n}", en=adv_l[n]) for n in range(L)]
        snap_s = [register(m, self._snapshot(m, n, stage, sums[n], adv_l[n]),
                           f"ts_snap{n}", en=adv_l[n]) for n in range(L)]
        iwc = [register(m, iwc[n], f"ts_iwc{n}", en=adv_l[n]) for n in range(L)]
        return pre, TailOperands(sums=sum_s, snaps=snap_s, iwc=iwc)

    def _tail_products(self, m, tail, pre, ops, host):
        """Tx: the multiplier's operands registered in the fabric (the weight centroid
        Cw[n][j or Iw[pos]] read from LUTRAM, the data operand); the DSP's operand registers
        are Tm, its product register Tp; then Tq, in the fabric, feeds the accumulator.
        Returns the op at Tp and the per-lane Tq registers."""
        cfg = self._config
        L, bw = cfg.outputs, cfg.bw
        adv, adv_l = tail.adv, tail.adv_l
        W = cfg.sum_bits
        # after the operands only the fields the accumulator and the output read travel on
        tx = pre.carry(m, "tx", adv, TailOp.LATE)
        tm = tx.carry(m, "tm", adv, TailOp.LATE)
        tp = tm.carry(m, "tp", adv, TailOp.LATE)
        # Tq: the op fields of this stage are the registers the accumulator and the output
        # read, made from Tp's (tq_vl, and per lane tq_dbl, tq_v, tq_last), not a copy of
        # every field
        prod_w = cfg.mul_bits + cfg.cw
        pw = max(prod_w, cfg.dense_bits)
        q_regs = []
        for n in range(L):
            widx = Mux(pre.kind == CORRECT, ops.iwc[n], pre.j[:bw]) if self._combine \
                else ops.iwc[n]
            rd = _lutram(m, f"cw_tail_l{n}", signed(cfg.cw), 2 ** bw,
                         host.wcb_we[n], host.wcb_addr, self._wcb_data(host, n))
            m.d.comb += rd.addr.eq(widx)
            w = register(m, rd.data, f"tx_w{n}", en=adv_l[n])
            if self._combine:
                # this vector's bucket sum: the running total less the snapshot, modulo 2**W
                x = register(m, Mux(pre.kind == CORRECT, pre.r,
                                    (ops.sums[n] - ops.snaps[n])[:W].as_signed()),
                             f"tx_x{n}", en=adv_l[n], shape=signed(cfg.mul_bits))
                prod = dsp_mul(m, x, w, adv_l[n], f"t_mul{n}", vendor=self._primitives,
                               base=self._helper_base)
                q = register(m, prod[:prod_w].as_signed(), f"tq_p{n}", en=adv_l[n],
                             shape=signed(pw))
            else:
                x = register(m, pre.r, f"tx_x{n}", en=adv_l[n])
                prod = dsp_mul(m, x, w, adv_l[n], f"t_mul{n}", vendor=self._primitives,
                               base=self._helper_base)
                dx = register(m, ops.sums[n], f"tx_d{n}", en=adv_l[n])
                dm = register(m, dx, f"tm_d{n}", en=adv_l[n])
                dp = register(m, dm, f"tp_d{n}", en=adv_l[n])
                q = register(m, Mux(tp.kind == COMBINE, dp, prod[:prod_w].as_signed()),
                             f"tq_p{n}", en=adv_l[n], shape=signed(pw))
            q_regs.append(q)
        return tp, q_regs

    def _output_stage(self, m, tail, tp, q_regs):
        """Accumulate; the last op of a token loads the output register, or the skid register
        when the output is full and not taken this cycle."""
        ctl = self._output_control(m, tail, tp)
        for n in range(self._config.outputs):
            self._lane_accumulator(m, n, tail.adv_l[n], tp, q_regs[n], ctl)

    def _output_control(self, m, tail, tp):
        """The output's valid flag, the skid flag and, per lane, the copies that drive the
        lane's tail enables and its output and skid register enables."""
        L = self._config.outputs
        adv, adv_l = tail.adv, tail.adv_l
        out_valid = Signal(name="o_valid_r")
        full = tail.skid_full
        m.d.comb += self.o.valid.eq(out_valid)
        produce = Signal(name="t_produce")
        # a valid last op in Tq, as one register (= tq_v & tq_last), so that the skid flag's
        # next state is one LUT4 of four flip-flops
        vl = register(m, tp.v & tp.last, "tq_vl", en=adv, reset_less=False)
        m.d.comb += produce.eq(adv & vl)
        taken = self.o.valid & self.o.ready
        with m.If(taken & ~full & ~produce):
            m.d.sync += out_valid.eq(0)
        with m.If(produce):
            m.d.sync += out_valid.eq(1)
        # the skid flag: set by a result that finds the output full and not taken, cleared when
        # the output is taken (then the skid moves out); written as
        #   full' = ~taken & (full | vl & out_valid)
        # (with full = 0 the tail advances, so produce = vl)
        full_next = Signal(name="o_skid_full_next")
        m.d.comb += full_next.eq(~taken & (full | (vl & out_valid)))
        m.d.sync += full.eq(full_next)
        # per lane, a copy of the skid flag and the lane's output and skid register enables,
        # each with its logic of its own (one LUT4 of the output's `ready` and three
        # flip-flops), so that `ready` fans out to L small LUTs next to their lanes rather
        # than through one LUT to every lane:
        #   y loads:    (~out_valid | ready) & (full | vl)
        #               (the skid moves out, or a result arrives, when y is free or taken)
        #   skid loads: ~full & vl & out_valid & ~ready
        #               (a result arrives while y is full and not taken)
        ready_o = self.o.ready
        flag_l, load_y_l, load_skid_l = [], [], []
        for n in range(L):
            # (full_next's expression again, not the signal: built inside each copy)
            copy = kept_register(m, ~(out_valid & ready_o) & (full | (vl & out_valid)),
                                 f"o_skid_full_l{n}", reset_less=False, inside=True)
            m.d.comb += adv_l[n].eq(~copy)
            flag_l.append(copy)
            load_y_l.append(kept_logic(m, (~out_valid | ready_o) & (full | vl),
                                       f"o_load_l{n}"))
            load_skid_l.append(kept_logic(m, ~full & vl & out_valid & ~ready_o,
                                          f"o_skid_load_l{n}"))
        return OutputControl(full_l=flag_l, load_y_l=load_y_l, load_skid_l=load_skid_l)

    def _lane_accumulator(self, m, n, adv, tp, q, ctl):
        """Lane n's accumulator, output and skid registers.

        The accumulator is 0 when a token starts (reset, and cleared by the FF's own
        synchronous reset after the token's last op); a DOUBLE op doubles it, any other adds
        its product.  The doubling is a shift selected after the adder, so the carry chain
        takes the accumulator and the product register directly, and the clear is a reset
        over the enable (ECP5 flip-flops have that)."""
        cfg = self._config
        dbl = kept_register(m, tp.kind == DOUBLE, f"tq_dbl{n}", enable=adv)
        # per-lane copies of the op's valid bit and of valid-and-last: the accumulator's
        # enable and synchronous reset
        v_n = kept_register(m, tp.v, f"tq_v{n}", enable=adv, reset_less=False)
        vl_n = kept_register(m, tp.v & tp.last, f"tq_vl{n}", enable=adv, reset_less=False)
        acc = Signal(signed(cfg.ybits), name=f"acc{n}")
        nxt = Signal(signed(cfg.ybits), name=f"acc_next{n}")
        m.d.comb += nxt.eq(Mux(dbl, acc << 1, acc + q))
        y = Signal(signed(cfg.ybits), name=f"y{n}", reset_less=True)
        skid = Signal(signed(cfg.ybits), name=f"y_skid{n}", reset_less=True)
        with m.If(adv & vl_n):
            m.d.sync += acc.eq(0)
        with m.Elif(adv & v_n):
            m.d.sync += acc.eq(nxt)
        with m.If(ctl.load_skid_l[n]):
            m.d.sync += skid.eq(nxt)
        with m.If(ctl.load_y_l[n]):
            m.d.sync += y.eq(Mux(ctl.full_l[n], skid, nxt))     # the lane's copy of `full`
        m.d.comb += self.o.payload.y[n].eq(y)


class Imu(_ImuUnit):
    """Index MatMul unit: bucket sums per weight index, 2**bw multiplies per output.

    Per lane n (L lanes) and element slot p (P slots), a bucket file of 2**bw
    entries in two banks (LUTRAM, ``sum_bits`` wide).  Every beat, the P
    activation centroids ``Ca[ia]`` are looked up once and broadcast to the L
    lanes; each (n, p) adds its centroid into bucket ``Iw[n, k]`` of the bank of
    the current vector in one cycle: the LUTRAM's asynchronous read port, an
    adder, its write port (so two beats in a row into the same bucket need no
    forwarding).  Each bank's read address is a per-file register: the bucket
    of the next beat while the bank fills, the tail's j while it drains.

    Buckets are never cleared: they hold running sums modulo ``2**sum_bits``.
    After a vector's last beat the tail reads bucket j = 0 .. 2**bw - 1 of that
    bank, sums the P files in a pipelined adder tree (modulo ``2**sum_bits``)
    and subtracts the lane's snapshot of the same sum taken when the bank was
    last read (a LUTRAM of 2 x 2**bw entries per lane, rewritten with the new
    sum): the difference is this vector's bucket sum, exact because it fits in
    ``sum_bits`` signed bits.  After reset the tail first sweeps both banks to
    take the snapshots (2 x 2**bw cycles, input not ready).  The difference is
    multiplied by ``Cw[n, j]`` on one multiplier per lane (a MULT18X18D with
    its operand and product registers), accumulating; then ``shift``
    doublings; then one multiply-add ``r * Cw[n, Iw[n, pos]]`` per outlier
    beat (the index read from the second port of the weight memory).
    Meanwhile the next vector fills the other bank.

    Cycles (``B = ceil(K / P)`` beats per vector, ``s`` the shift, ``O`` the
    outlier beats of a vector, at least one when the unit has outlier
    capacity): the tail spends ``T = 2**bw + s + O`` cycles per vector
    (:meth:`base.config.ImuConfig.tail_ops`).  With the outliers waiting and
    no output backpressure, a vector's result leaves ``latency + T - 1``
    cycles after its last beat (``latency = 13 + log2 P``).  When
    ``B >= max(T, 2**bw + 5)`` (:meth:`base.config.ImuConfig.streams`) the
    input takes one beat every cycle (II = 1, L x P MACs per cycle) and ``n``
    vectors back to back take ``n B + latency + T - 1`` cycles from the first
    beat to the last result.  Shorter vectors stall the input: the tail gives
    one result per ``T`` cycles at best, and a vector may start only when the
    bank of the vector two before it has been read (``2**bw + 5`` cycles after
    that vector's last beat).  The tests hold the netlist to these figures.

    Parameters
    ----------
    outputs, elems, bw, ba, cw, ca, k_max, outliers, xbits : int
        L, P (a power of 2), index bits, centroid bits, longest K, outlier pairs per
        vector (0: no ``r`` port), activation fixed-point bits; ranges and derived widths
        in :class:`base.config.ImuConfig`.

    Attributes
    ----------
    i : In(stream)
        ``{idx: P x ba, count, first, last}``; element p of beat b is position ``b P + p``;
        a vector runs from a beat with ``first`` to the next beat with ``last``.
    r : In(stream)
        ``{pos, r, last}``: the outlier pairs of one vector (if ``outliers`` > 0).
    o : Out(stream)
        ``{y: L x signed(ybits)}``, one beat per vector.
    err : Out(1)
        Sticky until reset: a beat came between vectors without ``first`` (it was
        dropped), or a beat inside a vector carried ``first`` (it was taken as part of
        the vector).
    wmem, wcb, acb : In
        Host writes: one lane's P weight indices of one row; a weight codebook entry of
        one lane; an activation codebook entry with the layer's shift.  One write per
        cycle, registered at the input: a write lands one cycle after it is presented; a
        vector may start in the cycle after the last write (docs/ARCHITECTURE.md,
        host-port timing).
    wrow : Out (only with ``ext_wmem``)
        The weight-index memory kept by the host (the KLLM core's WBUF slots), read with a
        block RAM's timing: ``a_addr`` (the streamed row, F0) -> ``a_data`` two cycles
        later; ``b_addr`` (an outlier's row, at issue) -> ``b_data`` through two registers
        that advance when ``b_en``.  Data: all L lanes of the row, lane n at bits
        ``n P bw .. (n + 1) P bw - 1``.  The ``wmem`` port is then unused.

    Construction options (not configuration parameters; their defaults keep the netlist):
    ``ext_wmem`` (the ``wrow`` port in place of the per-lane weight block RAMs) and
    ``wide_wcb`` (``wcb.data`` is L centroids: one write fills entry ``addr`` of every
    lane, ``wcb.lane`` unused).
    """

    _combine = True

    Config = ImuConfig

    def _dense(self, m, f, tail):
        """F3 ..: the bucket files of each lane, filled from the front ``f`` (a
        :class:`Front`) and read by the tail.  Returns ``(done, vals)``: a vector's last beat
        is in the files, and per lane the P file values registered in T2."""
        cfg = self._config
        L, P, bw = cfg.outputs, cfg.elems, cfg.bw
        W = cfg.sum_bits
        adv_l = tail.adv_l
        # F3: read, add and write the bucket of each file
        v3 = register(m, f.v2, "f3_valid", reset_less=False)
        last3 = register(m, f.last2, "f3_last")
        vals = []
        for n in range(L):
            # per-lane copies (kept apart in synthesis) of the broadcast activation centroids,
            # the bank selects and the tail's bank: no net fans out to all L x P files
            a3 = [kept_register(m, f.a2[p], f"f3_a{p}_l{n}") for p in range(P)]
            use2 = [kept_register(m, f.v1 & (f.bank1 == b), f"f2_use{b}_l{n}") for b in (0, 1)]
            use3 = [kept_register(m, use2[b], f"f3_use{b}_l{n}") for b in (0, 1)]
            adv = adv_l[n]
            tbank = kept_register(m, tail.tbank, f"t1_bank_l{n}", enable=adv)    # = t1.bank
            j_next = tail.j_next_l[n]     # the bucket the tail reads next
            lane_vals = []
            for p in range(P):
                tag = f"l{n}_p{p}"
                iw2 = f.iw2[n][p]
                iw3 = register(m, iw2, f"f3_iw_{tag}")
                rds = []
                for b in (0, 1):
                    raddr = register(m, Mux(use2[b], iw2, j_next[:bw]), f"f3_raddr{b}_{tag}")
                    total = Signal(signed(W), name=f"f3_sum{b}_{tag}")
                    rd = _lutram(m, f"bucket_{tag}_b{b}", signed(W), 2 ** bw,
                                 use3[b], iw3, total)
                    m.d.comb += [rd.addr.eq(raddr), total.eq((rd.data + a3[p])[:W].as_signed())]
                    rds.append(rd.data)
                # the tail's read of the full bank (address j from T1)
                lane_vals.append(register(m, Mux(tbank, rds[1], rds[0]),
                                          f"t2_file_{tag}", en=adv))
            vals.append(lane_vals)
        done = Signal(name="f3_done")
        m.d.comb += done.eq(v3 & last3)
        return done, vals

    def _snapshot(self, m, n, stage, total, adv):
        """The lane's snapshot of bucket j of the op's bank (the running total modulo
        2**sum_bits when the bank was last read); a COMBINE op rewrites it with ``total``."""
        cfg = self._config
        W, C = cfg.sum_bits, cfg.combine_ops
        addr = stage.j[:cfg.bw] + Mux(stage.bank, C, 0)
        rd = _lutram(m, f"snap_l{n}", signed(W), 2 * C,
                     adv & (stage.v | stage.init) & (stage.kind == COMBINE),
                          addr, total)
        m.d.comb += rd.addr.eq(addr)
        return rd.data


class ImuBaseline(_ImuUnit):
    """Baseline of the IMU: dequantize both operands and multiply-accumulate.

    Same ports, storage, framing and tail as :class:`Imu`.  Per lane n and
    element slot p, ``Cw[n, Iw[n, k]]`` is read from a LUTRAM copy of the
    lane's codebook and multiplied by the broadcast ``Ca[ia[k]]`` (one
    multiplier per MAC, L x P in all, each a MULT18X18D with its operand and
    product registers); both operands are registered in the fabric first (the
    weight centroid after its LUTRAM read, the activation centroid as a per-lane
    copy), so no LUTRAM read is routed straight to a DSP input.  A pipelined
    adder tree and an accumulator per lane form the dense sum, which goes to one
    of two holding registers (double buffer) for the tail.  The tail loads it
    in one operation, then doubles ``shift`` times and adds the outlier
    corrections: ``T = 1 + s + O`` cycles per vector.  In the tail, the
    outlier's weight index is selected from the block RAM row in one stage and
    looked up in the codebook in the next (the IMU has its adder tree's first
    level there).  Cycle formulas as for :class:`Imu` with the baseline's
    figures (:class:`base.config.ImuBaselineConfig`): ``latency = 15 + log2 P``,
    II = 1 when ``B >= max(T, 8 + log2 P)``.
    """

    _combine = False

    Config = ImuBaselineConfig

    def _dense(self, m, f, tail):
        """F3 ..: the products, adder tree and accumulator of each lane, fed from the front
        ``f`` (a :class:`Front`).  Returns ``(done, vals)``: a vector's dense sums are held,
        and per lane that sum registered in T2 (a list of one)."""
        cfg = self._config
        L, P, bw = cfg.outputs, cfg.elems, cfg.bw
        t1, adv_l = tail.t1, tail.adv_l
        pw = cfg.ca + cfg.cw
        # F3: the weight centroids looked up in F2 (LUTRAM read at the block RAM's output
        # register) and the activation centroids, registered in the fabric next to each lane
        # (per-lane copies, as the IMU's F3); F4: the multipliers' operand registers (in the
        # DSP); F5: products
        v3 = register(m, f.v2, "f3_valid", reset_less=False)
        first3 = register(m, f.first2, "f3_first")
        last3 = register(m, f.last2, "f3_last")
        bank3 = register(m, f.bank2, "f3_bank")
        v4 = register(m, v3, "f4_valid", reset_less=False)
        first4 = register(m, first3, "f4_first")
        last4 = register(m, last3, "f4_last")
        bank4 = register(m, bank3, "f4_bank")
        v5 = register(m, v4, "f5_valid", reset_less=False)
        first5 = register(m, first4, "f5_first")
        last5 = register(m, last4, "f5_last")
        bank5 = register(m, bank4, "f5_bank")
        vs, fs, ls, bs = v5, first5, last5, bank5
        for lv in range(cfg.tree_depth):
            vs = register(m, vs, f"f_lv{lv}_valid", reset_less=False)
            fs = register(m, fs, f"f_lv{lv}_first")
            ls = register(m, ls, f"f_lv{lv}_last")
            bs = register(m, bs, f"f_lv{lv}_bank")
        vals = []
        for n in range(L):
            a3 = [kept_register(m, f.a2[p], f"f3_a{p}_l{n}") for p in range(P)]
            prods = []
            for p in range(P):
                tag = f"l{n}_p{p}"
                rd = _lutram(m, f"cw_{tag}", signed(cfg.cw), 2 ** bw,
                             f.host.wcb_we[n], f.host.wcb_addr,
                             self._wcb_data(f.host, n))
                m.d.comb += rd.addr.eq(f.iw2[n][p])
                w3 = register(m, rd.data, f"f3_w_{tag}")
                prod = dsp_mul(m, a3[p], w3, Const(1), f"mul_{tag}", vendor=self._primitives,
                               base=self._helper_base)
                prods.append(prod[:pw].as_signed())
            s, _ = adder_tree(m, prods, f"f_tree{n}", width=cfg.dense_bits)
            acc = Signal(signed(cfg.dense_bits), name=f"dacc{n}", reset_less=True)
            nxt = Signal(signed(cfg.dense_bits), name=f"dacc_next{n}")
            m.d.comb += nxt.eq((Mux(fs, 0, acc) + s)[:cfg.dense_bits].as_signed())
            hold = [Signal(signed(cfg.dense_bits), name=f"dhold{n}_b{b}", reset_less=True)
                    for b in (0, 1)]
            with m.If(vs):
                m.d.sync += acc.eq(nxt)
                with m.If(ls):
                    with m.If(bs):
                        m.d.sync += hold[1].eq(nxt)
                    with m.Else():
                        m.d.sync += hold[0].eq(nxt)
            vals.append([register(m, Mux(t1.bank, hold[1], hold[0]), f"t2_dense{n}",
                                  en=adv_l[n])])
        done = Signal(name="dense_done")
        m.d.comb += done.eq(vs & ls)
        return done, vals


class ImuLutMultipliers(Imu):
    """:class:`Imu` with its multipliers as plain ``*`` between the same registers: for the
    Amaranth simulator (which cannot run the DSP instance) and for synthesis with ``-nodsp``
    (every multiplier in LUTs)."""

    _primitives = False


class ImuBaselineLutMultipliers(ImuBaseline):
    """:class:`ImuBaseline` with its multipliers as plain ``*`` (see :class:`ImuLutMultipliers`)."""

    _primitives = False
