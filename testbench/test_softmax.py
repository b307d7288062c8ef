"""cocotb bench of the histogram softmax and the histogram LayerNorm / RMSNorm against
:mod:`golden.softmax` and :mod:`golden.norm`.

Both units share the row machinery (row buffer, histogram, remap tables), so
one bench serves both; it reads which unit it drives from the description.
Rows are grouped from the logged input beats (a row ends with ``last``), the
golden twin is applied to each row's valid elements, and every output beat is
compared bit for bit (values, ``count``, ``first``/``last``).  The latency of
every row and the row-to-row spacing are held to the formula.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import ClockCycles, RisingEdge

from golden import norm, softmax
from testbench.common import TB

# rows per stream test: KLLM_ROWS, else a tenth of `kllm sim --beats` (KLLM_BEATS)
ROWS = int(os.environ.get("KLLM_ROWS") or max(8, int(os.environ.get("KLLM_BEATS", "300")) // 10))


def is_norm(tb):
    return tb.description["unit"] in ("norm", "norm_baseline")


def is_baseline(tb):
    return tb.description["unit"].endswith("_baseline")


def index_bits(cfg):
    """The histogram units' ba; the baselines' rows are drawn from 16 values a row."""
    return getattr(cfg, "ba", 4)


def value_range(cfg):
    return -(1 << (cfg.width - 1)), (1 << (cfg.width - 1)) - 1


def random_tables(tb, rng):
    """A random codebook (and score scale): ``(codebook, scale, writes)``."""
    cfg = tb.component.config
    if is_baseline(tb):
        return None, None, []
    J = 2 ** cfg.ba
    if is_norm(tb):
        lo, hi = -(1 << (cfg.cw - 1)), (1 << (cfg.cw - 1)) - 1
        C = sorted([lo, hi] + [rng.randint(lo, hi) for _ in range(J - 2)])[:J] if J > 2 else [lo, hi][:J]
        C = torch.tensor(C)
        return C, None, norm.codebook_writes(C, cfg.cw)
    C = torch.tensor(sorted(rng.sample(range(-128, 128), J)))
    ss = rng.choice([0.02, 0.05, 0.1, 0.3, 1.0])
    # hls4ml's pitfall of the unused table half: entries E[m][j] with j > m are never
    # read, so they are written with junk here; a unit that read one would fail.
    writes = [(a, v if a % J <= a // J else rng.randrange(1 << 16))
              for a, v in softmax.exp_table_writes(C, ss)]
    return C, ss, writes


async def program(tb, writes):
    dut = tb.dut
    if not writes:
        return
    for addr, value in writes:
        dut.tbl__en.value = 1
        dut.tbl__addr.value = addr
        dut.tbl__data.value = value
        await RisingEdge(dut.clk)
    dut.tbl__en.value = 0


def make_row(cfg, rng, kind):
    """A row of indices; for a baseline, of values (each index mapped through 16 random
    values of the input range, both extremes among them)."""
    row = make_index_row(cfg, rng, kind)
    if not hasattr(cfg, "width"):
        return row
    lo, hi = value_range(cfg)
    values = sorted([lo, hi] + [rng.randint(lo, hi) for _ in range(14)])
    if kind == "narrow":                         # a row of nearly equal values
        base = rng.randint(lo, hi - 3)
        values = sorted(base + rng.randint(0, 3) for _ in range(16))
    return [values[j] for j in row]


def make_index_row(cfg, rng, kind):
    J = 2 ** index_bits(cfg)
    n = 1 if kind == "one" else rng.randint(1, cfg.max_len)
    if kind in ("same", "one"):
        return [rng.randrange(J)] * n
    if kind == "only_max":                       # every element is the codebook's top index
        return [J - 1] * n
    if kind == "outlier":                        # the widest z-score: one element apart
        a, b = rng.sample(range(J), 2) if J > 1 else (0, 0)
        row = [a] * cfg.max_len
        row[rng.randrange(cfg.max_len)] = b
        return row
    if kind == "extremes":
        return [rng.choice([0, J - 1]) for _ in range(n)]
    return [rng.randrange(J) for _ in range(n)]


KINDS = ("random", "one", "same", "only_max", "outlier", "extremes", "narrow")


def pack_row(cfg, row, rng, partial=True):
    """Beats of one row; with ``partial`` some beats hold fewer than P elements (even 0)."""
    P = cfg.elems
    chunks, k = [], 0
    while k < len(row):
        c = rng.randint(0, P) if partial and rng.random() < 0.25 else P
        chunks.append(row[k:k + c])
        k += c
    if len(chunks) > cfg.max_beats and len(row) <= cfg.max_len:
        return pack_row(cfg, row, rng, partial=False)     # partial beats would not fit
    beats = []
    for j, c in enumerate(chunks):
        fill = c + [rng.randrange(2 ** index_bits(cfg)) for _ in range(P - len(c))]
        beats.append({("x" if hasattr(cfg, "width") else "idx"): fill,
                      "count": len(c), "first": int(j == 0), "last": int(j == len(chunks) - 1)})
    return beats


def split_rows(tb, in_beats):
    """Logged input beats grouped into rows: ``[(beats, elements)]``."""
    cfg = tb.component.config
    rows, cur = [], []
    for _, bits in in_beats:
        cur.append(tb.component.in_layout.from_bits(bits))
        if cur[-1].last:
            rows.append(cur)
            cur = []
    out = []
    for beats in rows:
        kept = beats[:cfg.max_beats]              # beyond the buffer: dropped
        elems = [(b.x if hasattr(cfg, "width") else b.idx)[p]
                 for b in kept for p in range(min(b.count, cfg.elems))]
        out.append((kept, elems))
    return out


def golden_row(tb, C, ss, elems):
    cfg = tb.component.config
    if tb.description["unit"] == "norm_baseline":
        out, _ = norm.norm_values_rows(torch.tensor([elems]), "rmsnorm" if cfg.rms else "layernorm")
    elif tb.description["unit"] == "softmax_baseline":
        out, _ = softmax.softmax_baseline_rows(torch.tensor([elems]), cfg.frac)
    elif is_norm(tb):
        _, out, _ = norm.norm_rows(torch.tensor([elems]), C,
                                   "rmsnorm" if tb.component.config.rms else "layernorm")
    else:
        out, _ = softmax.softmax_rows(torch.tensor([elems]), C, ss)
    return out[0].tolist()


def check_rows(tb, C, ss, in_beats, out_beats):
    cfg = tb.component.config
    rows = split_rows(tb, in_beats)
    got = [tb.unpack_out(bits) for _, bits in out_beats]
    assert len(got) == sum(len(b) for b, _ in rows), \
        f"{len(got)} output beats for {sum(len(b) for b, _ in rows)} buffered input beats"
    k = 0
    for r, (beats, elems) in enumerate(rows):
        values = golden_row(tb, C, ss, elems)
        pos = 0
        for j, b in enumerate(beats):
            c = min(b.count, cfg.elems)
            exp = values[pos:pos + c] + [0] * (cfg.elems - c)
            pos += c
            g = got[k]
            k += 1
            obs = [g.y[p] for p in range(cfg.elems)]
            assert (obs, g.count, g.first, g.last) == (exp, b.count, int(j == 0), int(j == len(beats) - 1)), \
                f"row {r} beat {j}: got {(obs, g.count, g.first, g.last)}, golden " \
                f"{(exp, b.count, int(j == 0), int(j == len(beats) - 1))} (row {elems})"


async def run_rows(tb, C, ss, rows, rng, partial=True):
    cfg = tb.component.config
    start = len(tb.in_log.beats), len(tb.out_log.beats)
    beats = [b for row in rows for b in pack_row(cfg, row, rng, partial)]
    for b in beats:
        await tb.source.send([tb.pack_in(b)])
    expected_out = sum(len(kept) for kept, _ in split_rows_from(tb, beats))
    await tb.wait_outputs(start[1] + expected_out,
                          timeout_cycles=(5 * len(beats) + len(rows) * (cfg.row_latency(0) + 4)) * 10 + 200)
    await ClockCycles(tb.dut.clk, 4)
    ins, outs = tb.in_log.beats[start[0]:], tb.out_log.beats[start[1]:]
    assert len(ins) == len(beats)
    check_rows(tb, C, ss, ins, outs)
    return ins, outs


def split_rows_from(tb, beats):
    cfg = tb.component.config
    rows, cur = [], []
    for b in beats:
        cur.append(b)
        if b["last"]:
            rows.append((cur[:cfg.max_beats], None))
            cur = []
    return rows


def random_rows(cfg, rng, count):
    rows = [make_row(cfg, rng, kind) for kind in KINDS]
    rows += [make_row(cfg, rng, rng.choice(KINDS)) for _ in range(max(0, count - len(rows)))]
    rng.shuffle(rows)
    return rows


@cocotb.test()
@cocotb.parametrize(
    (("in_pause", "out_pause"),
     [("none", "none"), ("random", "random"), ("bursty", "bursty"), ("none", "random")]))
async def stream_matches_golden(dut, in_pause, out_pause):
    """Rows of every kind (one element, all the same index, only the maximum, one
    outlier, random), partial beats, gaps and backpressure."""
    rng = random.Random(f"{in_pause}-{out_pause}")
    tb = TB(dut, in_pause, out_pause, seed=rng.randint(0, 1 << 30))
    cfg = tb.component.config
    await tb.reset()
    C, ss, writes = random_tables(tb, rng)
    await program(tb, writes)
    await run_rows(tb, C, ss, random_rows(cfg, rng, ROWS), rng)
    assert dut.overflow.value == 0
    tb.record_stats()


@cocotb.test()
async def latency_and_throughput(dut):
    """No gaps, no backpressure, full beats: II = 1 in and out, each row's first output
    ``latency`` cycles after its last input, the next row taken the cycle after."""
    rng = random.Random(1)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    C, ss, writes = random_tables(tb, rng)
    await program(tb, writes)
    rows = random_rows(cfg, rng, ROWS // 2)
    ins, outs = await run_rows(tb, C, ss, rows, rng, partial=False)
    i = o = 0
    formula = 0
    for r, row in enumerate(rows):
        b = -(-len(row) // cfg.elems)
        cin = [c for c, _ in ins[i:i + b]]
        cout = [c for c, _ in outs[o:o + b]]
        assert cin == list(range(cin[0], cin[0] + b)), f"row {r}: input not back to back"
        assert cout == list(range(cout[0], cout[0] + b)), f"row {r}: output not back to back"
        assert cout[0] - cin[-1] == cfg.row_latency(b), \
            f"row {r}: latency {cout[0] - cin[-1]}, formula {cfg.row_latency(b)}"
        if r + 1 < len(rows):
            assert ins[i + b][0] == cout[-1] + 1, f"row {r + 1} not taken right after row {r}"
        formula += 2 * b + cfg.row_latency(b) - 1
        i, o = i + b, o + b
    span = outs[-1][0] - ins[0][0] + 1
    assert span == formula, f"{len(rows)} rows took {span} cycles, formula {formula}"
    tb.record_stats(latency_check={"beats": len(ins), "rows": len(rows), "cycles": span,
                                   "formula": formula,
                                   "formula_text": f"sum over {len(rows)} rows of b beats of "
                                                   "(2 b + row latency - 1)"})


@cocotb.test()
async def reload_and_reset(dut):
    """A new codebook between layers; reset in the middle of a row: nothing stale comes
    out and the next rows are right."""
    rng = random.Random(2)
    tb = TB(dut, "random", "random", seed=9)
    cfg = tb.component.config
    await tb.reset()
    for _ in range(2):
        C, ss, writes = random_tables(tb, rng)
        await program(tb, writes)
        await run_rows(tb, C, ss, random_rows(cfg, rng, 8), rng)
    for b in pack_row(cfg, make_row(cfg, rng, "random") + [0], rng)[:-1]:
        await tb.source.send([tb.pack_in(b)])
    await ClockCycles(dut.clk, 3)
    await tb.reset()
    tb.source.clear()
    n_out = len(tb.out_log.beats)
    await ClockCycles(dut.clk, cfg.row_latency(cfg.max_beats) + 10)
    assert len(tb.out_log.beats) == n_out, "stale beats came out after reset"
    await run_rows(tb, C, ss, random_rows(cfg, rng, 6), rng)
    tb.record_stats()


@cocotb.test()
async def row_longer_than_the_buffer(dut):
    """A row of more than max_len elements: the beats beyond the buffer are dropped,
    ``overflow`` rises, and the cut row is still the golden result of what was kept."""
    rng = random.Random(3)
    tb = TB(dut)
    cfg = tb.component.config
    await tb.reset()
    C, ss, writes = random_tables(tb, rng)
    await program(tb, writes)
    assert dut.overflow.value == 0
    row = make_row(cfg, rng, "random")
    row = (row * (cfg.max_beats * cfg.elems + 2 * cfg.elems))[:cfg.max_beats * cfg.elems + 2 * cfg.elems]
    await run_rows(tb, C, ss, [row], rng, partial=False)
    assert dut.overflow.value == 1
    tb.record_stats()
