"""Co-simulation of the SiDA host driver with the RTL IMU (cocotb).

The scenario (:func:`golden.sida.cosim_scenario`, prepared by the pytest
wrapper and passed as a file in ``KLLM_SIDA_SCENARIO``): the controller ran
one MoE layer of a real sentence and wrote its experts into a recording
weight buffer; the first expert it ran is taken from its slot with real
tokens routed to it.  Here the golden host driver writes that expert's
weight indices and codebooks into the IMU through its host ports, tile by
tile, streams the tokens, and the bench checks, for both of the expert's
matrices (W1 rows, then W2 columns after the host's scaling, bias and GELU):

* the results equal the golden integers, bit for bit;
* every tile's stream takes the cycles of :func:`golden.imu.stream_schedule`
  (each first beat and each result on the cycle the model gives), and the
  whole matrix, host writes included, the cycles of
  :func:`golden.imu.layer_cycles`, which the SiDA cycle model
  (:func:`golden.sida.imu_cycles`) is built on.
"""

import os

import cocotb
import torch

from golden.imu import assemble, layer_cycles, stream_schedule, tile_programs, tiles
from golden.sida import imu_cycles
from testbench.test_imu import ImuTB

torch.set_num_threads(1)


def _scenario():
    path = os.environ.get("KLLM_SIDA_SCENARIO")
    if not path:
        raise RuntimeError("KLLM_SIDA_SCENARIO is not set: run this bench through "
                           "tests/test_sida_cosim.py, which prepares the scenario")
    return torch.load(path, weights_only=False)


@cocotb.test()
async def expert_ffn_through_host_ports(dut):
    """The controller's first expert, written through the host ports and run on real tokens:
    golden integers and the cycle model, exactly."""
    sc = _scenario()
    tb = ImuTB(dut)            # no gaps, no backpressure: the cycle model's operating case
    await tb.reset()
    cfg = tb.cfg
    report = {}
    for which in ("first", "second"):
        Iw, Cw, ia, Ca, shift, r, y = sc[which]
        N, K = Iw.shape
        T = len(ia)
        results, tails, measured = [], [], 0
        for tile, prog in tile_programs(cfg, Iw, Cw, ia, Ca, shift=shift, residual=r):
            await tb.program(prog)
            writes = len(prog["weights"]) + len(prog["codebooks"]) + len(prog["act_codebook"])
            out, ins, outs = await tb.run_tile(prog)
            results.append((tile, out))
            beats = [len(v) for v in prog["vectors"]]
            tail = [cfg.tail_ops(shift, len(o)) for o in prog["outliers"]]
            tails.append(tail)
            first, done = stream_schedule(cfg, beats, tail)
            starts = [ins[sum(beats[:t])] - ins[0] for t in range(T)]
            got = [c - ins[0] for c in outs]
            assert starts == first and got == done, (
                f"{which} matrix, tile {tile}: vectors started at {starts} and results left at "
                f"{got} cycles after the first beat; the cycle model says {first} and {done}")
            measured += writes + got[-1] + 1
        y_rtl = assemble(cfg, N, T, results)
        bad = (y_rtl != y).nonzero().tolist()
        assert not bad, (f"{which} matrix: {len(bad)} results differ from the golden integers, "
                         f"first at (token, channel) {bad[0]}: got {int(y_rtl[tuple(bad[0])])}, "
                         f"golden {int(y[tuple(bad[0])])}")
        model = layer_cycles(cfg, N, K, tails)
        assert measured == model, f"{which} matrix: {measured} cycles, layer_cycles {model}"
        flat = {t for tt in tails for t in tt}
        if len(flat) == 1:         # every token the same tail work: the SiDA model's case
            beats_out = flat.pop() - cfg.combine_ops - shift
            cm = imu_cycles(N, K, T, imu=cfg, shift=shift, outlier_beats=beats_out)
            assert measured == cm, f"{which} matrix: {measured} cycles, imu_cycles {cm}"
        report[which] = {"N": N, "K": K, "tokens": T, "tiles": len(tiles(cfg, N, K)),
                         "cycles": measured, "model": model}
        dut._log.info("%s matrix %d x %d, %d tokens: %d cycles (model %d), results exact",
                      which, N, K, T, measured, model)
    tb.record_stats(cosim=report)
