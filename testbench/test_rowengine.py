"""Bench of the core's row engine (hdl/rowengine.py): Python models of ABUF and TBUF answer
its ports; every instruction's ABUF afterwards equals golden.core_ops.execute on the same
buffers, its cycles from start to done equal rowop_cycles / add_cycles, and faults end
with the golden model's code and nothing written."""

import json
import os
import random

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

from base.isa import CoreFault, Error, Instr, Op, RowKind, affine_words, encode, format_words
from base.rowsched import row_engine_units
from golden.core_ops import execute
from golden.softmax import exp_table
from testbench.common import build_component, load_description

STATS = os.environ.get("KLLM_STATS")


def _stat(**kw):
    if STATS:
        with open(STATS, "a") as f:
            f.write(json.dumps(dict(kw, cycles=0, wall_s=0.0)) + "\n")


class RowTB:
    def __init__(self, dut):
        self.dut = dut
        desc = load_description()
        self.eng = build_component(desc)
        self.cfg = self.eng.config
        self.B = self.cfg.bus_bytes
        self.abuf = bytearray(self.cfg.abuf_bytes)
        self.tbuf = bytearray(4 * self.cfg.tbuf_words)
        self.cycle = 0

    async def start(self):
        d = self.dut
        cocotb.start_soon(Clock(d.clk, 10, unit="ns").start())
        d.rst.value = 1
        d.start.value = 0
        d.instr.value = 0
        d.abuf_rdata.value = 0
        d.tbuf_rdata.value = 0
        for _ in range(3):
            await RisingEdge(d.clk)
        d.rst.value = 0
        cocotb.start_soon(self._memories())

    async def _memories(self):
        d, B = self.dut, self.B
        while True:
            await FallingEdge(d.clk)
            self.cycle += 1
            ra = rt = None
            if int(d.abuf_ren.value):
                a = int(d.abuf_raddr.value)
                ra = int.from_bytes(self.abuf[a * B:(a + 1) * B], "little") if a * B < len(self.abuf) else 0
            if int(d.tbuf_ren.value):
                a = int(d.tbuf_raddr.value)
                rt = int.from_bytes(self.tbuf[a * B:(a + 1) * B], "little") if a * B < len(self.tbuf) else 0
            if not d.abuf_wen.value.is_resolvable:
                names = ["wq_cnt", "s5v", "s5c", "s5l", "s5f", "open_v", "state"]
                raise AssertionError("X on abuf_wen: " + ", ".join(
                    f"{k}={getattr(d, k).value}" for k in names if hasattr(d, k)))
            if os.environ.get("RE_TRACE") and d.state.value.is_resolvable and int(d.state.value) >= 7:
                d._log.info(" ".join(f"{k}={getattr(d, k).value}" for k in (
                    "s5v", "s5f", "s5l", "s5c", "w_row", "w_ea", "wq_push_n", "abuf_wen", "abuf_waddr")))
            wen = int(d.abuf_wen.value)
            if wen:
                a = int(d.abuf_waddr.value)
                data = int(d.abuf_wdata.value).to_bytes(B, "little")
                assert (a + 1) * B <= len(self.abuf), f"write outside ABUF at word {a}"
                for k in range(B):
                    if wen >> k & 1:
                        self.abuf[a * B + k] = data[k]
            await RisingEdge(d.clk)
            if ra is not None:
                d.abuf_rdata.value = ra
            if rt is not None:
                d.tbuf_rdata.value = rt

    async def run(self, instr, label=""):
        """Run one instruction on the RTL and on the golden model; compare."""
        d = self.dut
        gold_abuf = bytearray(self.abuf)
        try:
            gold_cycles = execute(self.cfg, instr, gold_abuf, bytearray(), bytearray(self.tbuf))
            gold_err = Error.NONE
        except CoreFault as f:
            gold_cycles, gold_err = None, f.code
            gold_abuf = bytearray(self.abuf)
        d._log.info(f"{label}: {instr.text()}")
        await FallingEdge(d.clk)
        d.instr.value = int.from_bytes(encode(instr), "little")
        d.start.value = 1
        t0 = self.cycle
        await FallingEdge(d.clk)
        d.start.value = 0
        limit = 200000
        while not int(d.done.value):
            await FallingEdge(d.clk)
            limit -= 1
            assert limit, f"{label}: no done"
        cycles = self.cycle - t0
        err = int(d.error.value)
        assert not int(d.check.value), f"{label}: internal schedule check failed " + ", ".join(
            f"{k}={getattr(d, k).value}" for k in ("chk_tbuf", "chk_read", "chk_unit", "chk_queue"))
        await FallingEdge(d.clk)           # the last write (if any) has landed
        assert err == gold_err, f"{label}: error {err}, golden {gold_err}"
        if self.abuf != gold_abuf:
            a = torch.frombuffer(bytearray(self.abuf), dtype=torch.int16)
            g = torch.frombuffer(bytearray(gold_abuf), dtype=torch.int16)
            bad = (a != g).nonzero().flatten()[:8].tolist()
            raise AssertionError(f"{label}: ABUF differs at elements {bad}: "
                                 f"{[int(a[i]) for i in bad]} vs golden {[int(g[i]) for i in bad]}")
        if gold_err == Error.NONE:
            assert cycles == gold_cycles, f"{label}: {cycles} cycles, formula {gold_cycles}"
        return cycles

    # ---------------------------------------------------------------- buffers
    def put_words(self, addr, words):
        for k, w in enumerate(words):
            self.tbuf[4 * (addr + k):4 * (addr + k + 1)] = (w & 0xFFFFFFFF).to_bytes(4, "little")

    def put_rows(self, addr, stride, rows):
        for r, row in enumerate(rows):
            for c, v in enumerate(row):
                o = addr + r * stride + 2 * c
                self.abuf[o:o + 2] = (v & 0xFFFF).to_bytes(2, "little")


def rand_format(rng, ba, shift=0, cmax=3000, wide=False):
    J = 1 << ba
    C = sorted(rng.randint(-cmax, cmax) for _ in range(J))
    thr = [(C[j] + C[j + 1] + 1) // 2 << shift for j in range(J - 1)]
    if wide and J > 2:
        thr[0] = -(1 << 20)
        thr[-1] = 1 << 20
    return format_words(ba, shift, thr, C), C


def row_values(rng, R, n, lo=-20000, hi=20000):
    return [[rng.randint(lo, hi) for _ in range(n)] for _ in range(R)]


def layout(rng, tb, R, n, extra=8):
    """Random source / destination regions (2-byte aligned, strides >= the row)."""
    stride = 2 * n + 2 * rng.randint(0, extra)
    size = max(1, R) * stride + 64
    src = 2 * rng.randint(0, 40)
    dst = src + size + 2 * rng.randint(0, 40)
    assert dst + size < len(tb.abuf), "bench layout outside ABUF"
    return src, dst, stride


async def _rowop(tb, rng, kind, R, n, ba, label, outliers=0, dst_stride=None):
    c = tb.cfg
    src, dst, stride = layout(rng, tb, R, n)
    tb.put_rows(src, stride, row_values(rng, R, n))
    fmt_at = rng.randint(0, 20)
    shift = rng.randint(0, 2) if kind == RowKind.NORM else 0
    fw, C = rand_format(rng, ba, shift, cmax=3000 >> shift, wide=rng.random() < 0.3)
    tb.put_words(fmt_at, fw)
    tab_at = fmt_at + len(fw) + rng.randint(0, 5)
    J = 1 << ba
    out_shift = 0
    if kind == RowKind.LUT:
        tb.put_words(tab_at, [rng.randint(-(1 << 31), (1 << 31) - 1) for _ in range(J)])
        out_shift = rng.choice([0, 3, 16, 17, 40])
    elif kind == RowKind.SOFTMAX:
        Cs = torch.tensor(C)
        E = exp_table(Cs, rng.uniform(0.0005, 0.01), torch.arange(J))
        tb.put_words(tab_at, E.flatten().tolist())
        out_shift = rng.choice([0, 0, 2])
    else:
        M = [rng.randint(-(1 << 15), 1 << 15) for _ in range(n)]
        Bv = [rng.randint(-(1 << 30), 1 << 30) for _ in range(n)]
        tb.put_words(tab_at, affine_words(M, Bv, rng.randint(8, 16)))
    ds = stride if dst_stride is None else dst_stride
    instr = Instr(Op.ROWOP, sub=kind, args=dict(
        src=src, src_stride=stride, rows=R, length=n, fmt=fmt_at, table=tab_at, dst=dst,
        dst_stride=ds, out_shift=out_shift, outliers=outliers))
    return await tb.run(instr, label), instr


async def _add(tb, rng, R, n, label, sat=False):
    src, dst, stride = layout(rng, tb, R, n)
    a_at = src
    b_at = dst
    dst_at = b_at + max(1, R) * stride + 2 * rng.randint(0, 10)
    tb.put_rows(a_at, stride, row_values(rng, R, n))
    tb.put_rows(b_at, stride, row_values(rng, R, n))
    if sat:
        M = [rng.choice([1 << 20, -(1 << 20)]) for _ in range(n)]
        Bv = [rng.randint(-(1 << 40), 1 << 40) for _ in range(n)]
        sh = rng.randint(0, 4)
    else:
        M = [rng.randint(-(1 << 14), 1 << 14) for _ in range(n)]
        Bv = [rng.randint(-(1 << 20), 1 << 20) for _ in range(n)]
        sh = rng.choice([0, 1, 12, 15, -3])
    at = rng.randint(0, 30)
    tb.put_words(at, affine_words(M, Bv, sh & 0xFFFFFFFF))
    instr = Instr(Op.ADD, args=dict(a=a_at, b=b_at, rows=R, length=n, stride=stride, params=at,
                                    dst=dst_at))
    return await tb.run(instr, label)


@cocotb.test()
async def add_rows(dut):
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(1)
    c = tb.cfg
    for k in range(6):
        n = rng.choice([1, c.elems, c.elems + 1, rng.randint(1, c.max_row)])
        await _add(tb, rng, rng.randint(0, 4), n, f"add{k}", sat=(k % 2 == 1))
    await _add(tb, rng, 3, c.max_row, "add_max")


@cocotb.test()
async def lut_rows(dut):
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(2)
    c = tb.cfg
    for k in range(6):
        n = rng.choice([1, c.elems, c.elems + 1, rng.randint(1, c.max_row)])
        ba = rng.randint(1, c.lut_ba)
        await _rowop(tb, rng, RowKind.LUT, rng.randint(0, 5), n, ba, f"lut{k}")


@cocotb.test()
async def softmax_rows(dut):
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(3)
    c = tb.cfg
    n_sm, _ = row_engine_units(c)
    for k in range(5):
        n = rng.choice([1, c.elems + 1, c.max_tokens, rng.randint(1, c.max_tokens)])
        ba = rng.randint(1, c.row_ba)
        await _rowop(tb, rng, RowKind.SOFTMAX, rng.choice([1, 3, n_sm + 2]), n, ba, f"sm{k}")


@cocotb.test()
async def norm_rows(dut):
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(4)
    c = tb.cfg
    _, n_nm = row_engine_units(c)
    for k in range(4):
        n = rng.choice([2, c.elems + 1, c.max_row, rng.randint(2, c.max_row)])
        ba = rng.randint(1, c.row_ba)
        await _rowop(tb, rng, RowKind.NORM, rng.choice([1, 2, n_nm + 1]), n, ba, f"norm{k}")


@cocotb.test()
async def softmax_throughput(dut):
    """Softmax rows of 8 beats back to back: beats per cycle of the row stream."""
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(5)
    c = tb.cfg
    n = min(8 * c.elems, c.max_tokens)
    b = -(-n // c.elems)
    R = 24
    ba = c.row_ba
    cyc1, _ = await _rowop(tb, rng, RowKind.SOFTMAX, 1, n, ba, "tp1", dst_stride=2 * n)
    cycR, _ = await _rowop(tb, rng, RowKind.SOFTMAX, R, n, ba, "tpR", dst_stride=2 * n)
    rate = (R - 1) * b / (cycR - cyc1)
    _stat(softmax_beats=b, rows=R, cycles_one=cyc1, cycles_rows=cycR, beats_per_cycle=rate)
    dut._log.info(f"softmax rows of {b} beats: {rate:.3f} beats/cycle")
    assert rate >= 0.9 or b < 8


@cocotb.test()
async def faults(dut):
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(6)
    c = tb.cfg
    tw = c.tbuf_words
    fw, _ = rand_format(rng, 2)
    tb.put_words(0, fw)
    base = dict(src=0, src_stride=8, rows=2, length=4, fmt=0, table=16, dst=64, dst_stride=8)
    cases = [
        ("kind", Instr(Op.ROWOP, sub=3, args=base)),
        ("len0", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, length=0))),
        ("long", Instr(Op.ROWOP, sub=RowKind.SOFTMAX, args=dict(base, length=c.max_tokens + 1))),
        ("fmt_out", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, fmt=tw))),
        ("outliers", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, outliers=1))),
        ("outliers_max", Instr(Op.ROWOP, sub=RowKind.NORM, args=dict(base, outliers=c.outliers + 1))),
        ("src_odd", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, src=1))),
        ("src_span", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, src=c.abuf_bytes - 8))),
        ("table", Instr(Op.ROWOP, sub=RowKind.SOFTMAX, args=dict(base, table=tw - 3))),
        ("dst_span", Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, dst_stride=c.abuf_bytes))),
        ("add_len", Instr(Op.ADD, args=dict(a=0, b=64, rows=1, length=c.max_row + 1, stride=8))),
        ("add_b", Instr(Op.ADD, args=dict(a=0, b=c.abuf_bytes, rows=1, length=4, stride=8))),
        ("add_params", Instr(Op.ADD, args=dict(a=0, b=64, rows=1, length=4, stride=8,
                                               params=tw - 4))),
        ("add_dst", Instr(Op.ADD, args=dict(a=0, b=64, rows=1, length=4, stride=8, dst=3))),
    ]
    for label, instr in cases:
        await tb.run(instr, label)
    # a format of too many index bits, then one with unsorted thresholds
    tb.put_words(100, format_words(c.row_ba + 1, 0, list(range(2 ** (c.row_ba + 1) - 1)),
                                   [0] * 2 ** (c.row_ba + 1)))
    await tb.run(Instr(Op.ROWOP, sub=RowKind.NORM, args=dict(base, fmt=100)), "ba")
    tb.put_words(100, format_words(2, 0, [5, 3, 9], [0, 1, 2, 3]))
    await tb.run(Instr(Op.ROWOP, sub=RowKind.LUT, args=dict(base, fmt=100)), "unsorted")
    # and a good instruction afterwards
    await _rowop(tb, rng, RowKind.LUT, 2, 5, 2, "after")


# ---------------------------------------------------------------- regressions

SENTINEL = 0x5A5A


def _fill(tb, addr, n_elems, value=SENTINEL):
    """A destination region pre-filled so a stray or misplaced write changes ABUF."""
    tb.put_rows(addr, 2 * n_elems, [[value] * n_elems])


async def _rowop_at(tb, rng, kind, R, n, src, stride, dst, dst_stride, fw, table, label,
                    out_shift=0):
    """One ROWOP at a fixed layout: the format ``fw`` at TBUF 0, ``table`` after it; the
    destination (rows and the gaps between them) filled with :data:`SENTINEL` first."""
    tb.put_rows(src, stride, row_values(rng, R, n))
    _fill(tb, dst - 8, (R * dst_stride + 16) // 2)
    tb.put_words(0, fw)
    tab_at = len(fw)
    tb.put_words(tab_at, table)
    instr = Instr(Op.ROWOP, sub=kind, args=dict(
        src=src, src_stride=stride, rows=R, length=n, fmt=0, table=tab_at, dst=dst,
        dst_stride=dst_stride, out_shift=out_shift, outliers=0))
    cycles = await tb.run(instr, label)
    flat = torch.frombuffer(bytearray(tb.abuf), dtype=torch.int16)
    out = flat[dst // 2 + torch.arange(R)[:, None] * (dst_stride // 2) + torch.arange(n)]
    return cycles, out


@cocotb.test()
async def lut_row_ends(dut):
    """LUT rows whose last beat crosses an ABUF word boundary (the writer's second word of
    a row's last beat: lut3 of lut_rows, rows=5 length=20 dst=420 stride=46), every row-end
    alignment, and a table saturating at both ends of 16 bits."""
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(7)
    c = tb.cfg
    ba = 2
    fw, _ = rand_format(rng, ba)
    # -2**31 and 2**31-1 saturate, -40000 / 40000 just past the ends, 1234 passes
    tables = [[-(1 << 31), -40000, 1234, (1 << 31) - 1], [40000, -5, -40000, 32767]]
    _, out = await _rowop_at(tb, rng, RowKind.LUT, 5, 20, 62, 46, 420, 46, fw, tables[0],
                             "lut3_shape")
    sat = []
    k = 0
    for n in (1, c.elems, c.elems + 1, 2 * c.elems - 1, 7, c.max_row):
        for d in range(4):
            dst = 900 + 2 * d
            ds = 2 * n + 2 * rng.randint(0, 3)
            _, o = await _rowop_at(tb, rng, RowKind.LUT, 3, n, 2 * rng.randint(0, 8), 2 * n + 2,
                                   dst, ds, fw, tables[k % 2], f"lut_end{n}_{d}")
            sat.append(o.flatten())
            k += 1
    sat = torch.cat(sat + [out.flatten()])
    assert {-(1 << 15), (1 << 15) - 1} <= set(sat.tolist()), "the LUT cases saturate both ends"


@cocotb.test()
async def norm_row_ends(dut):
    """NORM rows whose last beat crosses an ABUF word boundary (norm0 of norm_rows: rows=7
    length=48 dst=898 stride=108), and an affine saturating at both ends (M and B at their
    extremes beside in-range columns)."""
    tb = RowTB(dut)
    await tb.start()
    rng = random.Random(8)
    c = tb.cfg
    ba = c.row_ba
    fw, _ = rand_format(rng, ba, 1, cmax=1500)

    def affine(n, sh=12):
        M, B = [], []
        for col in range(n):
            m_, b_ = [((1 << 31) - 1, 0), (-(1 << 31), 0), (1 << 15, 0), (-(1 << 15), 0),
                      (1, 1 << 40), (1, -(1 << 40)), (0, (1 << 27) + 1), (0, -(1 << 27)),
                      (rng.randint(-300, 300), rng.randint(-(1 << 20), 1 << 20))][col % 9]
            M.append(m_)
            B.append(b_)
        return affine_words(M, B, sh)

    _, out = await _rowop_at(tb, rng, RowKind.NORM, 7, 48, 60, 108, 898, 108, fw, affine(48),
                             "norm0_shape")
    vals = set(out.flatten().tolist())
    assert {-(1 << 15), (1 << 15) - 1} <= vals and len(vals) > 8, \
        "norm0_shape saturates at both ends beside in-range columns"
    for n in (2, c.elems + 1, 9, 31):
        for d in range(4):
            await _rowop_at(tb, rng, RowKind.NORM, 2, n, 2 * rng.randint(0, 8), 2 * n + 4,
                            1400 + 2 * d, 2 * n + 2 * rng.randint(0, 3), fw,
                            affine(n, rng.choice([0, 12, 20])), f"norm_end{n}_{d}")
