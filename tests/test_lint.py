"""Verilator --lint-only -Wall on the generated Verilog.

Two warning kinds come from Amaranth's Verilog backend itself and are
accepted: PROCASSINIT (each register is declared with its reset value as an
initializer and assigned in its always block) and UNUSEDSIGNAL (debug aliases
such as ``i__payload.x[0]`` and names whose logic merged into other nets).
Any other kind (WIDTH, UNDRIVEN, MULTIDRIVEN, LATCH, ...) fails the test.
"""

import pytest

from fpga.lint import lint
from hdl.generate import emit
from kllm.sim import _path_with_venv
from hdl.units import get_unit

BACKEND_KINDS = {"PROCASSINIT", "UNUSEDSIGNAL"}


def warning_kinds(netlist):
    """The kinds of Verilator's warnings on ``netlist``; an error fails the test."""
    result = lint(netlist, _path_with_venv())
    assert not result.failed, result.errors
    return set(result.warnings)


@pytest.mark.parametrize("params", [[], ["ba=1", "elems=1"], ["ba=8", "elems=3", "width=12"],
                                    ["width=32", "elems=16", "ba=5"]])
def test_quantizer_lint(params, build_dir):
    unit = get_unit("quantizer")
    netlist, _ = emit(unit, unit.config(params), build_dir)
    kinds = warning_kinds(netlist)
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
    kinds = warning_kinds(netlist)
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
    kinds = warning_kinds(netlist)
    assert kinds <= BACKEND_KINDS | extra, kinds - BACKEND_KINDS - extra

# IMU: besides WIDTHEXPAND (above), the backend writes `x == 0` as `!x` on a multi-bit x and a
# variable word select as a right shift assigned to the word's width (WIDTHTRUNC); both exact.
@pytest.mark.parametrize("unit, params", [
    ("imu", []), ("imu", ["outputs=3", "elems=1", "outliers=0"]), ("imu_baseline", ["elems=8"]),
])
def test_imu_lint(unit, params, build_dir):
    u = get_unit(unit)
    netlist, _ = emit(u, u.config(params), build_dir)
    kinds = warning_kinds(netlist)
    # DECLFILENAME: the block-RAM and multiplier wrappers (kllm_imu_bram, kllm_imu_mul) are
    # modules of their own in the unit's one Verilog file, whose name is the top module's
    extra = {"WIDTHEXPAND", "WIDTHTRUNC", "DECLFILENAME"}
    assert kinds <= BACKEND_KINDS | extra, kinds - BACKEND_KINDS - extra


BROKEN = """module kllm_broken(input clk, output reg [3:0] q);
  always @(posedge clk) q <= q + ;
endmodule
"""


def test_lint_fails_on_broken_verilog(tmp_path):
    """A syntax error is an error, not zero warnings: the lint fails and says where."""
    v = tmp_path / "kllm_broken.v"
    v.write_text(BROKEN)
    result = lint(v, _path_with_venv())
    assert result.failed
    assert any("kllm_broken.v:2" in line for line in result.errors), result.errors
    with pytest.raises(AssertionError, match="kllm_broken.v:2"):
        warning_kinds(v)


def test_lint_command_exit_status(capsys, tmp_path, monkeypatch):
    """`kllm lint` exits 1 on a Verilator error and with --strict on an unexpected kind,
    0 on a unit's clean netlist, and groups the warnings by kind."""
    import hdl.generate
    from clirun import run
    rc, out, _ = run(capsys, "lint", "quantizer", "-o", str(tmp_path / "ok"))
    assert rc == 0, out
    assert "PROCASSINIT:" in out and "(expected:" in out and "0 error(s)" in out
    real_emit = hdl.generate.emit

    def emit_text(text):
        """``emit`` that writes ``text`` in place of the unit's netlist."""
        def emit(unit, config, out_dir):
            v, j = real_emit(unit, config, out_dir)
            v.write_text(text)
            return v, j
        return emit

    monkeypatch.setattr(hdl.generate, "emit", emit_text(BROKEN))
    rc, out, _ = run(capsys, "lint", "quantizer", "-o", str(tmp_path / "bad"))
    assert rc == 1
    assert "%Error" in out
    # an unexpected warning kind (a latch) passes by default and fails with --strict
    latch = """module kllm_latch(input en, input d, output reg q);
  always @(*) if (en) q = d;
endmodule
"""
    monkeypatch.setattr(hdl.generate, "emit", emit_text(latch))
    rc, out, _ = run(capsys, "lint", "quantizer", "-o", str(tmp_path / "latch"))
    assert rc == 0 and "UNEXPECTED" in out
    rc, out, _ = run(capsys, "lint", "quantizer", "--strict", "-o", str(tmp_path / "latch2"))
    assert rc == 1 and "--strict: unexpected warning kinds: LATCH" in out
