"""hdl.blocks.shift_right_staged and hdl.rows.wait_cycles in simulation."""

import random

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from hdl.blocks import shift_right_staged
from hdl.rows import wait_cycles


def test_shift_right_staged_is_a_right_shift_two_cycles_later():
    m = Module()
    value, amount, y = Signal(40), Signal(6), Signal(40)
    m.d.comb += y.eq(shift_right_staged(m, value, amount))
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        rng = random.Random(1)
        for _ in range(200):
            x, s = rng.getrandbits(40), rng.randrange(48)
            ctx.set(value, x)
            ctx.set(amount, s)
            await ctx.tick().repeat(2)
            assert ctx.get(y) == x >> s

    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("cycles", [0, 1, 5])
def test_wait_cycles_sets_its_flag_cycles_plus_two_after_the_trigger(cycles):
    m = Module()
    trigger, then = Signal(), Signal()
    wait_cycles(m, trigger, cycles, then)
    sim = Simulator(m)
    sim.add_clock(1e-6)

    async def bench(ctx):
        ctx.set(trigger, 1)
        await ctx.tick()
        ctx.set(trigger, 0)
        ticks = 1
        while not ctx.get(then):
            await ctx.tick()
            ticks += 1
        assert ticks == cycles + 2

    sim.add_testbench(bench)
    sim.run()
