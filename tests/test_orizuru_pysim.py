"""Quick Amaranth-simulator checks of Orizuru (both final merges) against the golden twin."""

import random

import pytest
from amaranth.sim import Simulator

from golden.orizuru import result
from hdl.orizuru import Orizuru, OrizuruBaseline


def pack(cfg, vectors):
    beats = []
    for v in vectors:
        chunks = [v[i:i + cfg.elems] for i in range(0, len(v), cfg.elems)] or [[]]
        for j, c in enumerate(chunks):
            beats.append({"x": c + [0] * (cfg.elems - len(c)), "count": len(c),
                          "first": j == 0, "last": j == len(chunks) - 1})
    return beats


def simulate(dut, vectors, ready=lambda cycle: True, valid=lambda cycle: True):
    """Stream ``vectors`` back to back (input gaps where ``valid(cycle)`` is false);
    ``[(in_cycles, out_cycle, result)]`` per vector."""
    cfg = dut.config
    beats = pack(cfg, vectors)
    accepted, produced = [], []

    async def bench(ctx):
        k = cycle = 0
        while len(produced) < len(vectors):
            ctx.set(dut.i.valid, k < len(beats) and valid(cycle))
            if k < len(beats):
                ctx.set(dut.i.payload, beats[k])
            ctx.set(dut.o.ready, ready(cycle))
            await ctx.delay(1e-9)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                accepted.append((cycle, beats[k]["last"]))
                k += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                o = ctx.get(dut.o.payload)
                produced.append((cycle, {s: [(e.value, e.pos, e.valid) for e in o[s]]
                                         for s in ("top", "bot")}))
            await ctx.tick()
            cycle += 1
            assert cycle < 50 * len(beats) + 200, "hangs"

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return accepted, produced


def vectors_for(cfg, rng, count, lengths):
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    out = []
    for j in range(count):
        n = rng.choice(lengths)
        kind = j % 4
        if kind == 0:
            out.append([rng.randint(lo, hi) for _ in range(n)])
        elif kind == 1:
            out.append([rng.randint(-1, 1) for _ in range(n)])
        elif kind == 2:
            out.append(sorted(rng.randint(lo, hi) for _ in range(n)))
        else:
            out.append([rng.choice([lo, hi]) for _ in range(n)])
    return out


@pytest.mark.parametrize("merge", [0, 1, 2])
@pytest.mark.parametrize("width, lanes, k, max_len", [(8, 4, 3, 64), (6, 3, 5, 40), (5, 1, 2, 16),
                                                      (8, 8, 4, 64)])
def test_matches_golden_with_backpressure(width, lanes, k, max_len, merge):
    # the compare-exchanges inline (ce_modules=0) in half of the runs
    dut = Orizuru(width=width, elems=lanes, k=k, max_len=max_len, merge=merge,
                  ce_modules=int(lanes % 2 == 0 or merge > 0))
    rng = random.Random(width * lanes * k + merge)
    vectors = vectors_for(dut.config, rng, 24, [0, 1, k, 2 * k + 1, lanes + 1, 3 * k + lanes])
    _, produced = simulate(dut, vectors, ready=lambda c: c % 4 != 1)
    assert [r for _, r in produced] == [result(dut.config, v) for v in vectors]


@pytest.mark.parametrize("merge", [0, 1, 2])
def test_latency_formula_and_minimum_length(merge):
    dut = Orizuru(width=8, elems=4, k=3, max_len=64, merge=merge)
    cfg = dut.config
    rng = random.Random(9)
    n = cfg.min_beats * cfg.elems
    vectors = vectors_for(cfg, rng, 10, [n, n - 1, n + 3])
    vectors[0] = vectors[0][:n] + [0] * (n - len(vectors[0]))
    long_enough = [v for v in vectors if len(v) > (cfg.min_beats - 1) * cfg.elems]
    accepted, produced = simulate(dut, long_enough)
    assert [c for c, _ in accepted] == list(range(len(accepted))), "stalled above the limit"
    lasts = [c for c, last in accepted if last]
    assert [co - cl for cl, (co, _) in zip(lasts, produced)] == [cfg.latency] * len(long_enough)
    assert [r for _, r in produced] == [result(cfg, v) for v in long_enough]
    if merge:   # one beat shorter than the limit: correct, with a stall per vector
        short = [v[:(cfg.min_beats - 1) * cfg.elems] for v in vectors]
        accepted, produced = simulate(Orizuru(width=8, elems=4, k=3, max_len=64), short)
        assert accepted[-1][0] + 1 > len(accepted)
        assert [r for _, r in produced] == [result(cfg, v) for v in short]


def bursty(seed, cycles=4000):
    """Runs of 1..12 cycles on and 1..8 off (the bench's bursty pauses), as ``f(cycle)``."""
    rng, on = random.Random(seed), []
    while len(on) < cycles:
        on += [True] * rng.randint(1, 12) + [False] * rng.randint(1, 8)
    return lambda cycle: cycle >= len(on) or on[cycle]


@pytest.mark.parametrize("merge", [1, 2])
def test_serial_merge_bursty_gaps_and_backpressure(merge):
    """Regression: the input once took a last beat in a cycle where the queued vector's
    pops were waiting for the output (a wait `pops_due` counts only from the next
    cycle), so the next load came a pop early, overwrote the queues and a result was
    lost (P = 4, k = 6: vectors of k - 1 .. 2k values, bursty gaps and backpressure)."""
    for seed in (3, 5, 7):      # each of these lost a result before the fix
        dut = Orizuru(width=8, elems=4, k=6, max_len=64, merge=merge, ce_modules=0)
        rng = random.Random(seed)
        vectors = vectors_for(dut.config, rng, 40, [5, 6, 9, 12, 16, 20, 24])
        _, produced = simulate(dut, vectors, ready=bursty(2 * seed + 1),
                               valid=bursty(2 * seed + 2))
        assert [r for _, r in produced] == [result(dut.config, v) for v in vectors]


@pytest.mark.parametrize("ce_modules", [0, 1])
def test_baseline_small(ce_modules):
    dut = OrizuruBaseline(width=6, elems=2, k=3, max_len=32, ce_modules=ce_modules)
    rng = random.Random(3)
    vectors = vectors_for(dut.config, rng, 16, [0, 1, 3, 7, 12])
    accepted, produced = simulate(dut, vectors, ready=lambda c: c % 3 != 0)
    assert [r for _, r in produced] == [result(dut.config, v) for v in vectors]
