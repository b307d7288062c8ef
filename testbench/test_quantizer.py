"""cocotb bench of the activation quantizer against :mod:`golden.quantizer`.

Every output beat is checked bit for bit against the golden twin applied to
the input beat logged at the same position: no element lost, duplicated or
reordered, framing passed through, latency as the docstring states.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import ClockCycles, RisingEdge

from golden.quantizer import quantize, thresholds_from_codebook, threshold_writes
from testbench.common import TB

BEATS = int(os.environ.get("KLLM_BEATS", "300"))


def random_codebook(cfg, rng, duplicates=False):
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    n = 2 ** cfg.ba
    if duplicates or hi - lo + 1 < n:
        return sorted(rng.randint(lo, hi) for _ in range(n))
    return sorted(rng.sample(range(lo, hi + 1), n))


def stimulus(cfg, thresholds, rng, beats):
    """Beats of values: every threshold boundary, both range extremes, random fill."""
    lo, hi = -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1
    values = [lo, hi, lo + 1, hi - 1, 0, -1]
    for t in thresholds:
        values += [max(lo, min(hi, t + d)) for d in (-1, 0, 1)]
    n = max(beats * cfg.elems, len(values))
    values += [rng.randint(lo, hi) for _ in range(n - len(values))]
    rng.shuffle(values)
    values += [rng.randint(lo, hi) for _ in range(-len(values) % cfg.elems)]
    xs = [values[k:k + cfg.elems] for k in range(0, len(values), cfg.elems)]
    # framing: vectors of random length, first/last passed through untouched
    frames, k = [], 0
    while k < len(xs):
        length = rng.randint(1, 9)
        for j in range(min(length, len(xs) - k)):
            frames.append({"x": xs[k], "first": int(j == 0), "last": int(j == length - 1 or k == len(xs) - 1)})
            k += 1
    return frames


async def program_thresholds(tb, cfg, thresholds):
    """Write thresholds through the config port, as the golden host driver dictates."""
    dut = tb.dut
    mask = (1 << cfg.width) - 1
    for addr, value in threshold_writes(cfg, thresholds):
        dut.thr__en.value = 1
        dut.thr__addr.value = addr
        dut.thr__data.value = value & mask
        await RisingEdge(dut.clk)
    dut.thr__en.value = 0


def expected(tb, thresholds, in_beats):
    """Golden output of the logged input beats: one vectorized call for all of them."""
    if not in_beats:
        return []
    lanes = tb.component.config.elems
    beats = [tb.component.in_layout.from_bits(bits) for _, bits in in_beats]
    x = torch.tensor([[b.x[p] for p in range(lanes)] for b in beats])
    idx = quantize(x, thresholds).tolist()
    return [(i, b.first, b.last) for i, b in zip(idx, beats)]


def observed(tb, out_beats):
    out = []
    for _, bits in out_beats:
        beat = tb.unpack_out(bits)
        out.append(([beat.idx[p] for p in range(tb.component.config.elems)],
                    beat.first, beat.last))
    return out


def check_epoch(tb, thresholds, in_beats, out_beats, complete=True):
    exp = expected(tb, thresholds, in_beats)
    got = observed(tb, out_beats)
    if complete:
        assert len(got) == len(exp), f"{len(got)} output beats for {len(exp)} input beats"
    else:
        assert len(got) <= len(exp), f"{len(got)} output beats for {len(exp)} input beats"
    for k, (g, e) in enumerate(zip(got, exp)):
        assert g == e, f"beat {k}: got {g}, golden {e}"


async def run_stream(tb, cfg, thresholds, frames):
    start = len(tb.in_log.beats), len(tb.out_log.beats)
    for f in frames:
        await tb.source.send([tb.pack_in(f)])
    await tb.wait_outputs(start[1] + len(frames), timeout_cycles=20 * len(frames) + 100)
    await ClockCycles(tb.dut.clk, cfg.latency + 2)
    ins, outs = tb.in_log.beats[start[0]:], tb.out_log.beats[start[1]:]
    assert len(ins) == len(frames)
    check_epoch(tb, thresholds, ins, outs)
    return ins, outs


@cocotb.test()
@cocotb.parametrize(
    (("in_pause", "out_pause"),
     [("none", "none"), ("random", "random"), ("bursty", "bursty"), ("none", "random"),
      ("random", "none")]))
async def stream_matches_golden(dut, in_pause, out_pause):
    """Random values, every threshold boundary and the range extremes, with gaps and backpressure."""
    rng = random.Random(f"{in_pause}-{out_pause}")
    tb = TB(dut, in_pause, out_pause, seed=rng.randint(0, 1 << 30))
    cfg = tb.component.config
    await tb.reset()
    thresholds = thresholds_from_codebook(random_codebook(cfg, rng)).tolist()
    await program_thresholds(tb, cfg, thresholds)
    await run_stream(tb, cfg, thresholds, stimulus(cfg, thresholds, rng, BEATS))
    tb.record_stats()


@cocotb.test()
async def latency_and_throughput(dut):
    """With no gaps and no backpressure: II = 1 and every beat takes exactly ba + 1 cycles."""
    rng = random.Random(1)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    thresholds = thresholds_from_codebook(random_codebook(cfg, rng)).tolist()
    await program_thresholds(tb, cfg, thresholds)
    frames = stimulus(cfg, thresholds, rng, BEATS)
    ins, outs = await run_stream(tb, cfg, thresholds, frames)
    assert len(ins) == len(frames)
    tb.check_pipelined(ins, outs, cfg.latency)


@cocotb.test()
async def reset_mid_stream(dut):
    """Reset while beats are in flight: nothing stale comes out, thresholds survive reset."""
    rng = random.Random(2)
    tb = TB(dut, "random", "random", seed=7)
    cfg = tb.component.config
    await tb.reset()
    thresholds = thresholds_from_codebook(random_codebook(cfg, rng)).tolist()
    await program_thresholds(tb, cfg, thresholds)
    for f in stimulus(cfg, thresholds, rng, 60):
        await tb.source.send([tb.pack_in(f)])
    pre_in, pre_out = await tb.reset_in_flight(40)
    assert len(pre_out) > 0, "no output before the reset"
    assert len(pre_out) < len(pre_in), "reset came too late to catch beats in flight"
    check_epoch(tb, thresholds, pre_in, pre_out, complete=False)
    await ClockCycles(dut.clk, cfg.latency + 4)
    assert len(tb.out_log.beats) == len(pre_out), "stale beats came out after reset"
    await run_stream(tb, cfg, thresholds, stimulus(cfg, thresholds, rng, 50))
    tb.record_stats()


@cocotb.test()
async def reprogram_between_layers(dut):
    """New thresholds (another layer, duplicate centroids) apply to everything after the writes."""
    rng = random.Random(3)
    tb = TB(dut, "random", "none", seed=11)
    cfg = tb.component.config
    await tb.reset()
    for duplicates in (False, True, False):
        thresholds = thresholds_from_codebook(random_codebook(cfg, rng, duplicates)).tolist()
        await program_thresholds(tb, cfg, thresholds)
        await run_stream(tb, cfg, thresholds, stimulus(cfg, thresholds, rng, 40))
    tb.record_stats()
