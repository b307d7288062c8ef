"""The IMU's primitive branch as Yosys reads it: the netlist with ``SYNTHESIS`` defined (so
``kllm_imu_mul`` / ``kllm_imu_bram`` instantiate MULT18X18D / DP16KD) and behavioural models of
the two primitives (testbench/ecp5_models.py: Yosys ships none), through the cocotb bench on
Icarus.  One small configuration that takes both generate branches of each wrapper: two
DP16KD per lane (P x bw = 24 bits), a sign-extended 10-bit and a full 18-bit multiplier
operand (cw = 18)."""

import subprocess

import pytest

from kllm.sim import run_bench
from hdl.units import get_unit
from testbench.ecp5_models import write_models

PRIM = {"outputs": 2, "elems": 8, "bw": 3, "ba": 2, "cw": 18, "ca": 4, "k_max": 40, "outliers": 2,
        "xbits": 8}
SYNTH = {"SYNTHESIS": 1}


def _run(unit_name, build_dir, **kw):
    unit = get_unit(unit_name)
    config = unit.config([f"{k}={v}" for k, v in PRIM.items()])
    models = write_models(build_dir / "models" / "ecp5_models.v")
    return config, run_bench(unit, config, "icarus", build_dir, quiet=True,
                             extra_sources=[models], defines=SYNTH, **kw)


def test_configuration_takes_both_wrapper_branches():
    cfg = get_unit("imu").config([f"{k}={v}" for k, v in PRIM.items()])
    assert cfg.elems * cfg.bw > 18 and cfg.depth <= 1024      # 2 DP16KD per lane
    assert cfg.mul_bits < 18 and cfg.cw == 18                  # A extended, B 18 bits wide


@pytest.mark.parametrize("unit_name", ["imu", "imu_baseline"])
def test_primitive_variant_matches_golden(unit_name, build_dir):
    config, result = _run(unit_name, build_dir)
    netlist = (build_dir / f"kllm_{unit_name}.v").read_text()
    assert "MULT18X18D #(" in netlist and "DP16KD #(" in netlist
    assert result["failed"] == 0 and result["tests"] == 6
    lc = result["latency_check"]
    # the first vector's latency is held in the bench; the whole span when it streams
    assert lc["ii1"] == config.streams(lc["beats"] // 5, min(2, config.shift_max),
                                       min(2, config.outliers))


# Wrong but valid register settings: the models simulate them, the results must change.
PLANTS = {
    # the weight rows one cycle early (block RAM output register off on the streaming port)
    "dp16kd_noreg": ('.REGMODE_A("OUTREG")', '.REGMODE_A("NOREG")'),
    # the tail's products one cycle early (DSP output register off)
    "mult_no_output_reg": ('.REG_OUTPUT_CLK("CLK0")', '.REG_OUTPUT_CLK("NONE")'),
}


@pytest.mark.parametrize("plant", list(PLANTS))
def test_primitive_variant_catches_a_wrong_register_setting(plant, build_dir):
    old, new = PLANTS[plant]

    def edit(text):
        assert text.count(old) == 1, old        # once, in the wrapper module
        return text.replace(old, new)

    with pytest.raises(AssertionError, match="cycles_match_formula"):
        _run("imu", build_dir, netlist_filter=edit, testcase="cycles_match_formula")


def test_models_refuse_what_they_do_not_model(tmp_path):
    """A DP16KD in x9 mode is outside the model: the simulation stops naming the parameter."""
    models = write_models(tmp_path / "ecp5_models.v")
    top = tmp_path / "top.v"
    top.write_text("module top; DP16KD #(.DATA_WIDTH_A(9)) ram (); endmodule\n")
    vvp = tmp_path / "a.vvp"
    subprocess.run(["iverilog", "-g2012", "-o", str(vvp), "-s", "top", str(top), str(models)],
                   check=True, capture_output=True)
    out = subprocess.run(["vvp", "-n", str(vvp)], capture_output=True, text=True).stdout
    assert "DP16KD model: DATA_WIDTH_A = 9 not modelled" in out
