"""golden.interp: the core's oracle and cycle model, against hand-computed memory images,
cycle counts and error codes."""

import pytest

from base.config import CoreConfig
from base.isa import (SEM_MAX, Error, Instr, LoadMode, Op, Space, StoreMode, encode_program)
from golden.interp import Interpreter

CFG = CoreConfig(outputs=4, elems=2, bw=4, k_max=32, max_row=64, max_tokens=16, abuf_kb=4,
                 tbuf_kb=4, bus_bytes=8)


def run(prog, data=(), cfg=CFG, size=0x3000, **kw):
    dram = bytearray(size)
    code = encode_program(prog) if isinstance(prog, list) else prog
    dram[:len(code)] = code
    for addr, b in data:
        dram[addr:addr + len(b)] = b
    return dram, Interpreter(cfg, **kw).run(dram, 0)


def load(**kw):
    args = dict(dram_addr=0, dram_stride=0, sram_addr=0, sram_stride=0, rows=1, row_bytes=1)
    sig = kw.pop("signal", 0)
    sub = kw.pop("sub", Space.ABUF)
    args.update(kw)
    return Instr(Op.LOAD, signal=sig, sub=sub, args=args)


def store(**kw):
    args = dict(dram_addr=0, dram_stride=0, sram_addr=0, sram_stride=0, rows=1, row_bytes=1)
    wait = kw.pop("wait", 0)
    sub = kw.pop("sub", StoreMode.INT16)
    args.update(kw)
    return Instr(Op.STORE, wait=wait, sub=sub, args=args)


def test_end_only_cycles():
    """Fetch granted in cycle 0, AR in 1, the memory's first beat in 1 + 2 = 3; 8-byte bus:
    beats 3..6, END dispatched in 7, done in 8: 9 cycles.  A 32-byte bus: one beat (3),
    dispatched in 4, done in 5: 6 cycles."""
    _, r = run([Instr(Op.END)])
    assert (r.error, r.cycles, r.instrs, r.busy["fetch"]) == (Error.NONE, 9, 1, 8)
    _, r = run([Instr(Op.END)], cfg=CoreConfig(**{**CFG.to_dict(), "bus_bytes": 32}))
    assert (r.error, r.cycles) == (Error.NONE, 6)
    _, r = run([Instr(Op.END)], read_latency=5)
    assert r.cycles == 12


def test_one_load_cycles():
    """LOAD of one congruent beat, then END (8-byte bus, hand-timed):
    fetch 0 -> dispatched 7; the load starts in 8 (checks 9, 10, asks for the bus in 11)
    while the END's fetch holds the bus (granted 8, beats 11..14); the load is granted in
    15, its beat arrives in 18, its last cycle is 19; done in 20."""
    _, r = run([load(dram_addr=0x1000, row_bytes=8), Instr(Op.END)])
    assert r.error == Error.NONE
    assert r.trace == [(0, "load", 8, 19)]
    assert r.cycles == 21
    assert r.busy == {"fetch": 16, "load": 12, "compute": 0, "store": 0}


def test_roundtrip_image_by_hand():
    """Two rows of 3 bytes in, out again to other strides; PACK of the same at bw = 4."""
    src = bytes([0x11, 0x22, 0x33, 0xAA, 0xBB, 0xCC])
    prog = [load(dram_addr=0x1001, dram_stride=0x10, sram_addr=5, sram_stride=7, rows=2,
                 row_bytes=3, signal=1),
            store(dram_addr=0x2003, dram_stride=4, sram_addr=5, sram_stride=7, rows=2,
                  row_bytes=3, wait=1),
            # elements at ABUF 6: 0x3322 (low nibble 2), then ABUF 8..: 0x??00 ... PACK reads
            # 2 bytes per element: row 0 at 6: [0x22,0x33] -> 2, [0x00,0x00] -> 0
            store(dram_addr=0x2100, sram_addr=6, sram_stride=6, rows=2, row_bytes=1,
                  sub=StoreMode.PACK),
            Instr(Op.END)]
    dram, r = run(prog, [(0x1001, src[:3]), (0x1011, src[3:])])
    assert r.error == Error.NONE, r.message
    assert r.abuf[5:8] == src[:3] and r.abuf[12:15] == src[3:]
    assert r.dram[0x2003:0x200A] == bytes([0x11, 0x22, 0x33, 0, 0xAA, 0xBB, 0xCC])
    # row 0: elements at 6, 8: 0x3322, 0x0000 -> 0x02; row 1 at 12, 14: 0xBBAA, 0x00CC -> 0xCA
    assert r.dram[0x2100] == 0xCA            # the second row overwrote the first
    prog[2].args["dram_stride"] = 1
    dram, r = run(prog, [(0x1001, src[:3]), (0x1011, src[3:])])
    assert r.dram[0x2100:0x2102] == bytes([0x02, 0xCA])
    assert r.dram[0x1000:0x1020] == dram[0x1000:0x1020]      # the source is unchanged


def test_pack_bw3():
    """bw = 3: eight elements in three bytes, little endian, lowest element lowest."""
    cfg = CoreConfig(**{**CFG.to_dict(), "bw": 3})
    els = [1, 2, 3, 4, 5, 6, 7, 0x7FF8]                  # the last one's low bits: 0
    raw = b"".join(e.to_bytes(2, "little") for e in els)
    prog = [load(dram_addr=0x1000, sram_addr=16, row_bytes=16, signal=1),
            store(dram_addr=0x2000, sram_addr=16, row_bytes=3, sub=StoreMode.PACK, wait=1),
            store(dram_addr=0x2010, sram_addr=16, row_bytes=1, sub=StoreMode.PACK),
            Instr(Op.END)]
    _, r = run(prog, [(0x1000, raw)], cfg=cfg)
    want = sum((e & 7) << (3 * k) for k, e in enumerate(els))
    assert r.dram[0x2000:0x2003] == want.to_bytes(3, "little")
    assert r.dram[0x2010] == want & 0xFF


def test_lanes_layout():
    """LANES: byte j of row r at slot + ((j // E) * L + r) * E + j % E (E = 2, L = 4)."""
    L, E = CFG.outputs, CFG.slot.entry_bytes
    assert E == 1 and L == 4                   # P = 2 indices of 4 bits: one byte
    cfg = CoreConfig(**{**CFG.to_dict(), "elems": 4, "bus_bytes": 16})
    L, E = cfg.outputs, cfg.slot.entry_bytes
    assert E == 2
    rows = [bytes(range(16 * r, 16 * r + 6)) for r in range(3)]
    slot = cfg.slot.stride
    prog = [load(dram_addr=0x1000, dram_stride=0x40, sram_addr=slot, rows=3, row_bytes=6,
                 sub=Space.WBUF | LoadMode.LANES << 2), Instr(Op.END)]
    _, r = run(prog, [(0x1000 + 0x40 * k, rows[k]) for k in range(3)], cfg=cfg)
    assert r.error == Error.NONE, r.message
    for k in range(3):
        for j in range(6):
            assert r.wbuf[slot + ((j // E) * L + k) * E + j % E] == rows[k][j]
    assert r.wbuf[slot + 3 * E] == 0           # lane 3 untouched
    assert sum(r.wbuf) == sum(sum(x) for x in rows)


def test_tbuf_and_dict_memory():
    prog = [load(dram_addr=0x1000, sram_addr=4 * 3, row_bytes=8, sub=Space.TBUF),
            Instr(Op.END)]
    mem = {0: encode_program(prog), 0x1000: bytes(range(8))}
    r = Interpreter(CFG).run(mem, 0)
    assert r.error == Error.NONE
    assert r.tbuf[12:20] == bytes(range(8))
    assert isinstance(r.dram, dict) and r.dram[0x1000][:8] == bytes(range(8))


def test_tokens_order_the_engines():
    prog = [load(dram_addr=0x1000, row_bytes=200, signal=4),
            store(dram_addr=0x2000, row_bytes=200, wait=4),
            Instr(Op.END)]
    _, r = run(prog, [(0x1000, bytes(range(200)))])
    (i0, e0, s0, t0), (i1, e1, s1, t1) = r.trace
    assert (i0, e0, i1, e1) == (0, "load", 1, "store")
    assert s1 == t0 + 1                        # the token is seen the cycle after it is given
    assert r.dram[0x2000:0x20C8] == bytes(range(200))
    assert r.stalls["store"] > 0
    # without the token the store starts as soon as it is fetched, while the load runs
    prog[1].wait = 0
    _, r2 = run(prog, [(0x1000, bytes(range(200)))])
    (_, _, s0, t0), (_, _, s1, _) = r2.trace
    assert s0 < s1 < t0 and r2.stalls["store"] == 0


@pytest.mark.parametrize("prog, code", [
    (encode_program([load()]) + (0x7F).to_bytes(4, "little") + bytes(28), Error.BAD_OPCODE),
    ([Instr(Op.LOAD, sub=3, args=dict(rows=1, row_bytes=1)), Instr(Op.END)], Error.BAD_OPCODE),
    ([Instr(Op.LOAD, sub=Space.ABUF | LoadMode.LANES << 2, args=dict(rows=1, row_bytes=1)),
      Instr(Op.END)], Error.BAD_OPCODE),
    ([Instr(Op.STORE, sub=2, args=dict(rows=1, row_bytes=1)), Instr(Op.END)], Error.BAD_OPCODE),
    ([Instr(Op.MATMUL), Instr(Op.END)], Error.OVERFLOW),            # K = 0
    ([load(sram_addr=4095, row_bytes=2), Instr(Op.END)], Error.BAD_ADDRESS),
    ([load(sram_addr=0, sram_stride=1000, rows=5, row_bytes=97), Instr(Op.END)],
     Error.BAD_ADDRESS),
    ([store(sram_addr=4095, row_bytes=2), Instr(Op.END)], Error.BAD_ADDRESS),
    ([store(sram_addr=4000, row_bytes=25, sub=StoreMode.PACK), Instr(Op.END)],
     Error.BAD_ADDRESS),                                           # 2 * 50 element bytes
    ([store(sram_addr=1, row_bytes=2, sub=StoreMode.PACK), Instr(Op.END)], Error.BAD_ADDRESS),
    ([load(sub=Space.WBUF | LoadMode.LANES << 2, sram_addr=8, row_bytes=1), Instr(Op.END)],
     Error.BAD_ADDRESS),
    ([load(sub=Space.WBUF | LoadMode.LANES << 2, rows=5), Instr(Op.END)], Error.OVERFLOW),
    ([load(sub=Space.WBUF | LoadMode.LANES << 2, row_bytes=17), Instr(Op.END)],
     Error.OVERFLOW),
    ([store(wait=2), Instr(Op.END)], Error.DEADLOCK),
    ([load(signal=1, row_bytes=0)] * (SEM_MAX + 1) + [Instr(Op.END)], Error.SEMAPHORE),
])
def test_faults(prog, code):
    _, r = run(prog)
    assert r.error == code, r.message
    assert r.message


def test_empty_transfers_do_not_fault():
    _, r = run([load(sram_addr=1 << 30, rows=0), store(sram_addr=1 << 30, row_bytes=0),
                Instr(Op.END)])
    assert r.error == Error.NONE
    assert [t[2:] for t in r.trace] == [(8, 11), (16, 19)]      # start .. start + 3


def test_a_fault_is_sticky():
    """After a fault nothing more starts: the STORE behind the bad LOAD never writes."""
    prog = [load(sram_addr=5000), store(dram_addr=0x2000, row_bytes=1), Instr(Op.END)]
    _, r = run(prog, [])
    dram, r2 = run([store(dram_addr=0x2000, row_bytes=1)], [])
    assert r.error == Error.BAD_ADDRESS and [t[1] for t in r.trace] == ["load"]
    # the bad load is faulted in its check cycle, start + 2; done when all are idle
    (_, _, s, e), = r.trace
    assert e == s + 2


def test_deadlock_with_a_full_queue_and_done_timing():
    """Queue depth + 1 loads waiting for a token: the fetch unit blocks on the full queue,
    every engine waits: DEADLOCK, done one cycle later."""
    from base.isa import QUEUE_DEPTH
    prog = [load(signal=0, row_bytes=1)]
    prog[0].wait = 1
    _, r = run(prog * (QUEUE_DEPTH + 2) + [Instr(Op.END)])
    assert r.error == Error.DEADLOCK
    assert r.stalls["fetch"] == 1 and r.trace == []
    assert r.instrs == QUEUE_DEPTH + 1


def test_bad_program_address():
    with pytest.raises(ValueError, match="multiple of 32"):
        Interpreter(CFG).run(bytearray(64), 4)


def test_buffers_carry_over():
    prog1 = [load(dram_addr=0x1000, row_bytes=4), Instr(Op.END)]
    _, r1 = run(prog1, [(0x1000, b"abcd")])
    prog2 = [store(dram_addr=0x2000, row_bytes=4), Instr(Op.END)]
    dram = bytearray(0x3000)
    dram[:64] = encode_program(prog2)
    r2 = Interpreter(CFG).run(dram, 0, buffers=r1.buffers)
    assert r2.dram[0x2000:0x2004] == b"abcd"
    r3 = Interpreter(CFG).run(dram, 0)
    assert r3.dram[0x2000:0x2004] == bytes(4)
