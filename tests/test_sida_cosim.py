"""SiDA host driver + RTL IMU co-simulation on Icarus and Verilator (testbench/test_sida.py).

A real case: layer 1 of the MoE made from all-MiniLM-L6-v2 on a real
evaluation sentence, the controller's first expert (96 neurons) taken from
the buffer slot it was written into, three real tokens routed to it.  The
IMU is configured so one expert matrix is a few tiles (L = 8, P = 4,
k_max = 384: W1 is 12 tiles of 8 x 384, W2 48 tiles of 8 x 96).
"""

import dataclasses
from pathlib import Path

import pytest
import torch

from golden.moe import cosine
from kllm.sim import run_bench
from hdl.units import get_unit


ROOT = Path(__file__).resolve().parent.parent
IMU = {"outputs": 8, "elems": 4, "k_max": 384}


@pytest.fixture(scope="module")
def scenario():
    from golden.minilm import load_minilm
    from golden.sida import cosim_scenario
    from golden.sida_eval import load_split
    model = load_minilm()
    split = load_split(model, 16, ROOT / "build" / "tests" / "sida-cache")
    return cosim_scenario(model, split, layer=1, tokens=3)


def test_scenario_is_a_real_expert_run(scenario):
    """The golden integers of the scenario are the expert's computation: the float output
    rebuilt from them is close to the float expert (W4A4 K-Means with 8 + 8 outliers), and
    the expert ran from the slot the controller had written it into."""
    assert len(scenario["tokens"]) == 3
    assert (1, scenario["expert"]) in [k for s, k in scenario["writes"] if s == scenario["slot"]]
    cos = cosine(scenario["out"].float(), scenario["reference"])
    assert float(cos.min()) > 0.95, f"cosine of the quantized expert to float: {cos.tolist()}"
    for which in ("first", "second"):
        Iw, Cw, ia, Ca, shift, r, y = scenario[which]
        assert (r != 0).any(), f"{which}: the real tokens have no outliers"
        assert y.abs().max() > 0
    # the bench's cycle check covers both regimes of the IMU's schedule: W1 (B = 96 beats a
    # token) streams at II = 1, W2 (B = 24) is bound by the tail (2**bw + shift + 16 outliers)
    from base.config import ImuConfig
    cfg = ImuConfig(**IMU)
    for which, streams in (("first", True), ("second", False)):
        Iw, _, _, _, shift, r, _ = scenario[which]
        B = -(-Iw.shape[1] // cfg.elems)
        n_out = int((r != 0).sum(1).max())
        assert cfg.streams(B, shift, n_out) == streams, (which, B, shift, n_out)


@pytest.mark.parametrize("sim", ["icarus", "verilator"])
def test_expert_on_rtl_imu(sim, scenario, build_dir):
    unit = dataclasses.replace(get_unit("imu"), bench="testbench.test_sida")
    config = unit.config([f"{k}={v}" for k, v in IMU.items()])
    path = build_dir / "scenario.pt"
    torch.save(scenario, path)
    result = run_bench(unit, config, sim, build_dir, quiet=True,
                       extra_env={"KLLM_SIDA_SCENARIO": str(path)})
    assert result["tests"] == 1 and result["failed"] == 0
