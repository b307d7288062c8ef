"""Verilator --lint-only -Wall on the generated Verilog.

Two warning kinds come from Amaranth's Verilog backend itself and are
accepted: PROCASSINIT (each register is declared with its reset value as an
initializer and assigned in its always block) and UNUSEDSIGNAL (debug aliases
such as ``i__payload.x[0]`` and names whose logic merged into other nets).
Any other kind (WIDTH, UNDRIVEN, MULTIDRIVEN, LATCH, ...) fails the test.
"""

import pytest

from kllm.cli import lint_warnings
from hdl.generate import emit
from kllm.sim import _path_with_venv
from hdl.units import get_unit

BACKEND_KINDS = {"PROCASSINIT", "UNUSEDSIGNAL"}


@pytest.mark.parametrize("params", [[], ["ba=1", "elems=1"], ["ba=8", "elems=3", "width=12"],
                                    ["width=32", "elems=16", "ba=5"]])
def test_quantizer_lint(params, build_dir):
    unit = get_unit("quantizer")
    netlist, _ = emit(unit, unit.config(params), build_dir)
    kinds = {w.split(":")[0].removeprefix("%Warning-") for w in lint_warnings(netlist, _path_with_venv())}
    assert kinds <= BACKEND_KINDS, kinds - BACKEND_KINDS


# Orizuru: WIDTHEXPAND also comes from the backend, which writes a zero-extended operand
# (a lane number, a count, a constant) at its own width; the arithmetic is exact.
@pytest.mark.parametrize("unit, params", [
    ("orizuru", []), ("orizuru", ["merge=0", "elems=3", "k=5", "max_len=40"]),
    ("orizuru", ["elems=1", "k=1", "max_len=1"]), ("orizuru_baseline", ["k=4"]),
])
def test_orizuru_lint(unit, params, build_dir):
    u = get_unit(unit)
    netlist, _ = emit(u, u.config(params), build_dir)
    kinds = {w.split(":")[0].removeprefix("%Warning-") for w in lint_warnings(netlist, _path_with_venv())}
    # DECLFILENAME: with ce_modules=1 (the default) each compare-exchange is a module of its
    # own in the unit's one Verilog file, whose name is the top module's
    assert kinds <= BACKEND_KINDS | {"WIDTHEXPAND", "DECLFILENAME"}, kinds - BACKEND_KINDS


# Index-domain nonlinear units.  The table units' bank decode (`addr[hi] == k`) adds two
# kinds written by the backend: WIDTHEXPAND (the constant k at its own width) and
# WIDTHTRUNC (`!x` on a multi-bit x, meaning x == 0).  The row units' FSMs add a third,
# CASEINCOMPLETE (a state register's case without the unused encodings).
@pytest.mark.parametrize("unit, params, extra", [
    ("lut", ["ba=8", "elems=3"], {"WIDTHTRUNC", "WIDTHEXPAND"}),
    ("product", [], {"WIDTHTRUNC", "WIDTHEXPAND"}),
    ("softmax", ["max_len=40"], {"CASEINCOMPLETE", "WIDTHTRUNC", "WIDTHEXPAND"}),
    ("norm", ["max_len=40", "rms=1"], {"CASEINCOMPLETE", "WIDTHTRUNC", "WIDTHEXPAND"}),
    ("softmax_baseline", [], {"CASEINCOMPLETE", "WIDTHTRUNC", "WIDTHEXPAND"}),
    ("norm_baseline", [], {"CASEINCOMPLETE", "WIDTHTRUNC", "WIDTHEXPAND"}),
])
def test_nonlinear_lint(unit, params, extra, build_dir):
    u = get_unit(unit)
    netlist, _ = emit(u, u.config(params), build_dir)
    kinds = {w.split(":")[0].removeprefix("%Warning-") for w in lint_warnings(netlist, _path_with_venv())}
    assert kinds <= BACKEND_KINDS | extra, kinds - BACKEND_KINDS - extra

# IMU: besides WIDTHEXPAND (above), the backend writes `x == 0` as `!x` on a multi-bit x and a
# variable word select as a right shift assigned to the word's width (WIDTHTRUNC); both exact.
@pytest.mark.parametrize("unit, params", [
    ("imu", []), ("imu", ["outputs=3", "elems=1", "outliers=0"]), ("imu_baseline", ["elems=8"]),
])
def test_imu_lint(unit, params, build_dir):
    u = get_unit(unit)
    netlist, _ = emit(u, u.config(params), build_dir)
    kinds = {w.split(":")[0].removeprefix("%Warning-") for w in lint_warnings(netlist, _path_with_venv())}
    # DECLFILENAME: the block-RAM and multiplier wrappers (kllm_imu_bram, kllm_imu_mul) are
    # modules of their own in the unit's one Verilog file, whose name is the top module's
    extra = {"WIDTHEXPAND", "WIDTHTRUNC", "DECLFILENAME"}
    assert kinds <= BACKEND_KINDS | extra, kinds - BACKEND_KINDS - extra
