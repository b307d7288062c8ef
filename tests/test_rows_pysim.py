"""The row units' pipelined building blocks (hdl/blocks.py, hdl/rows.py) in the Amaranth simulator:
fabric multiplier, banked LUTRAM memory and leading-one encoder, each against Python
integers on random operands, with the stated latency."""

import random

import pytest
from amaranth import Elaboratable, Module, Mux, Signal, signed, unsigned
from amaranth.sim import Simulator

from hdl.blocks import banked_memory, leading_one, pipelined_mul, select_pipe
from hdl.rows import SkidOutput


class _Wrap(Elaboratable):
    def __init__(self, build):
        self.build = build

    def elaborate(self, platform):
        m = Module()
        self.build(m)
        return m


def _run(top, bench, clock=True):
    sim = Simulator(top)
    if clock:
        sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("wa, sa, wb, sb", [(16, False, 11, False), (16, False, 17, False),
                                            (9, True, 17, False), (12, True, 12, True),
                                            (8, True, 1, False), (5, False, 3, True)])
def test_pipelined_mul(wa, sa, wb, sb):
    a = Signal(signed(wa) if sa else unsigned(wa))
    b = Signal(signed(wb) if sb else unsigned(wb))
    out = {}

    def build(m):
        out["p"], out["lat"] = pipelined_mul(m, a, b, "mul")
    top = _Wrap(build)
    rng = random.Random(f"{wa}{sa}{wb}{sb}")

    def rnd(w, s):
        return rng.randint(-(1 << (w - 1)), (1 << (w - 1)) - 1) if s else rng.randrange(1 << w)
    ops = [(rnd(wa, sa), rnd(wb, sb)) for _ in range(60)]
    ops += [(-(1 << (wa - 1)) if sa else (1 << wa) - 1, -(1 << (wb - 1)) if sb else (1 << wb) - 1)]

    async def bench(ctx):
        lat = out["lat"]
        got = []
        for k in range(len(ops) + lat):
            if k < len(ops):
                ctx.set(a, ops[k][0])
                ctx.set(b, ops[k][1])
            await ctx.tick()
            if k + 1 >= lat:
                got.append(ctx.get(out["p"]))
        assert got[:len(ops)] == [x * y for x, y in ops]
    _run(top, bench)


@pytest.mark.parametrize("depth, rom, wreg", [(16, False, False), (256, False, False),
                                             (256, False, True), (40, False, True),
                                             (128, True, False), (8, True, False)])
def test_banked_memory(depth, rom, wreg):
    ab = max(1, (depth - 1).bit_length())
    raddr, we, waddr, wdata = Signal(ab), Signal(), Signal(ab), Signal(12)
    rng = random.Random(depth)
    init = [rng.randrange(1 << 12) for _ in range(depth)]
    out = {}

    def build(m):
        kw = {"init": init} if rom else {"we": we, "waddr": waddr, "wdata": wdata, "wreg": wreg}
        out["d"], out["lat"] = banked_memory(m, "mem", unsigned(12), depth, raddr, **kw)
    top = _Wrap(build)

    async def bench(ctx):
        if not rom:
            # every word written twice, a wrong value first (a write must replace it), and
            # a disabled write of a third value in between that must not land
            for k, v in enumerate(init):
                for en, val in ((1, v ^ 0xfff), (0, 0x5a5), (1, v)):
                    ctx.set(we, en)
                    ctx.set(waddr, k)
                    ctx.set(wdata, val)
                    await ctx.tick()
            ctx.set(we, 0)
            if wreg:
                await ctx.tick()        # the registered write lands a cycle later
        addrs = [rng.randrange(depth) for _ in range(50)]
        got = []
        for k in range(len(addrs) + out["lat"]):
            if k < len(addrs):
                ctx.set(raddr, addrs[k])
            await ctx.tick()
            if k + 1 >= out["lat"]:
                got.append(ctx.get(out["d"]))
        assert got[:len(addrs)] == [init[x] for x in addrs]
    _run(top, bench)


@pytest.mark.parametrize("width", [1, 5, 16, 28])
def test_leading_one(width):
    v = Signal(width)
    out = {}

    def build(m):
        out["pos"] = leading_one(m, v, "lead")
    top = _Wrap(build)
    rng = random.Random(width)
    vals = [0, 1, (1 << width) - 1] + [rng.randrange(1 << rng.randint(1, width)) for _ in range(40)]

    async def bench(ctx):
        for x in vals:
            ctx.set(v, x)
            await ctx.delay(1e-9)
            assert ctx.get(out["pos"]) == max(0, x.bit_length() - 1), x
    _run(top, bench, clock=False)


@pytest.mark.parametrize("n", [1, 2, 8, 16, 64])
def test_select_pipe(n):
    words = [Signal(8, name=f"w{k}") for k in range(n)]
    index = Signal(max(1, (n - 1).bit_length()))
    out = {}

    def build(m):
        out["w"], out["lat"] = select_pipe(m, words, index, "sel")
    top = _Wrap(build)
    rng = random.Random(n)
    vals = [rng.randrange(256) for _ in range(n)]
    picks = [rng.randrange(n) for _ in range(30)]

    async def bench(ctx):
        for w, v in zip(words, vals):
            ctx.set(w, v)
        got = []
        for k in range(len(picks) + out["lat"]):
            if k < len(picks):
                ctx.set(index, picks[k])
            await ctx.tick()
            if k + 1 >= out["lat"]:
                got.append(ctx.get(out["w"]))
        assert got[:len(picks)] == [vals[x] for x in picks]
    _run(top, bench)


@pytest.mark.parametrize("seed", [1, 2])
def test_skid_output(seed):
    """A counter pipeline behind :class:`SkidOutput` under random ``o.ready``: every beat
    comes out once, in order, none lost or doubled; ``advance`` stops the source only while
    a beat is held; with ``o.ready`` high a beat is on ``o`` one cycle after it is
    presented; ``last_out`` follows each ``last`` beat leaving the pipeline."""
    from amaranth.lib import data, stream
    layout = data.StructLayout({"v": 8, "last": 1})
    o = stream.Signature(layout).flip().create()
    out = {}

    def build(m):
        sk = SkidOutput(m, o)
        out["sk"] = sk
        cnt = Signal(8)          # the source: beat k has v = k, every fourth beat last;
        gap = Signal()           # a bubble every third cycle it advances
        ph = Signal(2)
        with m.If(sk.advance):
            m.d.sync += ph.eq(Mux(ph == 2, 0, ph + 1))
            with m.If(ph != 2):
                m.d.sync += cnt.eq(cnt + 1)
        m.d.comb += [gap.eq(ph == 2), sk.valid.eq(~gap), sk.payload.v.eq(cnt),
                     sk.payload.last.eq(cnt[:2] == 3)]
    top = _Wrap(build)
    rng = random.Random(seed)

    async def bench(ctx):
        sk = out["sk"]
        got, lasts_out, lasts_seen = [], 0, 0
        presented = None
        for cyc in range(400):
            ready = 1 if cyc < 20 else rng.random() < 0.6
            ctx.set(o.ready, ready)
            await ctx.delay(1e-9)
            if cyc < 20 and presented is not None:
                # ready held high: the beat presented in the previous cycle is on o now
                assert ctx.get(o.valid) == presented[0]
                if presented[0]:
                    assert ctx.get(o.payload.v) == presented[1]
            presented = (ctx.get(sk.valid), ctx.get(sk.payload.v)) if ctx.get(sk.advance) \
                else None
            if ctx.get(sk.advance) and ctx.get(sk.valid) and ctx.get(sk.payload.last):
                lasts_seen += 1
            lasts_out += ctx.get(sk.last_out)
            if ctx.get(o.valid) and ready:
                got.append(ctx.get(o.payload.v))
            await ctx.tick()
        assert len(got) > 150
        assert got == [k % 256 for k in range(len(got))]
        assert lasts_out in (lasts_seen, lasts_seen - 1)
    _run(top, bench)
