"""Quick Amaranth-simulator checks of the IMU and its baseline against the golden model."""

import random

import pytest
import torch
from amaranth.sim import Simulator

from golden.imu import index_matmul, run_tiled, tile_programs
from hdl.imu import ImuBaselineLutMultipliers, ImuLutMultipliers


HOST_PORTS = ("weights", "codebooks", "act_codebook")


def simulate(dut, program, *, in_gap=lambda c: False, out_stall=lambda c: False,
             r_gap=lambda c: False, log=None, beats=None, order=HOST_PORTS):
    """Program the tile through the host ports (one write per cycle, the ports in ``order``),
    then stream every vector (or ``beats`` as given) from the next cycle; results per token.
    ``log["in"]`` / ``log["out"]``: cycles (0 = the cycle after the last write) of the
    accepted beats and results; ``log["err"]``: the unit's ``err`` flag at the end."""
    cfg = dut.config
    vectors = program["vectors"]
    beats = beats if beats is not None else [b for v in vectors for b in v]
    outl = [b for v in program["outliers"] for b in v] if cfg.outliers else []
    results = []
    log = log if log is not None else {}
    log.update({"in": [], "out": []})

    async def bench(ctx):
        # the host writes, one per cycle: (port, the program's list, the fields of an entry)
        ports = {"weights": (dut.wmem, ("lane", "addr", "data")),
                 "codebooks": (dut.wcb, ("lane", "addr", "data")),
                 "act_codebook": (dut.acb, ("addr", "data", "shift"))}
        for key in order:
            port, fields = ports[key]
            for entry in program[key]:
                ctx.set(port.en, 1)
                for name, value in zip(fields, entry):
                    ctx.set(getattr(port, name), value)
                await ctx.tick()
            ctx.set(port.en, 0)
        k = q = cycle = 0
        while len(results) < len(vectors):
            send = k < len(beats) and not in_gap(cycle)
            ctx.set(dut.i.valid, send)
            if k < len(beats):
                ctx.set(dut.i.payload, beats[k])
            if cfg.outliers:
                rs = q < len(outl) and not r_gap(cycle)
                ctx.set(dut.r.valid, rs)
                if q < len(outl):
                    ctx.set(dut.r.payload, outl[q])
            ctx.set(dut.o.ready, not out_stall(cycle))
            await ctx.delay(1e-9)
            if ctx.get(dut.i.valid) and ctx.get(dut.i.ready):
                log["in"].append(cycle)
                k += 1
            if cfg.outliers and ctx.get(dut.r.valid) and ctx.get(dut.r.ready):
                q += 1
            if ctx.get(dut.o.valid) and ctx.get(dut.o.ready):
                o = ctx.get(dut.o.payload)
                results.append([int(o.y[n]) for n in range(cfg.outputs)])
                log["out"].append(cycle)
            await ctx.tick()
            cycle += 1
            assert cycle < 20 * (len(beats) + len(outl)) + 100 * len(vectors) + 500, "hangs"
        log["err"] = ctx.get(dut.err)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return results


def random_layer(g, cfg, N, K, T, n_out, shift, extreme=False):
    lo_w, hi_w = -(1 << (cfg.cw - 1)), (1 << (cfg.cw - 1))
    lo_a, hi_a = -(1 << (cfg.ca - 1)), (1 << (cfg.ca - 1))
    Iw = torch.randint(0, 2 ** cfg.bw, (N, K), generator=g)
    Cw = torch.randint(lo_w, hi_w, (N, 2 ** cfg.bw), generator=g)
    ia = torch.randint(0, 2 ** cfg.ba, (T, K), generator=g)
    Ca = torch.randint(lo_a, hi_a, (2 ** cfg.ba,), generator=g)
    r = torch.zeros(T, K, dtype=torch.long)
    for t in range(T):
        pos = torch.randperm(K, generator=g)[:n_out]
        r[t, pos] = torch.randint(-(1 << cfg.xbits), 1 << cfg.xbits, (len(pos),), generator=g)
    if extreme:
        Cw.fill_(lo_w)
        Ca.fill_(lo_a)
        r[r != 0] = -(1 << cfg.xbits)
    return Iw, Cw, ia, Ca, r


@pytest.mark.parametrize("cls", [ImuLutMultipliers, ImuBaselineLutMultipliers])
@pytest.mark.parametrize("params, N, K, T, n_out, shift", [
    ({"outputs": 2, "elems": 4, "bw": 2, "ba": 3, "k_max": 16, "outliers": 3}, 3, 37, 4, 3, 2),
    ({"outputs": 3, "elems": 1, "bw": 3, "ba": 2, "k_max": 12, "outliers": 0, "xbits": 10}, 3, 12, 3, 0, 1),
    ({"outputs": 1, "elems": 2, "bw": 1, "ba": 1, "k_max": 5, "outliers": 1, "cw": 4, "ca": 3,
      "xbits": 6}, 2, 9, 5, 1, 3),
])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_random_tiled(cls, params, N, K, T, n_out, shift):
    cfg = cls(**params).config
    g = torch.Generator().manual_seed(N * K + T)
    Iw, Cw, ia, Ca, r = random_layer(g, cfg, N, K, T, n_out, shift)
    rng = random.Random(1)
    run = lambda prog: simulate(cls(**params), prog, in_gap=lambda c: rng.random() < 0.3,
                                out_stall=lambda c: rng.random() < 0.3,
                                r_gap=lambda c: rng.random() < 0.3)
    y = run_tiled(cfg, Iw, Cw, ia, Ca, shift=shift, residual=r, run_tile=run)
    assert torch.equal(y, index_matmul(Iw, Cw, ia, Ca, shift=shift, residual=r))


@pytest.mark.parametrize("cls", [ImuLutMultipliers, ImuBaselineLutMultipliers])
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_framing_errors(cls):
    """Beats without `first` between vectors are dropped, a `first` inside a vector is taken as
    part of it; either sets the sticky `err`; the results stay those of the golden model."""
    params = {"outputs": 2, "elems": 2, "bw": 2, "ba": 2, "k_max": 16, "outliers": 1}
    cfg = cls(**params).config
    g = torch.Generator().manual_seed(11)
    Iw, Cw, ia, Ca, r = random_layer(g, cfg, 2, 7, 3, 1, 1)
    (tile, prog), = tile_programs(cfg, Iw, Cw, ia, Ca, shift=1, residual=r)
    junk = {"idx": [3, 3], "count": 2, "first": 0, "last": 0}
    v = prog["vectors"]
    ref = index_matmul(Iw, Cw, ia, Ca, shift=1, residual=r)
    for beats, what in [
        ([junk] + v[0] + [junk, dict(junk, last=1)] + v[1] + v[2], "dropped"),
        (v[0] + [dict(v[1][0]), dict(v[1][1], first=1)] + v[1][2:] + v[2], "inside"),
    ]:
        log = {}
        out = simulate(cls(**params), prog, beats=beats, log=log)
        assert torch.equal(torch.tensor(out)[:, :2], ref), what
        assert log["err"] == 1, what
    log = {}
    out = simulate(cls(**params), prog, log=log)
    assert torch.equal(torch.tensor(out)[:, :2], ref) and log["err"] == 0


def run_back_to_back(cls, params, B, shift, n_out, T=4):
    dut = cls(**params)
    cfg = dut.config
    g = torch.Generator().manual_seed(5)
    K = B * cfg.elems
    Iw, Cw, ia, Ca, r = random_layer(g, cfg, cfg.outputs, K, T, n_out, shift)
    log = {}
    y = run_tiled(cfg, Iw, Cw, ia, Ca, shift=shift, residual=r,
                  run_tile=lambda prog: simulate(dut, prog, log=log))
    assert torch.equal(y, index_matmul(Iw, Cw, ia, Ca, shift=shift, residual=r))
    return cfg, log["in"], log["out"]


@pytest.mark.parametrize("cls", [ImuLutMultipliers, ImuBaselineLutMultipliers])
@pytest.mark.parametrize("elems", [2, 4])
def test_back_to_back_cycles(cls, elems):
    """At the shortest vector the formula allows: II = 1 and the stated latency, per vector."""
    params = {"outputs": 2, "elems": elems, "bw": 3, "ba": 2, "k_max": 128, "outliers": 2}
    cfg = cls(**params).config
    shift, n_out = 3, 2
    B = max(cfg.min_beats, cfg.tail_ops(shift, n_out))
    assert cfg.streams(B, shift, n_out)
    cfg, ins, outs = run_back_to_back(cls, params, B, shift, n_out)
    T = len(outs)
    assert ins == list(range(ins[0], ins[0] + T * B)), "input not back to back"
    tail = cfg.tail_ops(shift, n_out)
    for t in range(T):
        assert outs[t] - ins[(t + 1) * B - 1] == cfg.latency + tail - 1, (t, outs, ins)
    assert outs[-1] - ins[0] + 1 == T * B + cfg.latency + tail - 1


@pytest.mark.parametrize("cls", [ImuLutMultipliers, ImuBaselineLutMultipliers])
def test_formula_is_tight(cls):
    """One beat fewer than the formula's minimum and the input stalls."""
    params = {"outputs": 1, "elems": 2, "bw": 2, "ba": 2, "k_max": 64, "outliers": 1}
    cfg = cls(**params).config
    B = cfg.min_beats - 1
    assert not cfg.streams(B, 0, 1) and cfg.tail_ops(0, 1) <= B
    _, ins, outs = run_back_to_back(cls, params, B, 0, 1)
    assert ins[-1] - ins[0] + 1 > len(ins), "no input stall below min_beats"


@pytest.mark.parametrize("cls", [ImuLutMultipliers, ImuBaselineLutMultipliers])
@pytest.mark.parametrize("last", HOST_PORTS)
@pytest.mark.filterwarnings("ignore::amaranth.hdl.UnusedElaboratable")
def test_write_then_stream_next_cycle(cls, last):
    """The host ports are registered (a write lands one cycle after it is presented), yet a
    vector may start the cycle after the last write: each port in turn written last, its
    entries in reverse order, so the very last write is one the first beat reads (row 0 of
    lane 0, centroid 0 of lane 0, activation centroid 0 at the first position)."""
    params = {"outputs": 2, "elems": 2, "bw": 2, "ba": 2, "k_max": 8, "outliers": 1}
    cfg = cls(**params).config
    g = torch.Generator().manual_seed(23)
    Iw, Cw, ia, Ca, r = random_layer(g, cfg, 2, 6, 3, 1, 1)
    ia[0, 0] = 0
    Iw[0, 0] = 0
    Ca[0] = 77
    Cw[0, 0] = -55
    (tile, prog), = tile_programs(cfg, Iw, Cw, ia, Ca, shift=1, residual=r)
    prog = dict(prog, **{k: prog[k][::-1] for k in HOST_PORTS})
    assert prog["weights"][-1][:2] == (0, 0) and prog["codebooks"][-1][:2] == (0, 0)
    assert prog["act_codebook"][-1][0] == 0
    order = tuple(k for k in HOST_PORTS if k != last) + (last,)
    log = {}
    out = simulate(cls(**params), prog, log=log, order=order)
    assert log["in"][0] == 0, f"first beat taken {log['in'][0]} cycles after the last write"
    assert torch.equal(torch.tensor(out)[:, :2], index_matmul(Iw, Cw, ia, Ca, shift=1,
                                                               residual=r))
