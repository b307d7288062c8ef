"""cocotb bench of the IMU and its baseline against :mod:`golden.imu`.

One bench for both units (same ports, same results).  The golden host driver
(:func:`golden.imu.tile_programs`) cuts each layer into tiles and says what
to write through the host ports and what to stream; the bench performs those
writes and streams on the simulated netlist, assembles the tiles' results as
the host would and compares them with :func:`golden.imu.index_matmul` and
:func:`golden.imu.dequant_matmul`, bit for bit.  The handshake logs give the
cycle of every accepted beat and result, which one test holds to the cycle
formula of :class:`base.config.ImuConfig`.
"""

import os
import random

import cocotb
import torch
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiStreamSource

from golden.imu import (assemble, dequant_matmul, index_matmul, real_layer_operands,
                        tile_programs)
from hdl.units import get_unit
from testbench.common import TB, AmaranthStreamBus, HandshakeLog, load_description, pause_pattern

torch.set_num_threads(1)


class ImuTB(TB):
    """The common TB plus the outlier stream ``r`` and the host write ports."""

    def __init__(self, dut, in_pause="none", out_pause="none", seed=0):
        super().__init__(dut, in_pause, out_pause, seed)
        self.cfg = self.component.config
        self.r_source = None
        if self.cfg.outliers:
            self.r_source = AxiStreamSource(AmaranthStreamBus(dut, "r"), dut.clk, dut.rst,
                                             byte_size=len(dut.r__payload))
            self.r_source.log.setLevel("WARNING")
            self.r_source.set_pause_generator(pause_pattern(in_pause, seed + 2))
            self.r_log = HandshakeLog(dut, "r", self.counter)
        for port in ("wmem", "wcb", "acb"):
            getattr(dut, f"{port}__en").value = 0

    async def program(self, prog):
        """The host writes of one tile, one per cycle, exactly as the driver lists them.  The
        unit registers them (each lands one cycle later); the tile's first beat may follow in
        the next cycle, so no idle cycle is inserted."""
        dut, c = self.dut, self.component
        mask = lambda v, bits: v & ((1 << bits) - 1)
        for lane, row, idx in prog["weights"]:
            dut.wmem__en.value = 1
            dut.wmem__lane.value = lane
            dut.wmem__addr.value = row
            dut.wmem__data.value = c.wmem_layout.const(idx).as_value().value
            await RisingEdge(dut.clk)
        dut.wmem__en.value = 0
        for lane, j, v in prog["codebooks"]:
            dut.wcb__en.value = 1
            dut.wcb__lane.value = lane
            dut.wcb__addr.value = j
            dut.wcb__data.value = mask(v, self.cfg.cw)
            await RisingEdge(dut.clk)
        dut.wcb__en.value = 0
        for j, v, s in prog["act_codebook"]:
            dut.acb__en.value = 1
            dut.acb__addr.value = j
            dut.acb__data.value = mask(v, self.cfg.ca)
            dut.acb__shift.value = s
            await RisingEdge(dut.clk)
        dut.acb__en.value = 0

    async def run_tile(self, prog):
        """Stream every token of one tile; returns (results per token, cycles of the beats)."""
        cfg = self.cfg
        start = len(self.in_log.beats), len(self.out_log.beats)
        n_beats = sum(len(v) for v in prog["vectors"])
        for v in prog["vectors"]:
            for b in v:
                await self.source.send([self.pack_in(b)])
        n_out = 0
        if cfg.outliers:
            layout = self.component.outlier_layout
            for v in prog["outliers"]:
                for b in v:
                    n_out += 1
                    await self.r_source.send([layout.const(b).as_value().value])
        T = len(prog["vectors"])
        limit = 30 * (n_beats + n_out) + T * (cfg.latency + 2 ** cfg.bw + cfg.shift_max + 40) + 500
        await self.wait_outputs(start[1] + T, timeout_cycles=limit)
        await ClockCycles(self.dut.clk, 4)
        ins = self.in_log.beats[start[0]:]
        outs = self.out_log.beats[start[1]:]
        assert len(ins) == n_beats, f"{len(ins)} input beats accepted of {n_beats}"
        assert len(outs) == T, f"{len(outs)} results for {T} vectors"
        results = []
        for _, bits in outs:
            y = self.unpack_out(bits).y
            results.append([int(y[n]) for n in range(cfg.outputs)])
        return results, [c for c, _ in ins], [c for c, _ in outs]

    async def run_layer(self, Iw, Cw, ia, Ca, shift, residual):
        """The whole layer through the golden driver, checked against both references."""
        programs = tile_programs(self.cfg, Iw, Cw, ia, Ca, shift=shift, residual=residual)
        results, timing = [], []
        for tile, prog in programs:
            await self.program(prog)
            out, ins, outs = await self.run_tile(prog)
            results.append((tile, out))
            timing.append((ins, outs))
        y = assemble(self.cfg, len(Iw), len(ia), results)
        ref = index_matmul(Iw, Cw, ia, Ca, shift=shift, residual=residual)
        assert torch.equal(ref, dequant_matmul(Iw, Cw, ia, Ca, shift=shift, residual=residual))
        bad = (y != ref).nonzero().tolist()
        assert not bad, (f"{len(bad)} results differ from the golden model, first at "
                         f"(token, channel) {bad[0]}: got {int(y[tuple(bad[0])])}, golden "
                         f"{int(ref[tuple(bad[0])])}")
        assert int(self.dut.err.value) == 0, "err set by a stream framed correctly"
        lim = 1 << (self.cfg.ybits - 1)
        assert int(ref.abs().max()) < lim or len(programs) > 1
        return timing


def random_operands(cfg, rng, N, K, T, n_out, shift=None, extreme=False, same=False):
    g = torch.Generator().manual_seed(rng.randint(0, 1 << 30))
    lo_w, lo_a = -(1 << (cfg.cw - 1)), -(1 << (cfg.ca - 1))
    Iw = torch.randint(0, 2 ** cfg.bw, (N, K), generator=g)
    Cw = torch.randint(lo_w, -lo_w, (N, 2 ** cfg.bw), generator=g)
    ia = torch.randint(0, 2 ** cfg.ba, (T, K), generator=g)
    Ca = torch.randint(lo_a, -lo_a, (2 ** cfg.ba,), generator=g)
    r = torch.zeros(T, K, dtype=torch.long)
    n_out = min(n_out, cfg.outliers, K)
    for t in range(T):
        pos = torch.randperm(K, generator=g)[:n_out]
        r[t, pos] = torch.randint(-(1 << cfg.xbits), 1 << cfg.xbits, (len(pos),), generator=g)
        r[t, pos[r[t, pos] == 0]] = 1
    if same:                          # one bucket takes everything
        Iw.fill_(rng.randrange(2 ** cfg.bw))
        ia.fill_(rng.randrange(2 ** cfg.ba))
    if extreme:                       # the largest magnitudes: overflow margins
        Cw.fill_(lo_w)
        Ca.fill_(lo_a)
        r[r != 0] = -(1 << cfg.xbits)
    if shift is None:
        shift = rng.randint(0, cfg.shift_max)
    return Iw, Cw, ia, Ca, shift, r


def sizes(cfg):
    """A small layer shape: more channels than lanes (tiled), K not a multiple of P, and
    more than k_max when k_max is small (tiled along K too)."""
    N = cfg.outputs + max(1, cfg.outputs // 2)
    K = min(cfg.k_max, 5 * cfg.elems + 3)
    if cfg.k_max <= 24:
        K = cfg.k_max + max(1, cfg.k_max // 2)
    if K % cfg.elems == 0 and cfg.elems > 1:
        K -= 1
    return N, K


@cocotb.test()
@cocotb.parametrize(
    (("in_pause", "out_pause"),
     [("none", "none"), ("random", "random"), ("bursty", "bursty")]))
async def random_matrices_match_golden(dut, in_pause, out_pause):
    """Random layers (tiled over lanes and K), random outliers and shifts, gaps, backpressure."""
    rng = random.Random(f"imu-{in_pause}-{out_pause}")
    tb = ImuTB(dut, in_pause, out_pause, seed=rng.randint(0, 1 << 30))
    await tb.reset()
    cfg = tb.cfg
    N, K = sizes(cfg)
    await tb.run_layer(*random_operands(cfg, rng, N, K, 3, rng.randint(1, max(1, cfg.outliers))))
    tb.record_stats()


@cocotb.test()
async def one_bucket_extreme_values(dut):
    """All indices equal (one bucket takes everything), the most negative centroids and
    residuals, the largest shift, K = k_max and full outlier capacity: the overflow margins."""
    rng = random.Random(2)
    tb = ImuTB(dut, "random", "random", seed=3)
    await tb.reset()
    cfg = tb.cfg
    K = min(cfg.k_max, 512 * cfg.elems)
    await tb.run_layer(*random_operands(cfg, rng, cfg.outputs, K, 2, cfg.outliers,
                                        shift=cfg.shift_max, extreme=True, same=True))
    tb.record_stats()


@cocotb.test()
async def outlier_counts(dut):
    """No outliers at all (one zero entry per token), then every token at full capacity."""
    rng = random.Random(4)
    tb = ImuTB(dut, "random", "none", seed=5)
    await tb.reset()
    cfg = tb.cfg
    N, K = sizes(cfg)
    await tb.run_layer(*random_operands(cfg, rng, N, K, 2, 0))
    await tb.run_layer(*random_operands(cfg, rng, cfg.outputs, max(K, cfg.outliers), 3,
                                        cfg.outliers))
    tb.record_stats()


@cocotb.test()
async def cycles_match_formula(dut):
    """Vectors of the shortest length that streams at II = 1, back to back, outliers waiting:
    every beat accepted on consecutive cycles, each result latency + tail_ops - 1 cycles after
    its vector's last beat (FINN-style check of the stated formula)."""
    rng = random.Random(6)
    tb = ImuTB(dut)
    await tb.reset()
    cfg = tb.cfg
    shift, n_out = min(2, cfg.shift_max), min(2, cfg.outliers)
    tail = cfg.tail_ops(shift, n_out)
    B = max(cfg.min_beats, tail)
    K = min(B * cfg.elems, cfg.k_max - cfg.k_max % cfg.elems)
    B = K // cfg.elems
    T = 5
    ops = random_operands(cfg, rng, cfg.outputs, K, T, n_out, shift=shift)
    # the outlier beats are queued first, so they always wait for the tail
    timing = await tb.run_layer(*ops)
    ins, outs = timing[0]
    streams = cfg.streams(B, shift, n_out)
    if streams:
        assert ins == list(range(ins[0], ins[0] + T * B)), "input not back to back at II = 1"
    for t in range(T):
        lat = outs[t] - ins[(t + 1) * B - 1]
        if streams or t == 0:
            assert lat == cfg.latency + tail - 1, \
                f"vector {t}: result {lat} cycles after its last beat, formula {cfg.latency + tail - 1}"
    span = outs[-1] - ins[0] + 1
    formula = T * B + cfg.latency + tail - 1
    if streams:
        assert span == formula, f"{T} vectors of {B} beats took {span} cycles, formula {formula}"
    tb.record_stats(latency_check={"beats": T * B, "cycles": span, "formula": formula,
                                   "ii1": streams, "tail_ops": tail})


def _real_fits(cfg):
    return (cfg.bw == 4 and cfg.ba == 4 and cfg.cw >= 8 and cfg.ca >= 8 and cfg.xbits == 16
            and cfg.outliers >= 16)


def _config():
    description = load_description()
    return get_unit(description["unit"]).config_cls(**description["config"])


# The real layer needs the scheme's formats (W4 A4, 8-bit centroids, 16-bit x, 16 outliers);
# the test exists only in benches of configurations that hold them.
if os.environ.get("KLLM_DESCRIPTION") and _real_fits(_config()):

    @cocotb.test()
    async def real_minilm_layer(dut):
        """all-MiniLM-L6-v2 layer 2 FFN-in: K-Means W4 weights of 2 x L output channels (all
        384 inputs) times A4 activations of 3 real tokens with 8 + 8 outliers each."""
        tb = ImuTB(dut, "random", "random", seed=9)
        await tb.reset()
        cfg = tb.cfg
        Iw, Cw, ia, Ca, shift, r = real_layer_operands(rows=2 * cfg.outputs, tokens=3, k=8)
        assert int((r != 0).sum(1).max()) > 0, "no outliers in the real tokens"
        await tb.run_layer(Iw, Cw, ia, Ca, shift, r)
        tb.record_stats()
