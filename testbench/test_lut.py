"""cocotb bench of the elementwise table and the binary product table against
:mod:`golden.lut` and :mod:`golden.product`.

Both units share the pipeline (input register, table read, output register),
so one bench serves both; it reads which unit it drives from the description.
Every output beat is compared bit for bit with the golden lookup of the input
beat logged at the same position (no beat lost, duplicated or reordered,
framing passed through), and the latency is held to the formula.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import ClockCycles, RisingEdge

from golden import lut, product
from testbench.common import TB

BEATS = int(os.environ.get("KLLM_BEATS", "200"))


def is_product(tb):
    return tb.description["unit"] == "product"


def random_table(cfg, rng, binary):
    n = 4 ** cfg.ba if binary else 2 ** cfg.ba
    return [rng.randrange(1 << cfg.out_width) for _ in range(n)]


def real_table(cfg, binary):
    """A table as the golden host builds it: GELU / SwiGLU values or indices."""
    g = torch.Generator().manual_seed(cfg.ba)
    n = 2 ** cfg.ba
    Ca = torch.randperm(256, generator=g)[:n].sub(128).sort().values
    Cb = torch.randperm(256, generator=g)[:n].sub(128).sort().values
    if cfg.out_width <= cfg.ba:          # index -> index
        Cout = torch.randperm(256, generator=g)[:2 ** cfg.out_width].sub(128).sort().values
        t = (product.table_to_index("swiglu", Ca, 0.02, Cb, 0.02, Cout, 0.01) if binary
             else lut.table_to_index("gelu", Ca, 0.02, Cout, 0.01))
    else:
        frac = max(0, cfg.out_width - 4)
        t = (product.table_to_fixed("swiglu", Ca, 0.02, Cb, 0.02, frac, cfg.out_width) if binary
             else lut.table_to_fixed("gelu", Ca, 0.02, frac, cfg.out_width))
    writes = (product.table_writes if binary else lut.table_writes)(t, cfg.out_width)
    return [v for _, v in writes]


async def program(tb, table):
    dut = tb.dut
    for addr, value in enumerate(table):
        dut.tbl__en.value = 1
        dut.tbl__addr.value = addr
        dut.tbl__data.value = value
        await RisingEdge(dut.clk)
    dut.tbl__en.value = 0


def stimulus(cfg, rng, beats, binary, kind="random"):
    """Rows of 1..9 beats (many of one beat); every index (pair) appears; ``same``: one index."""
    P, n = cfg.elems, 2 ** cfg.ba
    total = beats * P
    if kind == "same":
        a = [rng.randrange(n)] * total
        b = [rng.randrange(n)] * total
    else:
        pairs = [(x, y) for x in range(n) for y in range(n)] if binary else [(x, 0) for x in range(n)]
        pairs += [(rng.randrange(n), rng.randrange(n)) for _ in range(max(0, total - len(pairs)))]
        rng.shuffle(pairs)
        pairs += [(rng.randrange(n), rng.randrange(n)) for _ in range(-len(pairs) % P)]
        a, b = [x for x, _ in pairs], [y for _, y in pairs]
    frames, k = [], 0
    while k < len(a):
        length = 1 if rng.random() < 0.3 else rng.randint(2, 9)
        for j in range(length):
            if k >= len(a):
                break
            f = {"first": int(j == 0), "last": int(j == length - 1 or k + P >= len(a))}
            if binary:
                f.update(a=a[k:k + P], b=b[k:k + P])
            else:
                f.update(idx=a[k:k + P])
            frames.append(f)
            k += P
    return frames


def expected(tb, table, in_beats):
    cfg = tb.component.config
    t = torch.tensor(table)
    beats = [tb.component.in_layout.from_bits(bits) for _, bits in in_beats]
    if not beats:
        return []
    if is_product(tb):
        a = torch.tensor([[x.a[p] for p in range(cfg.elems)] for x in beats])
        b = torch.tensor([[x.b[p] for p in range(cfg.elems)] for x in beats])
        y = product.apply(t.view(2 ** cfg.ba, 2 ** cfg.ba), a, b)
    else:
        idx = torch.tensor([[x.idx[p] for p in range(cfg.elems)] for x in beats])
        y = lut.apply(t, idx)
    return [(row, x.first, x.last) for row, x in zip(y.tolist(), beats)]


def observed(tb, out_beats):
    lanes = tb.component.config.elems
    got = []
    for _, bits in out_beats:
        beat = tb.unpack_out(bits)
        got.append(([beat.y[p] for p in range(lanes)], beat.first, beat.last))
    return got


async def run_stream(tb, table, frames):
    cfg = tb.component.config
    start = len(tb.in_log.beats), len(tb.out_log.beats)
    for f in frames:
        await tb.source.send([tb.pack_in(f)])
    await tb.wait_outputs(start[1] + len(frames), timeout_cycles=20 * len(frames) + 100)
    await ClockCycles(tb.dut.clk, cfg.latency + 2)
    ins, outs = tb.in_log.beats[start[0]:], tb.out_log.beats[start[1]:]
    assert len(ins) == len(frames)
    exp, got = expected(tb, table, ins), observed(tb, outs)
    assert len(got) == len(exp), f"{len(got)} output beats for {len(exp)} input beats"
    for k, (g, e) in enumerate(zip(got, exp)):
        assert g == e, f"beat {k}: got {g}, golden {e}"
    return ins, outs


@cocotb.test()
@cocotb.parametrize(
    (("in_pause", "out_pause"),
     [("none", "none"), ("random", "random"), ("bursty", "bursty"), ("none", "random")]))
async def stream_matches_golden(dut, in_pause, out_pause):
    """Random tables and indices (every entry read), rows of one beat, gaps and backpressure."""
    rng = random.Random(f"{in_pause}-{out_pause}")
    tb = TB(dut, in_pause, out_pause, seed=rng.randint(0, 1 << 30))
    cfg = tb.component.config
    await tb.reset()
    table = random_table(cfg, rng, is_product(tb))
    await program(tb, table)
    await run_stream(tb, table, stimulus(cfg, rng, BEATS, is_product(tb)))
    tb.record_stats()


@cocotb.test()
async def latency_and_throughput(dut):
    """With no gaps and no backpressure: II = 1 and every beat takes exactly the latency."""
    rng = random.Random(1)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    table = random_table(cfg, rng, is_product(tb))
    await program(tb, table)
    frames = stimulus(cfg, rng, BEATS, is_product(tb))
    ins, outs = await run_stream(tb, table, frames)
    assert len(ins) == len(frames)
    tb.check_pipelined(ins, outs, cfg.latency)


@cocotb.test()
async def reload_tables_and_constant_rows(dut):
    """Tables as the golden host builds them (GELU / SwiGLU), reloaded between layers;
    rows where every element is the same index; reset keeps the table."""
    rng = random.Random(2)
    tb = TB(dut, "random", "random", seed=5)
    cfg = tb.component.config
    binary = is_product(tb)
    await tb.reset()
    table = real_table(cfg, binary)
    await program(tb, table)
    await run_stream(tb, table, stimulus(cfg, rng, 30, binary, "same"))
    await run_stream(tb, table, stimulus(cfg, rng, 30, binary))
    table = random_table(cfg, rng, binary)
    await program(tb, table)
    await tb.reset()
    await run_stream(tb, table, stimulus(cfg, rng, 30, binary))
    tb.record_stats()
