"""cocotb bench of the KLLM core against :mod:`golden.interp`.

The host is cocotbext-axi's ``AxiLiteMaster`` on the control slave, the external memory an
``AxiRam`` on the AXI4 master.  Each test writes programs and data into the memory, starts
the core through the register map (base.isa.Reg), waits for done (with a cycle limit) and
compares with the interpreter run on the same memory image:

* every byte of the memory, the error code and the instruction count, always;
* with no memory pauses: the cycle count and every busy and stall counter, exactly;
* with random pauses on every AXI channel of the memory: cycles >= the model's.

WBUF and TBUF cannot be stored back to memory (STORE reads ABUF); LANES and TBUF loads are
checked here for their timing, tokens and faults, their contents by the interpreter's own
tests (tests/test_interp.py).
"""

import json
import os
import random
import time

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from base.isa import (CORE_ID, CORE_VERSION, CTRL_START, QUEUE_DEPTH, SEMAPHORES,
                      STATUS_BUSY, STATUS_DONE, STATUS_ERROR_SHIFT, Error, Instr, LoadMode, Op,
                      Reg, RowKind, Space, StoreMode, affine_words, encode_program,
                      format_words)
from golden.interp import Interpreter
from golden.softmax import exp_table
from testbench.common import CLOCK_PERIOD_NS, build_component, load_description

MEM_SIZE = 1 << 20
PROG = 0x0
SRC = 0x10000
DST = 0x40000
COUNTERS = {"cycles": Reg.CYCLES, "instrs": Reg.INSTRS,
            "busy_fetch": Reg.BUSY_FETCH, "busy_load": Reg.BUSY_LOAD,
            "busy_compute": Reg.BUSY_COMPUTE, "busy_store": Reg.BUSY_STORE,
            "stall_fetch": Reg.STALL_FETCH, "stall_load": Reg.STALL_LOAD,
            "stall_compute": Reg.STALL_COMPUTE, "stall_store": Reg.STALL_STORE}


def _pauses(rng):
    def gen():
        while True:
            yield rng.random() < 0.35
    return gen()


class CoreTB:
    def __init__(self, dut, pauses=False, seed=0, mem_size=MEM_SIZE):
        self.dut = dut
        self.mem_size = mem_size
        self.description = load_description()
        self.cfg = build_component(self.description).config
        self.started = time.perf_counter()
        self.cycles = 0
        dut.rst.value = 1
        cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=False))
        cocotb.start_soon(self._count())
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=mem_size)
        for x in (self.axil.write_if, self.axil.read_if, self.ram.write_if, self.ram.read_if):
            x.log.setLevel("WARNING")
        self.set_pauses(pauses, seed)
        # the RTL's compute engine runs MATMUL, ROWOP (NORM without outliers) and ADD
        self.model = Interpreter(self.cfg, compute={Op.MATMUL, Op.ROWOP, Op.ADD})
        self.buffers = None      # the model's buffers as the core holds them, when known

    def set_pauses(self, pauses, seed=0):
        """Random pauses (35 %) on every channel of the memory, or none."""
        self.pauses = pauses
        rng = random.Random(seed)
        for ch in (self.ram.write_if.aw_channel, self.ram.write_if.w_channel,
                   self.ram.write_if.b_channel, self.ram.read_if.ar_channel,
                   self.ram.read_if.r_channel):
            ch.set_pause_generator(_pauses(rng) if pauses else None)
            ch.pause = False

    async def _count(self):
        while True:
            await RisingEdge(self.dut.clk)
            self.cycles += 1

    async def reset(self, cycles=4):
        self.buffers = None      # the buffers keep what an interrupted program left
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await ClockCycles(self.dut.clk, 2)

    async def read(self, addr):
        return await self.axil.read_dword(addr)

    async def start(self, prog_addr):
        await self.axil.write_dword(Reg.PROG_ADDR, prog_addr)
        await self.axil.write_dword(Reg.CTRL, CTRL_START)

    async def wait_done(self, limit):
        waited = 0
        while waited < limit:
            await ClockCycles(self.dut.clk, 20)
            waited += 20
            status = await self.read(Reg.STATUS)
            if status & STATUS_DONE:
                assert not status & STATUS_BUSY, f"status {status:#x}: busy and done"
                return status
        regs = {k: await self.read(a) for k, a in COUNTERS.items()}
        regs["fault_pc"] = await self.read(Reg.FAULT_PC)
        raise AssertionError(f"no done within {limit} cycles: status {status:#x}, {regs}")

    async def run(self, prog_addr=PROG, limit=None, expect_error=None):
        """Run the program in memory at ``prog_addr``; check it against the interpreter run
        on the memory as it was at the start.  Returns (model result, counters)."""
        MEM_SIZE = self.mem_size
        image = bytearray(self.ram.read(0, MEM_SIZE))
        ref = self.model.run(image, prog_addr, buffers=self.buffers)
        self.buffers = ref.buffers
        limit = limit or 20 * ref.cycles + 4000
        await self.start(prog_addr)
        status = await self.wait_done(limit)
        error = (status >> STATUS_ERROR_SHIFT) & 0xFF
        got = {k: await self.read(a) for k, a in COUNTERS.items()}
        want = {"cycles": ref.cycles, "instrs": ref.instrs,
                **{f"busy_{e}": v for e, v in ref.busy.items()},
                **{f"stall_{e}": v for e, v in ref.stalls.items()}}
        assert error == ref.error, (f"error {error}, the interpreter's {ref.error} "
                                    f"({ref.message}); the core's last fetch at "
                                    f"{await self.read(Reg.FAULT_PC):#x}")
        if expect_error is not None:
            assert error == expect_error, f"error {error}, expected {expect_error}"
        mem = self.ram.read(0, MEM_SIZE)
        model_mem = bytes(ref.dram[:MEM_SIZE])
        if mem != model_mem:
            bad = [i for i in range(MEM_SIZE) if mem[i] != model_mem[i]]
            raise AssertionError(f"{len(bad)} memory bytes differ from the interpreter's, "
                                 f"first at {bad[0]:#x}: {mem[bad[0]]:#04x} vs "
                                 f"{model_mem[bad[0]]:#04x}; "
                                 + ", ".join(f"{i:#x}: {mem[i]:#04x}/{model_mem[i]:#04x}"
                                             for i in bad[:12]))
        assert got["instrs"] == want["instrs"], (got, want)
        if self.pauses:
            assert got["cycles"] >= want["cycles"], (f"{got['cycles']} cycles with memory "
                                                     f"pauses, fewer than the model's "
                                                     f"{want['cycles']}")
        else:
            assert got == want, ("counters differ from the interpreter's:\n"
                                 + "\n".join(f"  {k}: {got[k]} vs {want[k]}" for k in got
                                             if got[k] != want[k]))
        sems = [await self.read(Reg.SEM0 + 4 * s) for s in range(SEMAPHORES)]
        assert sems == ref.sems, f"semaphores {sems}, the interpreter's {ref.sems}"
        return ref, got

    def put(self, addr, data):
        self.ram.write(addr, bytes(data))

    def put_program(self, instrs, addr=PROG):
        self.put(addr, encode_program(instrs) if isinstance(instrs, list) else instrs)

    def random_data(self, rng, addr=SRC, n=0x10000):
        self.put(addr, bytes(rng.randrange(256) for _ in range(n)))

    def record(self, **extra):
        path = os.environ.get("KLLM_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"cycles": self.cycles,
                                    "wall_s": time.perf_counter() - self.started,
                                    **extra}) + "\n")


def roundtrips(cfg, rng, n, pack=False, rows_max=4, rb_max=70):
    """``n`` LOAD -> ABUF / STORE pairs (token k % 8 from the load to its store), each in
    its own ABUF region: random rows, strides and byte offsets, some rows congruent."""
    B = cfg.bus_bytes
    region = cfg.abuf_bytes // n & ~(B - 1)
    prog = []
    for i in range(n):
        rows = rng.randint(1, rows_max)
        rb = rng.randint(1, rb_max // (2 if pack else 1))
        span = 2 * -(-8 * rb // cfg.bw) if pack else rb
        sstride = rng.randint(span, max(span, (region - span) // rows))
        sstride += sstride & 1 if pack else 0
        while (rows - 1) * sstride + span > region:
            sstride -= 2
        base = i * region
        sram = base + rng.randrange(0, max(1, region - (rows - 1) * sstride - span))
        sram -= sram & 1 if pack else 0
        src = SRC + rng.randrange(0, 0x8000)
        if rng.random() < 0.5:                 # congruent rows (the one-beat-a-cycle path)
            src += (sram - src) % B
        dstride = rng.choice([rb, rb + rng.randint(0, 40), 64 * rng.randint(1, 4)])
        sdst = DST + i * 0x2000 + rng.randrange(0, 200)
        if rng.random() < 0.5 and not pack:
            sdst += (sram - sdst) % B
        ddst = rng.choice([rb + rng.randint(0, 30), 128])
        tok = 1 << (i % SEMAPHORES)
        prog.append(Instr(Op.LOAD, signal=tok, sub=Space.ABUF | LoadMode.LINEAR << 2, args=dict(
            dram_addr=src, dram_stride=dstride, sram_addr=sram, sram_stride=sstride, rows=rows,
            row_bytes=span)))
        prog.append(Instr(Op.STORE, wait=tok, sub=StoreMode.PACK if pack else StoreMode.INT16,
                          args=dict(dram_addr=sdst, dram_stride=ddst, sram_addr=sram,
                                    sram_stride=sstride, rows=rows, row_bytes=rb)))
    return prog + [Instr(Op.END)]


async def _roundtrip(dut, pack, pauses, seed):
    tb = CoreTB(dut, pauses=pauses, seed=seed)
    await tb.reset()
    rng = random.Random(seed)
    tb.random_data(rng)
    tb.put_program(roundtrips(tb.cfg, rng, 5, pack=pack))
    ref, got = await tb.run()
    assert ref.error == Error.NONE, ref.message
    assert len(ref.trace) == 10
    tb.record()


@cocotb.test()
async def registers(dut):
    """ID, VERSION and CONFIG read back; PROG_ADDR keeps bits 31:5."""
    tb = CoreTB(dut)
    await tb.reset()
    assert await tb.read(Reg.ID) == CORE_ID
    assert await tb.read(Reg.VERSION) == CORE_VERSION
    c = await tb.read(Reg.CONFIG)
    assert c == tb.cfg.bus_bytes | QUEUE_DEPTH << 8 | SEMAPHORES << 16 | tb.cfg.slots << 24
    await tb.axil.write_dword(Reg.PROG_ADDR, 0x12345678)
    assert await tb.read(Reg.PROG_ADDR) == 0x12345660
    assert await tb.read(Reg.STATUS) == 0
    assert await tb.read(0x7C) == 0
    tb.record()


@cocotb.test()
async def roundtrip_int16(dut):
    """LOAD -> ABUF -> STORE INT16, 2D strides, congruent and not, tokens load -> store."""
    await _roundtrip(dut, pack=False, pauses=False, seed=1)


@cocotb.test()
async def roundtrip_pack(dut):
    """The same through STORE PACK (each element's low bw bits)."""
    await _roundtrip(dut, pack=True, pauses=False, seed=2)


@cocotb.test()
async def roundtrip_pauses(dut):
    """Random pauses on every channel of the memory: same bytes, no fewer cycles."""
    await _roundtrip(dut, pack=False, pauses=True, seed=3)


@cocotb.test()
async def roundtrip_pack_pauses(dut):
    await _roundtrip(dut, pack=True, pauses=True, seed=4)


@cocotb.test()
async def long_rows_and_boundaries(dut):
    """Rows across 4 KiB boundaries and longer than 256 beats, one of them in one burst
    limit; queues filled past their depth (fetch stalls)."""
    tb = CoreTB(dut)
    await tb.reset()
    rng = random.Random(5)
    tb.random_data(rng, SRC, 0x4000)
    B = tb.cfg.bus_bytes
    n = min(tb.cfg.abuf_bytes - 64, 256 * B + 3 * B + 5)
    s0 = 3 + (0xFF3 - 3) % B                  # congruent with the source
    prog = [Instr(Op.LOAD, signal=1, sub=Space.ABUF, args=dict(
                dram_addr=SRC + 0xFF3, dram_stride=0, sram_addr=s0,
                sram_stride=0, rows=1, row_bytes=n)),
            Instr(Op.STORE, wait=1, signal=2, args=dict(
                dram_addr=DST + 0x1FE0 + s0 % B, dram_stride=0,
                sram_addr=s0, sram_stride=0, rows=1, row_bytes=n)),
            Instr(Op.STORE, wait=2, args=dict(dram_addr=DST + 0x5FFD, dram_stride=0,
                                              sram_addr=s0 + 5, sram_stride=0, rows=1,
                                              row_bytes=n - 8))]
    # many empty transfers: more instructions than a queue holds
    for k in range(3 * QUEUE_DEPTH):
        prog.append(Instr(Op.STORE, args=dict(rows=0, row_bytes=5)))
    tb.put_program(prog + [Instr(Op.END)])
    ref, got = await tb.run()
    assert ref.error == Error.NONE, ref.message
    assert got["stall_fetch"] > 0
    tb.record()


@cocotb.test()
async def lanes_and_tables(dut):
    """LANES loads into WBUF slots and LINEAR loads into WBUF and TBUF (contents: the
    interpreter's tests), then a STORE that waits for them."""
    tb = CoreTB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(6)
    tb.random_data(rng, SRC, 0x2000)
    eb, L = cfg.slot.entry_bytes, cfg.outputs
    prog = [Instr(Op.LOAD, sub=Space.ABUF, args=dict(dram_addr=SRC + 0x1800, rows=1,
                                                      row_bytes=8)),
            Instr(Op.LOAD, signal=1, sub=Space.WBUF | LoadMode.LANES << 2, args=dict(
                dram_addr=SRC + 5, dram_stride=cfg.depth * eb + 3, sram_addr=cfg.slot.stride,
                rows=L, row_bytes=cfg.depth * eb)),
            Instr(Op.LOAD, signal=1, sub=Space.WBUF | LoadMode.LANES << 2, args=dict(
                dram_addr=SRC + 0x800, dram_stride=7, sram_addr=0, rows=2, row_bytes=3 * eb)),
            Instr(Op.LOAD, signal=1, sub=Space.TBUF, args=dict(
                dram_addr=SRC + 0x1001, dram_stride=100, sram_addr=64, sram_stride=96,
                rows=3, row_bytes=90)),
            Instr(Op.LOAD, signal=1, sub=Space.WBUF, args=dict(
                dram_addr=SRC + 0x1402, dram_stride=0, sram_addr=cfg.slot.codebook + 2,
                sram_stride=0, rows=1, row_bytes=L * 2 ** cfg.bw)),
            Instr(Op.STORE, wait=1, args=dict(dram_addr=DST, rows=1, row_bytes=8)),
            Instr(Op.STORE, wait=1, args=dict(dram_addr=DST, rows=1, row_bytes=8)),
            Instr(Op.STORE, wait=1, args=dict(dram_addr=DST, rows=1, row_bytes=8)),
            Instr(Op.STORE, wait=1, args=dict(dram_addr=DST, rows=1, row_bytes=8)),
            Instr(Op.END)]
    tb.put_program(prog)
    ref, got = await tb.run()
    assert ref.error == Error.NONE, ref.message
    tb.record()


@cocotb.test()
async def two_programs_then_reset_mid_program(dut):
    """Two programs one after the other without reset; then a reset in the middle of a
    third, and a full program after it."""
    tb = CoreTB(dut)
    await tb.reset()
    rng = random.Random(7)
    tb.random_data(rng)
    tb.put_program(roundtrips(tb.cfg, rng, 3))
    await tb.run()
    tb.put_program(roundtrips(tb.cfg, rng, 4, pack=True), 0x2000)
    await tb.run(0x2000)
    # a long program, interrupted
    tb.put_program(roundtrips(tb.cfg, rng, 6, rb_max=200), 0x3000)
    await tb.start(0x3000)
    await ClockCycles(dut.clk, 150)
    assert (await tb.read(Reg.STATUS)) & STATUS_BUSY
    await tb.reset()
    assert await tb.read(Reg.STATUS) == 0
    tb.put_program(roundtrips(tb.cfg, rng, 4), 0x4000)
    await tb.run(0x4000)
    tb.record()


def _raw(op, sub=0):
    return (op | sub << 24).to_bytes(4, "little") + bytes(28)


@cocotb.test()
async def faults(dut):
    """Each bad program ends with done and its error code; a good program runs after each."""
    tb = CoreTB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(8)
    tb.random_data(rng, SRC, 0x1000)
    load = lambda **kw: Instr(Op.LOAD, signal=1, args=dict(
        dict(dram_addr=SRC, dram_stride=0, sram_addr=0, sram_stride=0, rows=1,
             row_bytes=40), **kw))
    store = Instr(Op.STORE, wait=1, args=dict(dram_addr=DST, rows=1, row_bytes=40))
    cases = [
        ("unknown opcode", encode_program([load()]) + _raw(0x7F) + encode_program(
            [store, Instr(Op.END)]), Error.BAD_OPCODE),
        ("bad LOAD sub", encode_program([load(), store, Instr(Op.LOAD, sub=3, args=dict(
            rows=1, row_bytes=1)), Instr(Op.END)]), Error.BAD_OPCODE),
        ("ROWOP of no elements", encode_program([load(), Instr(Op.ROWOP), store,
                                                 Instr(Op.END)]), Error.OVERFLOW),
        ("ADD of no elements", encode_program([Instr(Op.ADD), Instr(Op.END)]),
         Error.OVERFLOW),
        ("ABUF overrun", encode_program([load(), store, load(sram_addr=cfg.abuf_bytes - 8),
                                         store, Instr(Op.END)]), Error.BAD_ADDRESS),
        ("TBUF overrun", encode_program([Instr(Op.LOAD, sub=Space.TBUF, args=dict(
            sram_addr=64, sram_stride=4 * cfg.tbuf_words, rows=2, row_bytes=1)),
            Instr(Op.END)]), Error.BAD_ADDRESS),
        ("odd PACK", encode_program([load(), Instr(Op.STORE, wait=1, sub=StoreMode.PACK,
                                                   args=dict(sram_addr=3, rows=1,
                                                             row_bytes=4)),
                                     Instr(Op.END)]), Error.BAD_ADDRESS),
        ("LANES rows", encode_program([Instr(Op.LOAD, sub=Space.WBUF | 4, args=dict(
            rows=cfg.outputs + 1, row_bytes=1)), Instr(Op.END)]), Error.OVERFLOW),
        ("deadlock", encode_program([load(), store, Instr(Op.STORE, wait=8, args=dict(
            rows=1, row_bytes=1)), Instr(Op.END)]), Error.DEADLOCK),
        ("deadlock, queue full", encode_program(
            [Instr(Op.LOAD, wait=2, args=dict(rows=1, row_bytes=1))] * (QUEUE_DEPTH + 2)
            + [Instr(Op.END)]), Error.DEADLOCK),
    ]
    for k, (name, prog, code) in enumerate(cases):
        addr = 0x1000 * (k + 1)
        tb.put(addr, prog)
        ref, got = await tb.run(addr, expect_error=code)
        dut._log.info("%s: error %d after %d cycles (%s)", name, code, got["cycles"],
                      ref.message)
        tb.put_program(roundtrips(tb.cfg, rng, 2), 0xE000)
        await tb.run(0xE000, expect_error=Error.NONE)
    tb.record()


def mixed(cfg, rng, n):
    """``n`` ABUF loads (each signals token 0) and the ``n`` stores that read their regions
    (each waits for token 0: the engines run in order, so store i follows load i), shuffled
    together with WBUF / TBUF loads, LANES loads and empty transfers."""
    B = cfg.bus_bytes
    region = cfg.abuf_bytes // n & ~(B - 1)
    loads, stores, others = [], [], []
    for i in range(n):
        pack = rng.random() < 0.4
        rows = rng.randint(1, 3)
        rb = rng.randint(1, 24 if pack else 90)
        span = 2 * -(-8 * rb // cfg.bw) if pack else rb
        sstride = span + 2 * rng.randint(0, 8)
        sram = i * region + 2 * rng.randrange(0, (region - rows * sstride) // 2)
        src = SRC + rng.randrange(0, 0xC000)
        if rng.random() < 0.5:
            src += (sram - src) % B
        dst = DST + i * 0x1000 + rng.randrange(0, 0x800)
        if rng.random() < 0.5 and not pack:
            dst += (sram - dst) % B
        loads.append(Instr(Op.LOAD, signal=1, sub=Space.ABUF, args=dict(
            dram_addr=src, dram_stride=rng.randint(0, 300), sram_addr=sram,
            sram_stride=sstride, rows=rows, row_bytes=span)))
        stores.append(Instr(Op.STORE, wait=1, sub=StoreMode.PACK if pack else StoreMode.INT16,
                            args=dict(dram_addr=dst, dram_stride=rng.randint(rb, rb + 64),
                                      sram_addr=sram, sram_stride=sstride, rows=rows,
                                      row_bytes=rb)))
    eb = cfg.slot.entry_bytes
    for k in range(n // 2):
        kind = rng.randrange(4)
        if kind == 0:
            others.append(Instr(Op.LOAD, sub=Space.WBUF | LoadMode.LANES << 2, args=dict(
                dram_addr=SRC + rng.randrange(0x8000), dram_stride=rng.randint(0, 99),
                sram_addr=cfg.slot.stride * rng.randrange(cfg.slots),
                rows=rng.randint(1, cfg.outputs), row_bytes=rng.randint(1, cfg.depth * eb))))
        elif kind == 1:
            others.append(Instr(Op.LOAD, sub=Space.TBUF, args=dict(
                dram_addr=SRC + rng.randrange(0x8000), dram_stride=rng.randint(0, 99),
                sram_addr=rng.randrange(2048), sram_stride=rng.randint(0, 200),
                rows=rng.randint(1, 4), row_bytes=rng.randint(1, 200))))
        elif kind == 2:
            others.append(Instr(Op.LOAD, sub=Space.WBUF, args=dict(
                dram_addr=SRC + rng.randrange(0x8000), sram_addr=rng.randrange(cfg.wbuf_bytes // 2),
                rows=1, row_bytes=rng.randint(1, cfg.wbuf_bytes // 2))))
        else:
            others.append(Instr(Op.STORE, args=dict(rows=rng.randint(0, 2), row_bytes=0)))
    # shuffle, keeping each list's order
    tags = ["l"] * n + ["s"] * n + ["o"] * len(others)
    rng.shuffle(tags)
    it = {"l": iter(loads), "s": iter(stores), "o": iter(others)}
    return [next(it[t]) for t in tags] + [Instr(Op.END)]


@cocotb.test()
async def mixed_programs(dut):
    """Shuffled loads into every buffer and stores: exact against the model, then the same
    kind of program with memory pauses."""
    tb = CoreTB(dut)
    await tb.reset()
    for seed, pauses in ((11, False), (12, False), (13, True)):
        tb.set_pauses(pauses, seed)
        rng = random.Random(seed)
        tb.random_data(rng)
        tb.put_program(mixed(tb.cfg, rng, 6))
        ref, got = await tb.run()
        assert ref.error == Error.NONE, ref.message
    tb.record()


# ------------------------------------------------------------------ MATMUL (stage B)

def _words(ws):
    return b"".join((w & 0xFFFFFFFF).to_bytes(4, "little") for w in ws)


def _i16(vals):
    return b"".join((v & 0xFFFF).to_bytes(2, "little") for v in vals)


def random_slot(cfg, rng, sh=None):
    """The bytes of one WBUF slot: random indices, codebooks and requantization."""
    lay = cfg.slot
    data = bytearray(rng.randrange(256) for _ in range(lay.codebook))
    data += bytes(rng.randrange(256) for _ in range(lay.requant - lay.codebook))
    # results of a few 10**7 scaled to about 2**14: most in range, some saturated
    sh = rng.randint(18, 24) if sh is None else sh
    M = [rng.randint(-2 ** 10, 2 ** 10) for _ in range(cfg.outputs)]
    B = [rng.randint(-2 ** (sh + 12), 2 ** (sh + 12)) for _ in range(cfg.outputs)]
    data += _words(affine_words(M, B, sh))
    return bytes(data)


def random_format(cfg, rng, ba=None, shift=None):
    ba = ba or rng.randint(1, cfg.ba)
    J = 1 << ba
    shift = rng.randint(0, cfg.imu.shift_max) if shift is None else shift
    thr = sorted(rng.randint(-3000, 3000) for _ in range(J - 1))
    ca = sorted(rng.randint(-128, 127) for _ in range(J))
    return _words(format_words(ba, shift, thr, ca))


def matmul_program(cfg, rng, n, outliers=True):
    """``n`` MATMULs on random tiles: the formats and activations loaded first, then per
    MATMUL its weight slot (alternating slots: the load of the next slot runs under the
    MATMUL on the other), the MATMUL, and a STORE of its results.  Tokens: 0 slot loaded,
    1 results ready, 2 slot free again.  Returns (program, {dram address: bytes})."""
    B = cfg.bus_bytes
    lay = cfg.slot
    data = {}
    prog = []
    dram = SRC
    # TBUF: one format per MATMUL, 64 words apart
    fmts = bytearray()
    fmt_at = []
    for i in range(n):
        f = random_format(cfg, rng)
        fmt_at.append(len(fmts) // 4)
        fmts += f + bytes(-len(f) % 64)
    data[dram] = bytes(fmts)
    prog.append(Instr(Op.LOAD, sub=Space.TBUF, args=dict(dram_addr=dram, rows=1,
                                                         row_bytes=len(fmts))))
    dram += 0x1000
    half = cfg.abuf_bytes // 2
    # the results' half of ABUF cleared (the stores read the gaps between results too)
    data[dram] = bytes(half)
    prog.append(Instr(Op.LOAD, sub=Space.ABUF, args=dict(dram_addr=dram, rows=1,
                                                         sram_addr=half, row_bytes=half)))
    dram += half
    mms = []
    x_at = 0
    y_at = half
    for i in range(n):
        K = rng.randint(1, cfg.k_max)
        T = rng.randint(1, 6)
        lanes = rng.randint(1, cfg.outputs)
        x_stride = 2 * K + 2 * rng.randint(0, 3)
        x_addr = x_at + 2 * rng.randint(0, 7)
        x = [[rng.randint(-2500, 2500) for _ in range(K)] for _ in range(T)]
        for row in x:      # a few large values: the outliers
            for _ in range(rng.randint(0, 3)):
                row[rng.randrange(K)] = rng.choice([-1, 1]) * rng.randint(3000, 32767)
        img = bytearray(T * x_stride)
        for t, row in enumerate(x):
            img[t * x_stride:t * x_stride + 2 * K] = _i16(row)
        data[dram] = bytes(img)
        prog.append(Instr(Op.LOAD, sub=Space.ABUF, args=dict(
            dram_addr=dram, rows=1, sram_addr=x_addr, row_bytes=len(img))))
        dram += 0x1000
        x_at = (x_addr + len(img) + B) & ~(B - 1)
        if rng.random() < 0.5:          # row-major
            y_ns, y_ts = 2, 2 * lanes + 2 * rng.randint(0, 2)
            span = (T - 1) * y_ts + 2 * lanes
        else:                           # transposed: lane n's tokens in one row
            y_ts, y_ns = 2, 2 * T + 2 * rng.randint(0, 2)
            span = (lanes - 1) * y_ns + 2 * T
        y_addr = y_at + 2 * rng.randint(0, 3)
        y_at = (y_addr + span + B) & ~(B - 1)
        k = rng.randint(0, cfg.outliers) if outliers else 0
        mms.append((dict(x_addr=x_addr, x_stride=x_stride, tokens=T, k=K, lanes=lanes,
                         outliers=k, fmt=fmt_at[i], y_addr=y_addr, y_tstride=y_ts,
                         y_nstride=y_ns), span))
    assert x_at <= half and y_at <= cfg.abuf_bytes, (x_at, y_at)
    for i, (args, span) in enumerate(mms):
        slot = i % 2
        data[dram] = random_slot(cfg, rng)
        prog.append(Instr(Op.LOAD, wait=4 if i >= 2 else 0, signal=1, sub=Space.WBUF,
                          args=dict(dram_addr=dram, rows=1, sram_addr=slot * lay.stride,
                                    row_bytes=lay.size)))
        dram += 0x1000
    out = []
    for i, (args, span) in enumerate(mms):
        out.append(Instr(Op.MATMUL, wait=1, signal=2 | 4, sub=i % 2, args=args))
        out.append(Instr(Op.STORE, wait=2, args=dict(
            dram_addr=DST + 0x1000 * i, sram_addr=args["y_addr"], rows=1, row_bytes=span)))
    # program order: the first loads, then each MATMUL after its slot's load is queued
    loads = prog[:2 + n]
    slots = prog[2 + n:]
    prog = loads + [slots[0]]
    for i in range(n):
        if i + 1 < n:
            prog.append(slots[i + 1])
        prog += out[2 * i:2 * i + 2]
    return prog + [Instr(Op.END)], data


async def _matmuls(tb, rng, n, outliers=True, pauses=False):
    prog, data = matmul_program(tb.cfg, rng, n, outliers)
    for addr, d in data.items():
        tb.put(addr, d)
    tb.put_program(prog)
    ref, got = await tb.run()
    assert ref.error == Error.NONE, ref.message
    return ref, got


async def _monitor(dut):
    names = os.environ["MM_DEBUG"].split(",")
    from cocotb.triggers import FallingEdge
    while True:
        await FallingEdge(dut.clk)
        vals = []
        for n in names:
            v = getattr(dut, n).value
            vals.append(f"{n}={v}" if not v.is_resolvable else f"{n}={int(v)}")
        if str(dut.mm_busy.value) == "1":
            dut._log.info(" ".join(vals))


@cocotb.test()
async def matmuls(dut):
    """MATMULs on random tiles (random K, tokens, lanes, formats, outliers, both output
    layouts), the load of the next slot under the MATMUL on the other, the results stored:
    every byte and the counters against the interpreter."""
    tb = CoreTB(dut)
    await tb.reset()
    if os.environ.get("MM_DEBUG"):
        cocotb.start_soon(_monitor(dut))
    for seed, outliers, pauses in ((21, False, False), (22, True, False), (23, True, False),
                                   (24, True, True)):
        tb.set_pauses(pauses, seed)
        rng = random.Random(seed)
        ref, got = await _matmuls(tb, rng, 3, outliers, pauses)
        dut._log.info("seed %d: %d cycles, compute busy %d", seed, got["cycles"],
                      got["busy_compute"])
    tb.record()


@cocotb.test()
async def matmul_faults(dut):
    """Each bad MATMUL ends the program with done and its code; a good program after each."""
    tb = CoreTB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(31)
    fmt_ok = random_format(cfg, rng, ba=1, shift=0)
    fmt_bad = _words([cfg.ba + 1])
    tb.put(SRC, fmt_ok + bytes(64 - len(fmt_ok)) + fmt_bad)
    tload = Instr(Op.LOAD, signal=1, sub=Space.TBUF, args=dict(dram_addr=SRC, rows=1,
                                                               row_bytes=68))
    good = dict(x_addr=0, x_stride=2 * cfg.elems, tokens=2, k=cfg.elems, lanes=1, fmt=0,
                y_addr=cfg.abuf_bytes // 2, y_tstride=2, y_nstride=2)
    mm = lambda sub=0, **kw: Instr(Op.MATMUL, wait=1, sub=sub, args=dict(good, **kw))
    A = cfg.abuf_bytes
    cases = [
        ("bad slot", mm(sub=cfg.slots), Error.BAD_ADDRESS),
        ("K > k_max", mm(k=cfg.k_max + 1), Error.OVERFLOW),
        ("K = 0", mm(k=0), Error.OVERFLOW),
        ("lanes > L", mm(lanes=cfg.outputs + 1), Error.OVERFLOW),
        ("outliers", mm(outliers=cfg.outliers + 1), Error.OVERFLOW),
        ("format ba too large", mm(fmt=16), Error.OVERFLOW),
        ("format header outside TBUF", mm(fmt=cfg.tbuf_words), Error.BAD_ADDRESS),
        ("format table outside TBUF", [Instr(Op.LOAD, signal=2, sub=Space.TBUF, args=dict(
            dram_addr=SRC, rows=1, sram_addr=4 * (cfg.tbuf_words - 1), row_bytes=4)),
            Instr(Op.MATMUL, wait=2, args=dict(good, fmt=cfg.tbuf_words - 1))],
         Error.BAD_ADDRESS),
        ("x outside ABUF", mm(x_addr=A - 2 * cfg.elems, x_stride=2), Error.BAD_ADDRESS),
        ("x odd", mm(x_stride=3), Error.BAD_ADDRESS),
        ("y outside ABUF", mm(y_addr=A - 2, lanes=2), Error.BAD_ADDRESS),
        ("y transposed outside ABUF", mm(y_addr=A - 64, y_nstride=64, lanes=2),
         Error.BAD_ADDRESS),
    ]
    for k, (name, bad, code) in enumerate(cases):
        addr = 0x1000 * (k + 1)
        tb.put_program([tload] + (bad if isinstance(bad, list) else [bad]) + [Instr(Op.END)],
                       addr)
        ref, got = await tb.run(addr, expect_error=code)
        dut._log.info("%s: error %d after %d cycles (%s)", name, code, got["cycles"],
                      ref.message)
    tb.put_program([tload, mm(), Instr(Op.END)], 0xE000)
    await tb.run(0xE000, expect_error=Error.NONE)
    tb.record()


# ------------------------------------------------------------------ ROWOP and ADD (stage C)

def _row_format(rng, ba, shift=0, cmax=3000, wide=False):
    J = 1 << ba
    C = sorted(rng.randint(-cmax, cmax) for _ in range(J))
    thr = [(C[j] + C[j + 1] + 1) // 2 << shift for j in range(J - 1)]
    if wide and J > 2:
        thr[0], thr[-1] = -(1 << 20), 1 << 20
    return format_words(ba, shift, thr, C), C


def beat_spans(cfg, dst, stride, rows, length):
    """True when a result beat (``elems`` elements of a row) falls across two ABUF words."""
    P, EW = cfg.elems, cfg.bus_bytes // 2
    b = -(-length // P)
    for r in range(rows):
        for k in range(b):
            e = (dst + r * stride) // 2 + k * P
            if e % EW + min(P, length - k * P) > EW:
                return True
    return False


def row_program(cfg, rng, n):
    """``n`` random ROWOPs (LUT, SOFTMAX, NORM without outliers) and ADDs on ABUF: the
    formats, tables and affines loaded into TBUF and random rows into the lower half of
    ABUF first (token 0), the operations in the compute queue (each may read what an
    earlier one wrote: sources anywhere in ABUF, results in its upper half; a result's
    rows are its source's -- in place -- or apart from every operand), a STORE of a
    result region after some of them (token 1) and of all of ABUF at the end.  Returns
    (program, {dram address: bytes})."""
    A = cfg.abuf_bytes
    half = A // 2
    words = []                  # TBUF image
    # all of ABUF loaded (upper half zeros): nothing of an earlier test's ABUF is read
    data = {SRC: _i16([rng.randint(-20000, 20000) for _ in range(half // 2)]) + bytes(half)}
    ops = []
    results = []
    for i in range(n):
        kind = rng.choice(["lut", "softmax", "norm", "add"])
        limit = cfg.max_tokens if kind == "softmax" else cfg.max_row
        ln = rng.choice([1, cfg.elems, cfg.elems + 1, limit, rng.randint(1, limit)])
        if kind == "norm":
            ln = max(ln, 2)
        R = rng.randint(0, 4) if rng.random() < 0.1 else rng.randint(1, 4)
        stride = 2 * ln + 2 * rng.randint(0, 6)       # any alignment: beats may span words
        span = max(1, R) * stride
        dst = half + 2 * rng.randrange(0, (half - span) // 2)

        def operand():          # anywhere in ABUF but not across the results' rows
            while True:
                a = 2 * rng.randrange(0, (A - span) // 2)
                if a + span <= dst or a >= dst + span:
                    return a
        src = operand()
        if rng.random() < 0.25:
            src = dst = src     # in place (as the compiler's LUT and ADD): row by row
        at = len(words)
        if kind == "add":
            M = [rng.randint(-(1 << 14), 1 << 14) for _ in range(ln)]
            Bv = [rng.randint(-(1 << 20), 1 << 20) for _ in range(ln)]
            words += affine_words(M, Bv, rng.choice([0, 1, 12, 15, -3]) & 0xFFFFFFFF)
            b = operand()
            ins = Instr(Op.ADD, args=dict(a=src, b=b, rows=R, length=ln, stride=stride,
                                          params=at, dst=dst))
        else:
            rk = {"lut": RowKind.LUT, "softmax": RowKind.SOFTMAX, "norm": RowKind.NORM}[kind]
            ba = rng.randint(1, cfg.lut_ba if kind == "lut" else cfg.row_ba)
            shift = rng.randint(0, 2) if kind == "norm" else 0
            fw, C = _row_format(rng, ba, shift, cmax=3000 >> shift, wide=rng.random() < 0.3)
            words += fw
            tab = len(words)
            J = 1 << ba
            out_shift = 0
            if kind == "lut":
                words += [rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(J)]
                out_shift = rng.choice([0, 3, 16, 17, 40])
            elif kind == "softmax":
                E = exp_table(torch.tensor(C), rng.uniform(0.0005, 0.01), torch.arange(J))
                words += E.flatten().tolist()
                out_shift = rng.choice([0, 0, 2])
            else:
                M = [rng.randint(-(1 << 15), 1 << 15) for _ in range(ln)]
                Bv = [rng.randint(-(1 << 30), 1 << 30) for _ in range(ln)]
                words += affine_words(M, Bv, rng.randint(8, 16))
            ins = Instr(Op.ROWOP, sub=rk, args=dict(
                src=src, src_stride=stride, rows=R, length=ln, fmt=at, table=tab, dst=dst,
                dst_stride=stride, out_shift=out_shift))
        assert len(words) <= cfg.tbuf_words, "row program: TBUF full"
        ops.append(ins)
        results.append((dst, span))
    data[SRC + 0x8000] = _words(words)
    prog = [Instr(Op.LOAD, sub=Space.TBUF, args=dict(
                dram_addr=SRC + 0x8000, rows=1, row_bytes=4 * len(words))),
            Instr(Op.LOAD, signal=1, sub=Space.ABUF, args=dict(
                dram_addr=SRC, rows=1, row_bytes=A))]
    for i, ins in enumerate(ops):
        ins.wait = 1 if i == 0 else 0          # the loads run in order: the second's token
        store = rng.random() < 0.4 and i + 1 < n
        ins.signal = 2 if store else 0
        prog.append(ins)
        if store:
            dst, span = results[i]
            prog.append(Instr(Op.STORE, wait=2, args=dict(
                dram_addr=DST + 0x1000 * (i + 1), sram_addr=dst, rows=1, row_bytes=span)))
    prog[-1].signal = 2
    prog.append(Instr(Op.STORE, wait=2, args=dict(dram_addr=DST, rows=1, row_bytes=A)))
    return prog + [Instr(Op.END)], data


@cocotb.test()
async def row_programs(dut):
    """Random ROWOPs (LUT, SOFTMAX, NORM) and ADDs, results stored while later ones run:
    every byte and the counters against the interpreter."""
    tb = CoreTB(dut)
    await tb.reset()
    for seed in (41, 42, 43, 44):
        rng = random.Random(seed)
        prog, data = row_program(tb.cfg, rng, 5)
        for addr, d in data.items():
            tb.put(addr, d)
        tb.put_program(prog)
        ref, got = await tb.run()
        assert ref.error == Error.NONE, ref.message
        dut._log.info("seed %d: %d cycles, compute busy %d", seed, got["cycles"],
                      got["busy_compute"])
    tb.record()


@cocotb.test()
async def row_faults(dut):
    """Each bad ROWOP / ADD ends the program with its code, those found in t + 1 and those
    the row engine finds after the format's thresholds; a good program after each."""
    tb = CoreTB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(51)
    TW, A = cfg.tbuf_words, cfg.abuf_bytes
    fw, _ = _row_format(rng, 2)
    words = fw + [0] * (16 - len(fw)) + format_words(2, 0, [5, 3, 9], [0, 1, 2, 3])
    words += [0] * (32 - len(words)) + [cfg.row_ba + 1]
    tb.put(SRC, _words(words))
    tload = Instr(Op.LOAD, signal=1, sub=Space.TBUF, args=dict(dram_addr=SRC, rows=1,
                                                               row_bytes=4 * len(words)))
    base = dict(src=0, src_stride=8, rows=2, length=4, fmt=0, table=40, dst=64, dst_stride=8)
    ro = lambda kind=RowKind.LUT, **kw: Instr(Op.ROWOP, wait=1, sub=kind,
                                              args=dict(base, **kw))
    add = dict(a=0, b=64, rows=1, length=4, stride=8, params=40, dst=128)
    ad = lambda **kw: Instr(Op.ADD, wait=1, args=dict(add, **kw))
    cases = [
        ("kind", ro(kind=3), Error.BAD_OPCODE),
        ("length", ro(length=cfg.max_row + 1), Error.OVERFLOW),
        ("softmax length", ro(RowKind.SOFTMAX, length=cfg.max_tokens + 1), Error.OVERFLOW),
        ("header outside TBUF", ro(fmt=TW), Error.BAD_ADDRESS),
        ("format ba", ro(RowKind.NORM, fmt=32), Error.OVERFLOW),
        ("format outside TBUF", [Instr(Op.LOAD, signal=2, sub=Space.TBUF, args=dict(
            dram_addr=SRC, rows=1, sram_addr=4 * (TW - 2), row_bytes=4)),
            Instr(Op.ROWOP, wait=2, args=dict(base, fmt=TW - 2))], Error.BAD_ADDRESS),
        ("unsorted", ro(fmt=16, dst=A), Error.BAD_OPCODE),
        ("unsorted norm", ro(RowKind.NORM, fmt=16), Error.BAD_OPCODE),
        ("outliers on LUT", ro(outliers=1), Error.BAD_OPCODE),
        ("too many outliers", ro(RowKind.NORM, outliers=cfg.outliers + 1), Error.OVERFLOW),
        ("src odd", ro(src=1), Error.BAD_ADDRESS),
        ("src outside ABUF", ro(RowKind.SOFTMAX, src=A - 8), Error.BAD_ADDRESS),
        ("table outside TBUF", ro(RowKind.SOFTMAX, table=TW - 3), Error.BAD_ADDRESS),
        ("dst outside ABUF", ro(dst_stride=A), Error.BAD_ADDRESS),
        ("ADD length", ad(length=cfg.max_row + 1), Error.OVERFLOW),
        ("ADD b", ad(b=A), Error.BAD_ADDRESS),
        ("ADD params", ad(params=TW - 4), Error.BAD_ADDRESS),
        ("ADD dst odd", ad(dst=3), Error.BAD_ADDRESS),
    ]
    for k, (name, bad, code) in enumerate(cases):
        addr = 0x1000 * (k + 1)
        tb.put_program([tload] + (bad if isinstance(bad, list) else [bad]) + [Instr(Op.END)],
                       addr)
        ref, got = await tb.run(addr, expect_error=code)
        dut._log.info("%s: error %d after %d cycles (%s)", name, code, got["cycles"],
                      ref.message)
    rng = random.Random(52)
    prog, data = row_program(cfg, rng, 3)
    for a, d in data.items():
        tb.put(a, d)
    tb.put_program(prog, 0xE000)
    await tb.run(0xE000, expect_error=Error.NONE)
    tb.record()


@cocotb.test()
async def row_beat_across_words(dut):
    """A result beat across two ABUF words (:func:`beat_spans`) at a row's end: the row
    engine's writer once sent that second word one bit up (a 33-bit ``wa + 1`` in its
    ``Cat``); pinned here."""
    tb = CoreTB(dut)
    await tb.reset()
    cfg = tb.cfg
    rng = random.Random(61)
    P, EW = cfg.elems, cfg.bus_bytes // 2
    n = EW * 2 if EW > P else P + 1
    dst = cfg.abuf_bytes // 2 + 2 * (EW - 1)
    while not beat_spans(cfg, dst, 2 * n, 1, n):
        n += 1
    M = [rng.randint(-(1 << 14), 1 << 14) for _ in range(n)]
    Bv = [rng.randint(-(1 << 20), 1 << 20) for _ in range(n)]
    tb.put(SRC, _i16([rng.randint(-20000, 20000) for _ in range(2 * n)]))
    tb.put(SRC + 0x1000, _words(affine_words(M, Bv, 12)))
    prog = [Instr(Op.LOAD, sub=Space.TBUF, args=dict(dram_addr=SRC + 0x1000, rows=1,
                                                     row_bytes=4 * (1 + 3 * n))),
            Instr(Op.LOAD, signal=1, args=dict(dram_addr=SRC, rows=1, row_bytes=4 * n)),
            Instr(Op.ADD, wait=1, signal=2, args=dict(a=0, b=2 * n, rows=1, length=n,
                                                      stride=2 * n, params=0, dst=dst)),
            Instr(Op.STORE, wait=2, args=dict(dram_addr=DST, sram_addr=dst, rows=1,
                                              row_bytes=2 * n)),
            Instr(Op.END)]
    tb.put_program(prog)
    await tb.run()
