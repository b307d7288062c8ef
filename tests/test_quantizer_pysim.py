"""Quick Amaranth-simulator checks of the quantizer against the golden twin."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from golden.quantizer import quantize, threshold_writes, thresholds_from_codebook
from hdl.quantizer import ActivationQuantizer


def simulate(dut, thresholds, beats, ready=lambda cycle: True):
    """Program ``thresholds``, stream ``beats`` (lists of P values) back to back.

    Returns ``[(in_cycle, out_cycle, idx)]`` per beat.
    """
    cfg = dut.config
    accepted, produced = [], []

    async def bench(ctx):
        for addr, value in threshold_writes(cfg, thresholds):
            ctx.set(dut.thr.en, 1)
            ctx.set(dut.thr.addr, addr)
            ctx.set(dut.thr.data, value)
            await ctx.tick()
        ctx.set(dut.thr.en, 0)
        k = cycle = 0
        while len(produced) < len(beats):
            if k < len(beats):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"x": beats[k], "first": k == 0, "last": k == len(beats) - 1})
            else:
                ctx.set(dut.i.valid, 0)
            ctx.set(dut.o.ready, ready(cycle))
            await ctx.delay(1e-9)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                accepted.append(cycle)
                k += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                produced.append((cycle, list(ctx.get(dut.o.payload.idx))))
            await ctx.tick()
            cycle += 1
            assert cycle < 10 * len(beats) + 100, "pipeline hangs"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return [(a, c, idx) for a, (c, idx) in zip(accepted, produced)]


@pytest.mark.parametrize("width, ba, lanes", [(6, 3, 2), (5, 1, 1), (8, 8, 3)])
def test_exhaustive_inputs(width, ba, lanes):
    """Every input value of a narrow quantizer, against the golden integers."""
    rng = random.Random(width * 100 + ba)
    dut = ActivationQuantizer(width=width, ba=ba, elems=lanes)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    centroids = sorted(rng.randint(lo, hi) for _ in range(2 ** ba))
    thresholds = thresholds_from_codebook(centroids).tolist()
    values = list(range(lo, hi + 1))
    values += values[:-len(values) % lanes or len(values)][:(-len(values)) % lanes]
    beats = [values[k:k + lanes] for k in range(0, len(values), lanes)]
    result = simulate(dut, thresholds, beats)
    golden = quantize(torch.tensor(beats), thresholds).tolist()
    assert [idx for _, _, idx in result] == golden


def test_latency_formula_and_backpressure():
    dut = ActivationQuantizer()
    rng = random.Random(5)
    thresholds = thresholds_from_codebook(sorted(rng.sample(range(-30000, 30000), 16))).tolist()
    beats = [[rng.randint(-32768, 32767) for _ in range(4)] for _ in range(40)]
    golden = quantize(torch.tensor(beats), thresholds).tolist()

    free = simulate(dut, thresholds, beats)
    assert [c - a for a, c, _ in free] == [dut.latency] * len(beats)
    assert free[-1][1] - free[0][0] + 1 == len(beats) + dut.latency
    assert [idx for _, _, idx in free] == golden

    stalled = simulate(ActivationQuantizer(), thresholds, beats, ready=lambda c: c % 3 != 0)
    assert [idx for _, _, idx in stalled] == golden
