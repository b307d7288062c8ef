"""The KLLM core: fetch, three instruction queues with token semaphores, the LOAD / STORE
DMA over one AXI4 master, on-chip ABUF / WBUF / TBUF, an AXI4-Lite control slave.

Golden twin: :mod:`golden.interp` (the oracle and the cycle model; its docstring states the
timing this RTL implements).  Configuration: :class:`base.config.CoreConfig`.  Instruction
set and register map: :mod:`base.isa`.

Stage B: the compute engine executes MATMUL (:mod:`hdl.matmul`: the quantizer, Orizuru and
the IMU reading its weights straight from the WBUF slots, requantization, the writer into
ABUF); it ends ROWOP and ADD with BAD_OPCODE.  A compute instruction starts in cycle t (the
instruction latched, a MATMUL's format header read from TBUF) and is checked in t + 1, where
a fault is registered (golden.interp's timing).
"""

from amaranth import Cat, Const, Module, Mux, ResetInserter, Signal, unsigned
from amaranth.lib import fifo, memory
from amaranth.lib.wiring import In, Out

from base.config import CoreConfig
from base.isa import (CORE_ID, CORE_VERSION, CTRL_START, INSTR_BYTES, QUEUE_DEPTH, SEM_MAX,
                      SEMAPHORES, Error, LoadMode, Op, Reg, RowKind, Space, StoreMode,
                      burst_boundary)
from hdl.component import ConfiguredComponent
from hdl.matmul import MatmulEngine, check_config
from hdl.rowengine import RowEngine

__all__ = ["KllmCore", "AXIL_ADDR_BITS", "AXI_ID_BITS"]

AXIL_ADDR_BITS = 8
AXI_ID_BITS = 1
_BUSY_REGS = [Reg.BUSY_FETCH, Reg.BUSY_LOAD, Reg.BUSY_COMPUTE, Reg.BUSY_STORE]
_STALL_REGS = [Reg.STALL_FETCH, Reg.STALL_LOAD, Reg.STALL_COMPUTE, Reg.STALL_STORE]


def _ports(bus_bits):
    p = {}
    # AXI4-Lite slave (control and status)
    p.update({
        "s_axil_awaddr": In(AXIL_ADDR_BITS), "s_axil_awprot": In(3), "s_axil_awvalid": In(1),
        "s_axil_awready": Out(1),
        "s_axil_wdata": In(32), "s_axil_wstrb": In(4), "s_axil_wvalid": In(1),
        "s_axil_wready": Out(1),
        "s_axil_bresp": Out(2), "s_axil_bvalid": Out(1), "s_axil_bready": In(1),
        "s_axil_araddr": In(AXIL_ADDR_BITS), "s_axil_arprot": In(3), "s_axil_arvalid": In(1),
        "s_axil_arready": Out(1),
        "s_axil_rdata": Out(32), "s_axil_rresp": Out(2), "s_axil_rvalid": Out(1),
        "s_axil_rready": In(1),
    })
    # AXI4 master (external memory)
    p.update({
        "m_axi_awid": Out(AXI_ID_BITS), "m_axi_awaddr": Out(32), "m_axi_awlen": Out(8),
        "m_axi_awsize": Out(3), "m_axi_awburst": Out(2), "m_axi_awvalid": Out(1),
        "m_axi_awready": In(1),
        "m_axi_wdata": Out(bus_bits), "m_axi_wstrb": Out(bus_bits // 8), "m_axi_wlast": Out(1),
        "m_axi_wvalid": Out(1), "m_axi_wready": In(1),
        "m_axi_bid": In(AXI_ID_BITS), "m_axi_bresp": In(2), "m_axi_bvalid": In(1),
        "m_axi_bready": Out(1),
        "m_axi_arid": Out(AXI_ID_BITS), "m_axi_araddr": Out(32), "m_axi_arlen": Out(8),
        "m_axi_arsize": Out(3), "m_axi_arburst": Out(2), "m_axi_arvalid": Out(1),
        "m_axi_arready": In(1),
        "m_axi_rid": In(AXI_ID_BITS), "m_axi_rdata": In(bus_bits), "m_axi_rresp": In(2),
        "m_axi_rlast": In(1), "m_axi_rvalid": In(1), "m_axi_rready": Out(1),
    })
    return p


class KllmCore(ConfiguredComponent):
    """The KLLM core (stage B: MATMUL; ROWOP and ADD are refused with BAD_OPCODE).

    Ports: ``s_axil_*`` an AXI4-Lite slave (8-bit addresses, 32-bit data; registers
    :class:`base.isa.Reg`), ``m_axi_*`` an AXI4 master (32-bit addresses, ``8 * bus_bytes``
    data, ID 0, INCR bursts of full beats, one read and one write burst in flight).

    On-chip memories, all ``8 * bus_bytes`` bits wide with byte write enables (one word per
    bus beat): ABUF ``abuf_bytes / bus_bytes`` words, WBUF ``wbuf_bytes / bus_bytes``, TBUF
    ``4 * tbuf_words / bus_bytes``.  A WBUF index row (``outputs x entry_bytes``) must be a
    power of 2 of at most ``bus_bytes``: the IMU streams one row a cycle from one WBUF word.
    """

    Config = CoreConfig

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        B = cfg.bus_bytes
        for name, size in (("abuf", cfg.abuf_bytes), ("wbuf", cfg.wbuf_bytes),
                           ("tbuf", 4 * cfg.tbuf_words)):
            if size % B:
                raise ValueError(f"core: {name} ({size} bytes) must be a whole number of "
                                 f"bus_bytes ({B}) words")
        if cfg.slot.entry_bytes > B:
            raise ValueError(f"core: a WBUF entry ({cfg.slot.entry_bytes} bytes) must fit in "
                             f"a bus beat (bus_bytes {B})")
        check_config(cfg)
        super().__init__(_ports(8 * B))

    @property
    def latency(self):
        return None

    def elaborate(self, platform):
        m = Module()
        cfg = self._config
        B = cfg.bus_bytes
        LB = (B - 1).bit_length()               # log2(B)
        BOUND = burst_boundary(B)
        NB_FETCH = INSTR_BYTES // B
        L, EB = cfg.outputs, cfg.slot.entry_bytes
        bw = cfg.bw

        # ---------------------------------------------------------------- memories
        def buffer(name, size):
            mem = memory.Memory(shape=unsigned(8 * B), depth=size // B, init=[])
            m.submodules[name] = mem
            return mem
        abuf = buffer("abuf", cfg.abuf_bytes)
        wbuf = buffer("wbuf", cfg.wbuf_bytes)
        tbuf = buffer("tbuf", 4 * cfg.tbuf_words)
        wports = {Space.ABUF: abuf.write_port(granularity=8),
                  Space.WBUF: wbuf.write_port(granularity=8),
                  Space.TBUF: tbuf.write_port(granularity=8)}
        ard = abuf.read_port()                 # STORE's read port (synchronous, with enable)
        # MATMUL: two ABUF read ports (a beat from two words), a write port for its results,
        # two WBUF read ports (the IMU's weight rows; the setup and outlier rows), two TBUF
        # read ports (threshold and centroid j a cycle; the header at start)
        x_rd = [abuf.read_port() for _ in range(2)]
        y_wp = abuf.write_port(granularity=8)
        w_rd = [wbuf.read_port() for _ in range(2)]
        t_rd = [tbuf.read_port() for _ in range(2)]
        # one write for all three: word address, data, byte enables; the space selects
        w_addr = Signal(32)
        w_data = Signal(8 * B)
        w_en = Signal(B)
        w_space = Signal(2)
        for sp, wp in wports.items():
            m.d.comb += [wp.addr.eq(w_addr), wp.data.eq(w_data),
                         wp.en.eq(Mux(w_space == sp, w_en, 0))]

        # ---------------------------------------------------------------- control state
        run = Signal()
        done = Signal()
        fault = Signal(8)
        prog_addr = Signal(32)
        start = Signal()                       # the START write (one cycle)
        sems = [Signal(8, name=f"sem{s}") for s in range(SEMAPHORES)]
        fault_pc = Signal(32)

        # ---------------------------------------------------------------- queues
        queues = {}
        for name in ("load", "compute", "store"):
            q = ResetInserter(start)(fifo.SyncFIFO(width=32 * 8, depth=QUEUE_DEPTH))
            m.submodules[f"q_{name}"] = q
            queues[name] = q

        def field(word_bits, word, lo, bits):
            return word_bits[32 * word + lo:32 * word + lo + bits]

        # ---------------------------------------------------------------- read channel
        rd_busy = Signal()
        rd_owner = Signal()                    # 0 fetch, 1 load
        ar_valid = Signal()
        ar_addr = Signal(32)
        ar_len = Signal(8)
        m.d.comb += [self.m_axi_arvalid.eq(ar_valid), self.m_axi_araddr.eq(ar_addr),
                     self.m_axi_arlen.eq(ar_len), self.m_axi_arsize.eq(LB),
                     self.m_axi_arburst.eq(1), self.m_axi_arid.eq(0)]
        with m.If(ar_valid & self.m_axi_arready):
            m.d.sync += ar_valid.eq(0)
        r_hs = Signal()
        m.d.comb += r_hs.eq(self.m_axi_rvalid & self.m_axi_rready)
        r_fetch = Signal()
        r_load = Signal()
        m.d.comb += [r_fetch.eq(r_hs & (rd_owner == 0)), r_load.eq(r_hs & (rd_owner == 1))]
        with m.If(r_hs & self.m_axi_rlast):
            m.d.sync += rd_busy.eq(0)

        faults = []                            # (condition, code), by rank

        # ---------------------------------------------------------------- fetch
        pc = Signal(32)
        ended = Signal()
        ir = Signal(32 * 8)
        ir_valid = Signal()
        fetching = Signal()
        fetch_req = Signal()
        m.d.comb += fetch_req.eq(run & (fault == 0) & ~ended & ~ir_valid & ~fetching)
        load_req = Signal()
        grant_fetch = Signal()
        grant_load = Signal()
        m.d.comb += [grant_fetch.eq(~rd_busy & fetch_req),
                     grant_load.eq(~rd_busy & ~fetch_req & load_req)]
        load_ar_addr = Signal(32)
        load_ar_len = Signal(8)
        with m.If(grant_fetch):
            m.d.sync += [rd_busy.eq(1), rd_owner.eq(0), ar_valid.eq(1), ar_addr.eq(pc),
                         ar_len.eq(NB_FETCH - 1), fetching.eq(1)]
        with m.If(grant_load):
            m.d.sync += [rd_busy.eq(1), rd_owner.eq(1), ar_valid.eq(1),
                         ar_addr.eq(load_ar_addr), ar_len.eq(load_ar_len)]
        instrs = Signal(32)
        with m.If(r_fetch):
            if NB_FETCH == 1:
                m.d.sync += ir.eq(self.m_axi_rdata)
            else:
                m.d.sync += ir.eq(Cat(ir[8 * B:], self.m_axi_rdata))
            with m.If(self.m_axi_rlast):
                m.d.sync += [fetching.eq(0), ir_valid.eq(1), pc.eq(pc + INSTR_BYTES),
                             fault_pc.eq(pc), instrs.eq(instrs + 1)]
        fetch_bus_fault = r_fetch & (self.m_axi_rresp != 0)
        faults.append((fetch_bus_fault, Error.BUS))

        # dispatch
        opcode = ir[0:8]
        is_end = opcode == Op.END
        to_load = opcode == Op.LOAD
        to_store = opcode == Op.STORE
        to_comp = (opcode == Op.MATMUL) | (opcode == Op.ROWOP) | (opcode == Op.ADD)
        known = is_end | to_load | to_store | to_comp
        target_full = Signal()
        m.d.comb += target_full.eq((to_load & ~queues["load"].w_rdy)
                                   | (to_store & ~queues["store"].w_rdy)
                                   | (to_comp & ~queues["compute"].w_rdy))
        dispatch = Signal()
        m.d.comb += dispatch.eq(ir_valid & (fault == 0) & known & ~is_end & ~target_full)
        for name, sel in (("load", to_load), ("store", to_store), ("compute", to_comp)):
            m.d.comb += [queues[name].w_en.eq(dispatch & sel), queues[name].w_data.eq(ir)]
        with m.If(dispatch):
            m.d.sync += ir_valid.eq(0)
        with m.If(ir_valid & (fault == 0) & is_end):
            m.d.sync += [ended.eq(1), ir_valid.eq(0)]
        bad_op = Signal()
        m.d.comb += bad_op.eq(ir_valid & (fault == 0) & ~known)
        with m.If(bad_op):
            m.d.sync += ir_valid.eq(0)
        faults.insert(0, (bad_op, Error.BAD_OPCODE))
        fetch_stall = Signal()
        m.d.comb += fetch_stall.eq(ir_valid & (fault == 0) & known & ~is_end & target_full)

        # ---------------------------------------------------------------- engine starts
        names = ("load", "compute", "store")
        idle = {n: Signal(name=f"{n}_idle") for n in names}
        can = {n: Signal(name=f"{n}_start") for n in names}
        gives = {n: Signal(SEMAPHORES, name=f"{n}_gives") for n in names}
        taken = [Const(0, 2)] * SEMAPHORES
        takes = []
        for n in names:
            q = queues[n]
            wait = q.r_data[8:16]
            ok = Cat(*[~wait[s] | (sems[s] > taken[s]) for s in range(SEMAPHORES)]).all()
            m.d.comb += can[n].eq(run & (fault == 0) & idle[n] & q.r_rdy & ok)
            m.d.comb += q.r_en.eq(can[n])
            take = Mux(can[n], wait, 0)
            takes.append(take)
            taken = [taken[s] + take[s] for s in range(SEMAPHORES)]

        # ---------------------------------------------------------------- LOAD engine
        ld = _Walker(m, "ld", cfg)
        L_IDLE, L_PREP, L_CHECK, L_REQ, L_DATA, L_DRAIN = range(6)
        lstate = Signal(3)
        m.d.comb += idle["load"].eq(lstate == L_IDLE)
        l_space = Signal(2)
        l_mode = Signal(2)
        l_sub = Signal(8)
        l_signal = Signal(8)
        lane_base = Signal(32)
        lq = queues["load"].r_data
        with m.If(can["load"]):
            m.d.sync += [lstate.eq(L_PREP), l_sub.eq(lq[24:32]), l_space.eq(lq[24:26]),
                         l_mode.eq(lq[26:28]), l_signal.eq(lq[16:24])]
            ld.latch(lq)
        # the writer: one byte a cycle (LANES rows, and rows whose addresses differ mod B)
        wr_cnt = Signal(range(B + 1))
        wr_data = Signal(8 * B)
        wr_pos = Signal(LB + 1)
        wr_addr = Signal(32)
        wr_j = Signal(range(max(2, EB)))
        lanes = l_mode == LoadMode.LANES
        l_fast = Signal()
        m.d.comb += l_fast.eq(~lanes & (ld.s[:LB] == ld.a[:LB]))
        m.d.comb += [load_req.eq(lstate == L_REQ), load_ar_addr.eq(ld.cur),
                     load_ar_len.eq(ld.burst - 1)]
        m.d.comb += self.m_axi_rready.eq(
            (rd_owner == 0) | ((lstate == L_DATA) & Mux(l_fast, wr_cnt == 0, wr_cnt <= 1)))
        l_bad = Signal()
        l_code = Signal(8)
        lfault = Signal()
        empty = (ld.rows == 0) | (ld.rb == 0)
        size = Mux(l_space == Space.ABUF, cfg.abuf_bytes,
                   Mux(l_space == Space.WBUF, cfg.wbuf_bytes, 4 * cfg.tbuf_words))
        bad_sub = (l_sub[4:] != 0) | (l_space == 3) | (l_mode > LoadMode.LANES) | (
            lanes & (l_space != Space.WBUF))
        with m.If(bad_sub):
            m.d.comb += [l_bad.eq(1), l_code.eq(Error.BAD_OPCODE)]
        with m.Elif(empty):
            pass
        with m.Elif(lanes):
            with m.If(ld.rows > L):
                m.d.comb += [l_bad.eq(1), l_code.eq(Error.OVERFLOW)]
            with m.Elif(ld.rb > cfg.depth * EB):
                m.d.comb += [l_bad.eq(1), l_code.eq(Error.OVERFLOW)]
            with m.Elif((ld.s0[:(cfg.slot.stride - 1).bit_length()] != 0)
                        | (ld.s0 >= cfg.wbuf_bytes)):
                m.d.comb += [l_bad.eq(1), l_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(ld.extent(ld.rb) > size):
            m.d.comb += [l_bad.eq(1), l_code.eq(Error.BAD_ADDRESS)]
        m.d.comb += lfault.eq((lstate == L_CHECK) & l_bad)
        faults.append((lfault, l_code))
        l_bus = r_load & (self.m_axi_rresp != 0)
        faults.append((l_bus, Error.BUS))
        l_finish = Signal()
        with m.Switch(lstate):
            with m.Case(L_PREP):
                m.d.sync += lstate.eq(L_CHECK)
            with m.Case(L_CHECK):
                with m.If(l_bad):
                    m.d.sync += lstate.eq(L_IDLE)
                with m.Elif(empty):
                    m.d.sync += lstate.eq(L_DRAIN)
                with m.Else():
                    m.d.sync += [lstate.eq(L_REQ), lane_base.eq(ld.s0)]
                    ld.begin()
            with m.Case(L_REQ):
                with m.If(grant_load):
                    m.d.sync += lstate.eq(L_DATA)
                    ld.issue()
            with m.Case(L_DATA):
                with m.If(r_load):
                    ld.beat_done()
                    with m.If(ld.burst_last):
                        last_row = ld.advance()
                        with m.If(~ld.row_more):
                            m.d.sync += lane_base.eq(lane_base + EB)
                            with m.If(last_row):
                                m.d.sync += lstate.eq(L_DRAIN)
                            with m.Else():
                                m.d.sync += lstate.eq(L_REQ)
                        with m.Else():
                            m.d.sync += lstate.eq(L_REQ)
            with m.Case(L_DRAIN):
                with m.If(wr_cnt == 0):
                    m.d.comb += l_finish.eq(1)
                    m.d.sync += lstate.eq(L_IDLE)
        m.d.comb += gives["load"].eq(Mux(l_finish, l_signal, 0))
        # beat -> buffer
        m.d.comb += w_space.eq(l_space)
        fast_write = r_load & l_fast
        with m.If(fast_write):
            m.d.comb += [w_addr.eq(ld.word), w_data.eq(self.m_axi_rdata), w_en.eq(ld.strobe)]
        with m.Elif(wr_cnt != 0):
            m.d.comb += [w_addr.eq(wr_addr[LB:]), w_data.eq(wr_data.word_select(
                wr_pos[:LB], 8).replicate(B)), w_en.eq(1 << wr_addr[:LB])]
            m.d.sync += [wr_cnt.eq(wr_cnt - 1), wr_pos.eq(wr_pos + 1)]
            with m.If(lanes & (wr_j == EB - 1)):
                m.d.sync += [wr_addr.eq(wr_addr + (L - 1) * EB + 1), wr_j.eq(0)]
            with m.Elif(lanes):
                m.d.sync += [wr_addr.eq(wr_addr + 1), wr_j.eq(wr_j + 1)]
            with m.Else():
                m.d.sync += wr_addr.eq(wr_addr + 1)
        with m.If(r_load & ~l_fast):
            m.d.sync += [wr_data.eq(self.m_axi_rdata), wr_pos.eq(ld.lo),
                         wr_cnt.eq(ld.hi - ld.lo)]
            with m.If(ld.rbeat == 0):
                m.d.sync += [wr_addr.eq(Mux(lanes, lane_base, ld.s)), wr_j.eq(0)]

        # ---------------------------------------------------------------- compute engine
        # start t: the instruction latched, the format's header read from TBUF (MATMUL,
        # ROWOP), a ROWOP or ADD handed to the row engine; t + 1: the checks (a fault ends
        # it); then the MATMUL datapath (hdl/matmul.py) or the row engine until its done
        C_IDLE, C_CHECK, C_MM, C_ROW = range(4)
        cstate = Signal(2)
        m.d.comb += idle["compute"].eq(cstate == C_IDLE)
        cq = queues["compute"].r_data
        c_ins = Signal(32 * 8)
        WPB = B // 4
        LW = (WPB - 1).bit_length()
        hdr_sub = Signal(max(1, LW))
        cq_row = cq[0:8] == Op.ROWOP
        cq_fmt = Mux(cq_row, cq[128:160], cq[160:192])      # ROWOP word 4, MATMUL word 5
        with m.If(can["compute"]):
            m.d.sync += [cstate.eq(C_CHECK), c_ins.eq(cq)]
            m.d.comb += [t_rd[0].addr.eq(cq_fmt[LW:]), t_rd[0].en.eq(1)]
            m.d.sync += hdr_sub.eq(cq_fmt[:LW] if LW else 0)
        cf = lambda w, lo, bits: c_ins[32 * w + lo:32 * w + lo + bits]
        c_op, c_signal, c_slot = cf(0, 0, 8), cf(0, 16, 8), cf(0, 24, 8)
        x_addr, x_stride, n_tok, n_k = cf(1, 0, 32), cf(2, 0, 32), cf(3, 0, 16), cf(3, 16, 16)
        n_lanes, n_out, fmt = cf(4, 0, 16), cf(4, 16, 8), cf(5, 0, 32)
        y_addr, y_ts, y_ns = cf(6, 0, 32), cf(7, 0, 16), cf(7, 16, 16)
        header = t_rd[0].data.word_select(hdr_sub, 32) if LW else t_rd[0].data[:32]
        h_ba, h_shift = header[0:8], header[8:16]
        ba_w = Signal(8)
        shift_w = Signal(8)
        c_bad = Signal()
        c_code = Signal(8)
        c_go = Signal()
        x_end = Signal(52)
        y_end = Signal(52)
        m.d.comb += [x_end.eq(x_addr + (n_tok - 1) * x_stride + 2 * n_k),
                     y_end.eq(y_addr + (n_tok - 1) * y_ts + (n_lanes - 1) * y_ns + 2)]
        TW = cfg.tbuf_words
        tw_end = fmt + (Const(2, 10) << h_ba[:4])
        # ROWOP and ADD: the checks the golden model makes before it reads the thresholds
        # (kind, row length, the format's header and extent; ADD: all of them).  The row
        # engine makes them again and the rest (unsorted thresholds, outliers, the rows'
        # and tables' extents) after the thresholds: a fault it reports at its done.
        r_kind, r_rows, r_len = cf(0, 24, 8), cf(3, 0, 16), cf(3, 16, 16)
        r_fmt = cf(4, 0, 32)
        r_lim = Mux(r_kind == RowKind.SOFTMAX, cfg.max_tokens, cfg.max_row)
        r_maxba = Mux(r_kind == RowKind.LUT, cfg.lut_ba, cfg.row_ba)
        r_fmt_end = r_fmt + (Const(2, 12) << h_ba[:4])
        a_a, a_b, a_stride, a_par, a_dst = cf(1, 0, 32), cf(2, 0, 32), cf(4, 0, 32), \
            cf(5, 0, 32), cf(6, 0, 32)
        a_span = Signal(52)
        m.d.comb += a_span.eq((r_rows - 1) * a_stride + 2 * r_len)

        def a_bad(addr):
            return addr[0] | a_stride[0] | ((r_rows != 0) & (addr + a_span > cfg.abuf_bytes))
        with m.If(c_op == Op.ROWOP):
            with m.If(r_kind > RowKind.NORM):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_OPCODE)]
            with m.Elif((r_len == 0) | (r_len > r_lim)):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
            with m.Elif(r_fmt + 1 > TW):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
            with m.Elif((h_ba == 0) | (h_ba > r_maxba)):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
            with m.Elif(r_fmt_end > TW):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(c_op == Op.ADD):
            with m.If((r_len == 0) | (r_len > cfg.max_row)):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
            with m.Elif(a_bad(a_a) | a_bad(a_b) | (a_par + 1 + 3 * r_len > TW) | a_bad(a_dst)):
                m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(c_op != Op.MATMUL):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_OPCODE)]
        with m.Elif(c_slot >= cfg.slots):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif((n_k == 0) | (n_k > cfg.k_max) | (n_lanes == 0) | (n_lanes > L)
                    | (n_out > cfg.outliers)):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
        with m.Elif(fmt + 1 > TW):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif((h_ba == 0) | (h_ba > cfg.ba)):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
        with m.Elif(tw_end > TW):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(h_shift > cfg.imu.shift_max):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.OVERFLOW)]
        with m.Elif(x_addr[0] | x_stride[0]
                    | ((n_tok != 0) & (x_end > cfg.abuf_bytes))):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(y_addr[0] | y_ts[0] | y_ns[0]
                    | ((n_tok != 0) & (y_end > cfg.abuf_bytes))):
            m.d.comb += [c_bad.eq(1), c_code.eq(Error.BAD_ADDRESS)]
        cfault = Signal()
        c_fcode = Signal(8)
        c_finish = Signal()
        c_rowop = (c_op == Op.ROWOP) | (c_op == Op.ADD)
        with m.If(cstate == C_CHECK):
            m.d.sync += [ba_w.eq(h_ba), shift_w.eq(h_shift)]
            with m.If(c_bad):
                m.d.comb += [cfault.eq(1), c_fcode.eq(c_code)]
                m.d.sync += cstate.eq(C_IDLE)
            with m.Elif(c_rowop):
                m.d.sync += cstate.eq(C_ROW)
            with m.Else():
                m.d.comb += c_go.eq(1)
                m.d.sync += cstate.eq(C_MM)
        faults.append((cfault, c_fcode))
        mm = MatmulEngine(m, cfg, ins=c_ins, go=c_go, abuf_rd=x_rd, abuf_wr=y_wp,
                          wbuf_rd=w_rd, tbuf_rd=t_rd,
                          slot_word=c_slot << ((cfg.slot.stride // B).bit_length() - 1),
                          ba_w=ba_w[:4], shift_w=shift_w[:cfg.imu.shift_bits])
        with m.If((cstate == C_MM) & mm.finish):
            m.d.comb += c_finish.eq(1)
            m.d.sync += cstate.eq(C_IDLE)
        # the row engine: started with the instruction in t (its done comes rowop_cycles /
        # add_cycles later: the compute engine's last cycle), on the MATMUL's first ABUF
        # read port, its ABUF write port and its first TBUF read port while it runs (the
        # MATMUL datapath is idle then); a START resets it (an instruction the checks in
        # t + 1 refused runs on inside it to its own fault, writing nothing)
        rowe = RowEngine(cfg)
        m.submodules.rows = ResetInserter(start)(rowe)
        m.d.comb += [rowe.start.eq(can["compute"] & ((cq[0:8] == Op.ROWOP)
                                                     | (cq[0:8] == Op.ADD))),
                     rowe.instr.eq(cq),
                     rowe.abuf_rdata.eq(x_rd[0].data), rowe.tbuf_rdata.eq(t_rd[0].data)]
        with m.If(rowe.busy | rowe.done):      # its last write may land with done
            m.d.comb += [x_rd[0].addr.eq(rowe.abuf_raddr), x_rd[0].en.eq(rowe.abuf_ren),
                         y_wp.addr.eq(rowe.abuf_waddr), y_wp.data.eq(rowe.abuf_wdata),
                         y_wp.en.eq(rowe.abuf_wen),
                         t_rd[0].addr.eq(rowe.tbuf_raddr), t_rd[0].en.eq(rowe.tbuf_ren)]
        with m.If((cstate == C_ROW) & rowe.done):
            m.d.sync += cstate.eq(C_IDLE)
            with m.If(rowe.error != 0):
                m.d.comb += [cfault.eq(1), c_fcode.eq(rowe.error)]
            with m.Else():
                m.d.comb += c_finish.eq(1)
        m.d.comb += gives["compute"].eq(Mux(c_finish, c_signal, 0))

        # ---------------------------------------------------------------- STORE engine
        st = _Walker(m, "st", cfg)
        S_IDLE, S_PREP, S_CHECK, S_AW, S_W, S_B, S_FIN = range(7)
        sstate = Signal(3)
        m.d.comb += idle["store"].eq(sstate == S_IDLE)
        s_sub = Signal(8)
        s_signal = Signal(8)
        sq = queues["store"].r_data
        with m.If(can["store"]):
            m.d.sync += [sstate.eq(S_PREP), s_sub.eq(sq[24:32]), s_signal.eq(sq[16:24])]
            st.latch(sq)
        pack = s_sub == StoreMode.PACK
        s_fast = Signal()
        m.d.comb += s_fast.eq(~pack & (st.s[:LB] == st.a[:LB]))
        # PREP: elements of a PACK row
        n_el = Signal(36)
        with m.If(sstate == S_PREP):
            m.d.sync += n_el.eq((Cat(Const(0, 3), st.rb) + (bw - 1)) // bw)
        items = Mux(pack, n_el, st.rb)
        s_bad = Signal()
        s_code = Signal(8)
        s_empty = (st.rows == 0) | (st.rb == 0)
        with m.If(s_sub > StoreMode.PACK):
            m.d.comb += [s_bad.eq(1), s_code.eq(Error.BAD_OPCODE)]
        with m.Elif(s_empty):
            pass
        with m.Elif(pack & (st.s0[0] | st.sstride[0])):
            m.d.comb += [s_bad.eq(1), s_code.eq(Error.BAD_ADDRESS)]
        with m.Elif(st.extent(Mux(pack, Cat(Const(0, 1), n_el), st.rb)) > cfg.abuf_bytes):
            m.d.comb += [s_bad.eq(1), s_code.eq(Error.BAD_ADDRESS)]
        sfault = Signal()
        m.d.comb += sfault.eq((sstate == S_CHECK) & s_bad)
        faults.append((sfault, s_code))
        # the write channel
        aw_hs = Signal()
        m.d.comb += [self.m_axi_awvalid.eq(sstate == S_AW), self.m_axi_awaddr.eq(st.cur),
                     self.m_axi_awlen.eq(st.burst - 1), self.m_axi_awsize.eq(LB),
                     self.m_axi_awburst.eq(1), self.m_axi_awid.eq(0),
                     aw_hs.eq(self.m_axi_awvalid & self.m_axi_awready)]
        wv = Signal()
        wstrb = Signal(B)
        wlast = Signal()
        wbeat = Signal(8 * B)                  # the packer's beat
        m.d.comb += [self.m_axi_wvalid.eq(wv), self.m_axi_wstrb.eq(wstrb),
                     self.m_axi_wlast.eq(wlast),
                     self.m_axi_wdata.eq(Mux(s_fast, ard.data, wbeat))]
        w_hs = Signal()
        m.d.comb += w_hs.eq(wv & self.m_axi_wready)
        m.d.comb += self.m_axi_bready.eq(sstate == S_B)
        b_hs = Signal()
        m.d.comb += b_hs.eq(self.m_axi_bvalid & (sstate == S_B))
        faults.append((b_hs & (self.m_axi_bresp != 0), Error.BUS))
        issued = Signal(9)                     # fast: beats read in this burst
        sent = Signal(9)
        # packer (PACK rows, and INT16 rows whose addresses differ mod B)
        i_issued = Signal(36)
        rv = Signal()
        sel = Signal(LB)                       # byte (INT16) or element (PACK) in the word
        acc = Signal(16)
        nbits = Signal(4)
        bytes_done = Signal(33)
        fill_k = Signal(9)                     # beat of the burst being filled
        s_finish = Signal()
        ib = Mux(pack, bw, 8)
        item_addr = Mux(pack, st.s + (i_issued << 1), st.s + i_issued)
        m.d.comb += ard.en.eq(0)
        with m.Switch(sstate):
            with m.Case(S_PREP):
                m.d.sync += sstate.eq(S_CHECK)
            with m.Case(S_CHECK):
                with m.If(s_bad):
                    m.d.sync += sstate.eq(S_IDLE)
                with m.Elif(s_empty):
                    m.d.sync += sstate.eq(S_FIN)
                with m.Else():
                    m.d.sync += sstate.eq(S_AW)
                    st.begin()
            with m.Case(S_AW):
                with m.If(aw_hs):
                    m.d.sync += [sstate.eq(S_W), issued.eq(0), sent.eq(0), wv.eq(0),
                                 fill_k.eq(0)]
                    st.issue()
                    with m.If(st.done_beats == 0):      # a row starts: a fresh packer
                        m.d.sync += [i_issued.eq(0), rv.eq(0), acc.eq(0), nbits.eq(0),
                                     bytes_done.eq(0)]
            with m.Case(S_W):
                with m.If(s_fast):
                    adv = ~wv | self.m_axi_wready
                    with m.If(w_hs):
                        m.d.sync += sent.eq(sent + 1)
                        st.beat_done()
                        with m.If(wlast):
                            m.d.sync += sstate.eq(S_B)
                    with m.If(adv):
                        with m.If(issued < st.bbeats):
                            m.d.comb += [ard.en.eq(1),
                                         ard.addr.eq(st.s[LB:] + st.done_beats + issued)]
                            rb_i = st.done_beats + issued
                            m.d.sync += [wv.eq(1), issued.eq(issued + 1),
                                         wstrb.eq(st.strobe_of(rb_i)),
                                         wlast.eq(issued == st.bbeats - 1)]
                        with m.Else():
                            m.d.sync += wv.eq(0)
                with m.Elif(wv):
                    with m.If(self.m_axi_wready):
                        m.d.sync += [wv.eq(0), sent.eq(sent + 1)]
                        st.beat_done()
                        with m.If(wlast):
                            m.d.sync += sstate.eq(S_B)
                with m.Else():
                    with m.If(rv):
                        word = ard.data
                        item = Mux(pack, word.word_select(sel[1:], 16) if LB > 1 else word[:16],
                                   word.word_select(sel, 8))
                        bits = Mux(pack, item & ((1 << bw) - 1), item[:8])
                        t = Signal(16, name="pk_t")
                        m.d.comb += t.eq(acc | (bits << nbits))
                        nb = nbits + ib
                        with m.If(nb >= 8):
                            pos = (st.a[:LB] + bytes_done)[:LB]
                            m.d.sync += [wbeat.word_select(pos, 8).eq(t[:8]),
                                         acc.eq(t >> 8), nbits.eq(nb - 8),
                                         bytes_done.eq(bytes_done + 1)]
                            end_beat = (pos == B - 1) | (bytes_done + 1 == st.rb)
                            with m.If(end_beat):
                                rb_f = st.done_beats + fill_k
                                m.d.sync += [wv.eq(1), fill_k.eq(fill_k + 1),
                                             wstrb.eq(st.strobe_of(rb_f)),
                                             wlast.eq(fill_k == st.bbeats - 1)]
                        with m.Else():
                            m.d.sync += [acc.eq(t), nbits.eq(nb)]
                    issue = i_issued < items
                    m.d.sync += rv.eq(issue)
                    with m.If(issue):
                        m.d.comb += [ard.en.eq(1), ard.addr.eq(item_addr[LB:])]
                        m.d.sync += [i_issued.eq(i_issued + 1),
                                     sel.eq(item_addr[:LB])]
            with m.Case(S_B):
                with m.If(b_hs):
                    last_row = st.advance()
                    with m.If(~st.row_more & last_row):
                        m.d.sync += sstate.eq(S_FIN)
                    with m.Else():
                        m.d.sync += sstate.eq(S_AW)
            with m.Case(S_FIN):
                m.d.comb += s_finish.eq(1)
                m.d.sync += sstate.eq(S_IDLE)
        m.d.comb += gives["store"].eq(Mux(s_finish, s_signal, 0))

        # ---------------------------------------------------------------- semaphores
        sem_over = Signal()
        overs = []
        for s in range(SEMAPHORES):
            g = gives["load"][s] + gives["compute"][s] + gives["store"][s]
            tk = takes[0][s] + takes[1][s] + takes[2][s]
            v = Signal(10, name=f"sem{s}_next")
            m.d.comb += v.eq(sems[s] + g - tk)
            overs.append(v > SEM_MAX)
            m.d.sync += sems[s].eq(v[:8])
        m.d.comb += sem_over.eq(Cat(*overs).any())
        faults.append((sem_over, Error.SEMAPHORE))

        # ---------------------------------------------------------------- done, deadlock
        all_idle = idle["load"] & idle["compute"] & idle["store"]
        any_start = can["load"] | can["compute"] | can["store"]
        queued = queues["load"].r_rdy | queues["compute"].r_rdy | queues["store"].r_rdy
        blocked = ended | (ir_valid & known & ~is_end & target_full)
        deadlock = Signal()
        m.d.comb += deadlock.eq(run & (fault == 0) & blocked & all_idle & ~rd_busy
                                & ~any_start & queued)
        faults.append((deadlock, Error.DEADLOCK))
        finish = Signal()
        m.d.comb += finish.eq(run & all_idle & ~rd_busy & (
            (fault != 0) | (ended & ~queued)))
        with m.If(finish):
            m.d.sync += [run.eq(0), done.eq(1)]
        with m.If(run & (fault == 0)):
            with m.If(faults[0][0]):
                m.d.sync += fault.eq(faults[0][1])
            for cond, code in faults[1:]:
                with m.Elif(cond):
                    m.d.sync += fault.eq(code)

        # ---------------------------------------------------------------- counters
        cycles = Signal(32)
        busy = [Signal(32, name=f"busy_{n}") for n in ("fetch",) + names]
        stall = [Signal(32, name=f"stall_{n}") for n in ("fetch",) + names]
        with m.If(run):
            m.d.sync += cycles.eq(cycles + 1)
            conds = [fetch_req | fetching | ir_valid] + [~idle[n] | can[n] for n in names]
            for c, r in zip(conds, busy):
                with m.If(c):
                    m.d.sync += r.eq(r + 1)
            sconds = [fetch_stall] + [
                (fault == 0) & idle[n] & queues[n].r_rdy & ~can[n] for n in names]
            for c, r in zip(sconds, stall):
                with m.If(c):
                    m.d.sync += r.eq(r + 1)

        with m.If(start):
            m.d.sync += [run.eq(1), done.eq(0), fault.eq(0), pc.eq(prog_addr), ended.eq(0),
                         ir_valid.eq(0), cycles.eq(0), instrs.eq(0)]
            m.d.sync += [s.eq(0) for s in sems]
            m.d.sync += [r.eq(0) for r in busy + stall]

        # ---------------------------------------------------------------- AXI4-Lite slave
        regs = {
            Reg.ID: Const(CORE_ID, 32), Reg.VERSION: Const(CORE_VERSION, 32),
            Reg.CONFIG: Const(B | QUEUE_DEPTH << 8 | SEMAPHORES << 16 | cfg.slots << 24, 32),
            Reg.STATUS: Cat(run, done, Const(0, 6), fault),
            Reg.PROG_ADDR: prog_addr, Reg.FAULT_PC: fault_pc, Reg.CYCLES: cycles,
            Reg.INSTRS: instrs,
        }
        for a, r in zip(_BUSY_REGS, busy):
            regs[a] = r
        for a, r in zip(_STALL_REGS, stall):
            regs[a] = r
        for s in range(SEMAPHORES):
            regs[Reg.SEM0 + 4 * s] = sems[s]
        bvalid = Signal()
        rvalid = Signal()
        rdata = Signal(32)
        aw_ok = self.s_axil_awvalid & self.s_axil_wvalid & ~bvalid
        m.d.comb += [self.s_axil_awready.eq(aw_ok), self.s_axil_wready.eq(aw_ok),
                     self.s_axil_bvalid.eq(bvalid), self.s_axil_bresp.eq(0)]
        with m.If(aw_ok):
            m.d.sync += bvalid.eq(1)
            waddr = self.s_axil_awaddr[2:]
            with m.If(waddr == Reg.CTRL >> 2):
                m.d.comb += start.eq(self.s_axil_wdata[0] & CTRL_START & ~run)
            with m.If(waddr == Reg.PROG_ADDR >> 2):
                m.d.sync += prog_addr.eq(Cat(Const(0, 5), self.s_axil_wdata[5:]))
        with m.Elif(bvalid & self.s_axil_bready):
            m.d.sync += bvalid.eq(0)
        m.d.comb += [self.s_axil_arready.eq(~rvalid), self.s_axil_rvalid.eq(rvalid),
                     self.s_axil_rdata.eq(rdata), self.s_axil_rresp.eq(0)]
        with m.If(self.s_axil_arvalid & ~rvalid):
            m.d.sync += rvalid.eq(1)
            with m.Switch(self.s_axil_araddr[2:]):
                for a, r in regs.items():
                    with m.Case(a >> 2):
                        m.d.sync += rdata.eq(r)
                with m.Default():
                    m.d.sync += rdata.eq(0)
        with m.Elif(rvalid & self.s_axil_rready):
            m.d.sync += rvalid.eq(0)
        return m


class _Walker:
    """A LOAD's or STORE's operands and its walk over rows and bursts: the current row's
    DRAM and on-chip start (``a``, ``s``), the beats of the row already issued
    (``done_beats``), the next burst (``cur``, ``burst`` beats), the beat in the row
    (``rbeat``) and its byte range (``lo``, ``hi``, ``strobe``)."""

    def __init__(self, m, name, cfg):
        self.m = m
        B = self.B = cfg.bus_bytes
        LB = self.LB = (B - 1).bit_length()
        self.bound = burst_boundary(B)
        S = lambda w, n: Signal(w, name=f"{name}_{n}")
        self.a0, self.dstride, self.s0 = S(32, "dram_addr"), S(32, "dram_stride"), S(32, "sram")
        self.sstride, self.rows, self.rb = S(32, "sram_stride"), S(16, "rows"), S(32, "row_bytes")
        self.prod = S(48, "prod")
        self.a, self.s, self.row = S(32, "a"), S(32, "s"), S(16, "row")
        self.done_beats = S(28, "done_beats")     # beats of the row in finished bursts
        self.bbeats = S(9, "bbeats")              # beats of the burst in flight
        self.k = S(9, "k")                        # beats of it done
        m.d.sync += self.prod.eq((self.rows - 1) * self.sstride)
        # the next burst of the row
        self.beats_row = S(29, "beats_row")
        m.d.comb += self.beats_row.eq((self.a[:LB] + self.rb + (B - 1)) >> LB)
        self.cur = S(32, "cur")
        m.d.comb += self.cur.eq(Cat(Const(0, LB), self.a[LB:]) + (self.done_beats << LB))
        left = self.beats_row - self.done_beats
        to_bound = (self.bound - self.cur[:(self.bound - 1).bit_length()]) >> LB
        self.burst = S(10, "burst")
        m.d.comb += self.burst.eq(Mux(left < to_bound, left, to_bound))
        self.row_more = S(1, "row_more")     # after this burst, more of the row
        m.d.comb += self.row_more.eq(self.done_beats + self.bbeats < self.beats_row)
        # the beat being transferred
        self.rbeat = S(28, "rbeat")
        m.d.comb += self.rbeat.eq(self.done_beats + self.k)
        self.word = S(32, "word")
        m.d.comb += self.word.eq(self.s[LB:] + self.rbeat)
        self.lo, self.hi = S(LB + 1, "lo"), S(LB + 1, "hi")
        lo, hi = self.range_of(self.rbeat)
        m.d.comb += [self.lo.eq(lo), self.hi.eq(hi)]
        self.strobe = S(B, "strobe")
        m.d.comb += self.strobe.eq(self.strobe_of(self.rbeat))
        self.burst_last = S(1, "burst_last")
        m.d.comb += self.burst_last.eq(self.k == self.bbeats - 1)

    def range_of(self, rbeat):
        B, LB = self.B, self.LB
        lo = Mux(rbeat == 0, self.a[:LB], 0)
        end = (self.a[:LB] + self.rb - 1)[:LB] + 1
        hi = Mux(rbeat == self.beats_row - 1, end, B)
        return lo, hi

    def strobe_of(self, rbeat):
        lo, hi = self.range_of(rbeat)
        one = Const(1, self.B + 1)
        below_hi = ((one << hi) - 1)[:self.B + 1]
        below_lo = ((one << lo) - 1)[:self.B + 1]
        return (below_hi & ~below_lo)[:self.B]

    def extent(self, nbytes):
        """The last on-chip byte + 1 (checked in CHECK; ``prod`` from PREP)."""
        return self.s0 + self.prod + nbytes

    def latch(self, q):
        f = lambda w: q[32 * w:32 * w + 32]
        self.m.d.sync += [self.a0.eq(f(1)), self.dstride.eq(f(2)), self.s0.eq(f(3)),
                          self.sstride.eq(f(4)), self.rows.eq(f(5)[:16]), self.rb.eq(f(6))]

    def begin(self):
        self.m.d.sync += [self.a.eq(self.a0), self.s.eq(self.s0), self.row.eq(0),
                          self.done_beats.eq(0)]

    def issue(self):
        self.m.d.sync += [self.bbeats.eq(self.burst), self.k.eq(0)]

    def beat_done(self):
        self.m.d.sync += self.k.eq(self.k + 1)

    def advance(self):
        """At a burst's end: the next burst of the row, or the next row.  Returns 'this
        was the last row' (meaningful when the row is done, ``~row_more``)."""
        m = self.m
        with m.If(self.row_more):
            m.d.sync += self.done_beats.eq(self.done_beats + self.bbeats)
        with m.Else():
            m.d.sync += [self.done_beats.eq(0), self.row.eq(self.row + 1),
                         self.a.eq(self.a + self.dstride), self.s.eq(self.s + self.sstride)]
        return self.row + 1 == self.rows
