"""cocotb bench of Orizuru and its baseline against :mod:`golden.orizuru`.

One bench for both units (same ports, same result).  Every result beat is
compared bit for bit with the golden twin applied to the vector whose beats
the handshake log recorded, in order: no vector lost, duplicated or
reordered; the cycle of each result is held to the latency formula.
"""

import os
import random

import cocotb
from cocotb.triggers import ClockCycles

from golden.orizuru import real_vectors, result
from testbench.common import TB

BEATS = int(os.environ.get("KLLM_BEATS", "300"))


def value_range(cfg):
    return -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1


def make_vector(cfg, rng, kind, n):
    lo, hi = value_range(cfg)
    if kind == "random":
        return [rng.randint(lo, hi) for _ in range(n)]
    if kind == "equal":
        v = rng.randint(lo, hi)
        return [v] * n
    if kind == "ties":                       # few distinct values: many ties at the cut
        pool = [rng.randint(lo, hi) for _ in range(3)]
        return [rng.choice(pool) for _ in range(n)]
    if kind == "increasing":
        return sorted(rng.randint(lo, hi) for _ in range(n))
    if kind == "decreasing":
        return sorted((rng.randint(lo, hi) for _ in range(n)), reverse=True)
    if kind == "extremes":                   # both ends of the signed range, and their neighbours
        return [rng.choice([lo, hi, lo + 1, hi - 1, 0, -1]) for _ in range(n)]
    raise ValueError(kind)


KINDS = ("random", "equal", "ties", "increasing", "decreasing", "extremes")


def pack_vector(cfg, values, rng=None):
    """Beats of one vector.  With ``rng``: random partial beats (count 0 .. P) inside the
    vector, sometimes no ``first`` flag (a vector also starts after a ``last``) and
    ``count`` above P on full beats (read as P)."""
    P = cfg.elems
    chunks, k = [], 0
    while k < len(values):
        c = rng.randint(0, P) if rng and rng.random() < 0.3 else P
        chunks.append(values[k:k + c])
        k += c
    if not chunks:
        chunks = [[]]                        # an empty vector: one beat with count 0
    beats = []
    for j, c in enumerate(chunks):
        count = len(c)
        if rng and count == P and rng.random() < 0.2:
            count = (1 << cfg.count_bits) - 1   # the largest count the field holds
        first = j == 0 and not (rng and rng.random() < 0.2)
        beats.append({"x": c + [rng.randint(*value_range(cfg)) if rng else 0
                                for _ in range(P - len(c))],
                      "count": count, "first": int(first), "last": int(j == len(chunks) - 1)})
    return beats


def stimulus(cfg, rng, beats, min_len=0):
    """Vectors of every kind and of lengths 1, < k, < 2k, not a multiple of P, up to max_len."""
    lengths = [1, cfg.elems + 1, cfg.k - 1, cfg.k, 2 * cfg.k - 1, 2 * cfg.k + cfg.elems - 1,
               cfg.max_len, 0]
    out, total = [], 0
    j = 0
    while total < beats:
        if j < len(lengths) * 2:
            n = lengths[j % len(lengths)]
        else:
            n = rng.randint(1, min(cfg.max_len, 3 * cfg.k + 2 * cfg.elems))
        n = max(0, min(n, cfg.max_len, 4 * cfg.k + 4 * cfg.elems))
        n = max(n, min_len)
        kind = KINDS[j % len(KINDS)]
        out.append(make_vector(cfg, rng, kind, n))
        total += max(1, -(-n // cfg.elems))
        j += 1
    return out


def unpack(tb, bits):
    beat = tb.unpack_out(bits)
    k = tb.component.config.k
    return {side: [(beat[side][j].value, beat[side][j].pos, beat[side][j].valid)
                   for j in range(k)] for side in ("top", "bot")}


def check(tb, vectors, out_beats):
    cfg = tb.component.config
    assert len(out_beats) == len(vectors), f"{len(out_beats)} results for {len(vectors)} vectors"
    for j, (v, (_, bits)) in enumerate(zip(vectors, out_beats)):
        got, exp = unpack(tb, bits), result(cfg, v)
        assert got == exp, f"vector {j} ({len(v)} values: {v[:40]}): got {got}, golden {exp}"


async def run_vectors(tb, vectors, framing_rng=None):
    cfg = tb.component.config
    start = len(tb.in_log.beats), len(tb.out_log.beats)
    n_beats = 0
    for v in vectors:
        beats = pack_vector(cfg, v, framing_rng)
        n_beats += len(beats)
        for b in beats:
            await tb.source.send([tb.pack_in(b)])
    limit = 20 * n_beats + (cfg.min_beats + cfg.latency + 10) * len(vectors) + 200
    await tb.wait_outputs(start[1] + len(vectors), timeout_cycles=limit)
    await ClockCycles(tb.dut.clk, cfg.latency + 4)
    ins, outs = tb.in_log.beats[start[0]:], tb.out_log.beats[start[1]:]
    assert len(ins) == n_beats, f"{len(ins)} beats accepted of {n_beats}"
    check(tb, vectors, outs)
    return ins, outs


def last_beats(tb, ins):
    return [c for c, bits in ins if tb.component.in_layout.from_bits(bits).last]


@cocotb.test()
@cocotb.parametrize(
    (("in_pause", "out_pause"),
     [("none", "none"), ("random", "random"), ("bursty", "bursty"), ("none", "random"),
      ("random", "none")]))
async def stream_matches_golden(dut, in_pause, out_pause):
    """Every kind and length of vector, partial beats, with gaps and backpressure."""
    rng = random.Random(f"{in_pause}-{out_pause}")
    tb = TB(dut, in_pause, out_pause, seed=rng.randint(0, 1 << 30))
    await tb.reset()
    await run_vectors(tb, stimulus(tb.component.config, rng, BEATS), framing_rng=rng)
    tb.record_stats()


@cocotb.test()
async def latency_and_throughput(dut):
    """No gaps, no backpressure, vectors of at least the minimum length: II = 1, no bubble
    between vectors, each result exactly ``latency`` cycles after its last beat."""
    rng = random.Random(1)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    min_len = cfg.min_beats * cfg.elems
    vectors = stimulus(cfg, rng, BEATS, min_len=min_len)
    vectors[0] = make_vector(cfg, rng, "random", min_len)        # exactly the minimum
    vectors[1] = make_vector(cfg, rng, "increasing", min_len)
    vectors = [v for v in vectors if len(v) <= cfg.max_len]
    assert vectors, "max_len is below the minimum vector length"
    ins, outs = await run_vectors(tb, vectors)
    in_cycles = [c for c, _ in ins]
    assert in_cycles == list(range(in_cycles[0], in_cycles[0] + len(ins))), \
        "input not accepted back to back"
    for j, (cl, (co, _)) in enumerate(zip(last_beats(tb, ins), outs)):
        assert co - cl == cfg.latency, f"vector {j}: latency {co - cl}, formula {cfg.latency}"
    span = outs[-1][0] - in_cycles[0] + 1
    assert span == len(ins) + cfg.latency, f"{len(ins)} beats took {span} cycles"
    tb.record_stats(latency_check={"beats": len(ins), "vectors": len(vectors), "cycles": span,
                                   "formula": len(ins) + cfg.latency})


@cocotb.test()
async def short_vectors(dut):
    """One-beat vectors back to back: correct results; stalls only below the minimum length."""
    rng = random.Random(2)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    vectors = [make_vector(cfg, rng, KINDS[j % len(KINDS)], rng.randint(1, cfg.elems))
               for j in range(40)]
    ins, outs = await run_vectors(tb, vectors)
    cycles = [c for c, _ in ins]
    span = cycles[-1] - cycles[0] + 1
    if cfg.min_beats == 1:
        assert span == len(ins), f"{len(ins)} one-beat vectors took {span} cycles"
    else:
        # the serial merge sets the pace: a vector per min_beats cycles on average (the
        # input takes a last beat as soon as the merge can surely load it)
        gaps = sorted({b - a for a, b in zip(cycles, cycles[1:])})
        assert max(gaps) > 1, "one-beat vectors below the minimum length did not stall"
        assert span - 1 <= cfg.min_beats * (len(ins) - 1), \
            f"{len(ins)} one-beat vectors took {span} cycles (gaps {gaps})"
    tb.record_stats()


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset with vectors in flight: nothing stale comes out, the unit starts afresh."""
    rng = random.Random(3)
    tb = TB(dut, "random", "random", seed=5)
    cfg = tb.component.config
    await tb.reset()
    vectors = stimulus(cfg, rng, 60)
    for v in vectors:
        for b in pack_vector(cfg, v):
            await tb.source.send([tb.pack_in(b)])
    _, pre_out = await tb.reset_in_flight(30)
    n_out = len(pre_out)
    assert n_out < len(vectors), "reset came too late to catch vectors in flight"
    check(tb, vectors[:n_out], tb.out_log.beats)
    await ClockCycles(dut.clk, cfg.latency + cfg.k + 4)
    assert len(tb.out_log.beats) == n_out, "stale results came out after reset"
    await run_vectors(tb, stimulus(cfg, rng, 40), framing_rng=rng)
    tb.record_stats()


@cocotb.test()
async def overlong_vector_recovers(dut):
    """A vector longer than max_len is outside the contract, but nothing hangs and the
    vectors after it are exact."""
    rng = random.Random(4)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    n = min(cfg.max_len + cfg.elems + 1, cfg.max_len + 64)
    for b in pack_vector(cfg, make_vector(cfg, rng, "random", n)):
        await tb.source.send([tb.pack_in(b)])
    await tb.wait_outputs(1, timeout_cycles=20 * n + 200)
    await run_vectors(tb, stimulus(cfg, rng, 30), framing_rng=rng)
    tb.record_stats()


@cocotb.test()
async def real_activations(dut):
    """Token vectors recorded from the MiniLM model (inputs of its linear layers, in the
    unit's fixed point, cut to max_len), with gaps and backpressure."""
    tb = TB(dut, "random", "random", seed=7)
    cfg = tb.component.config
    await tb.reset()
    await run_vectors(tb, real_vectors(cfg.width, cfg.max_len, n=12))
    tb.record_stats()
