"""The equivalence checker (fpga/equiv.py, scripts/equiv.py) tells equal designs from others."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from fpga.equiv import IDENTICAL, NOT_PROVEN, PROVEN, compare

ROOT = Path(__file__).resolve().parent.parent

ADD = """module top(input clk, input [7:0] a, input [7:0] b, output reg [8:0] y);
  initial y = 0;
  always @(posedge clk) y <= a + b;
endmodule
"""
# the same function written another way: operands swapped and widened, a named sum
ADD2 = """module top(input clk, input [7:0] a, input [7:0] b, output [8:0] y);
  reg [8:0] r = 0;
  wire [8:0] s = {1'b0, b} + {1'b0, a};
  always @(posedge clk) r <= s;
  assign y = r;
endmodule
"""
SUB = ADD.replace("a + b", "a - b")

# an anonymous register (numbered names such as Amaranth's $12 are not paired by name)
ANON = r"""module top(input clk, input [7:0] a, output [7:0] y);
  reg [7:0] \$r = 0;
  always @(posedge clk) \$r <= a;
  assign y = \$r + 8'd1;
endmodule
"""

COUNTER = """module top(input clk, input rst, input en, output [3:0] y);
  reg [3:0] cnt = 0;
  always @(posedge clk) if (rst) cnt <= 0; else if (en) cnt <= cnt + 1;
  assign y = cnt[3] ? 4'd0 : cnt;
endmodule
"""

# a memory and a DSP-like primitive kept under `ifdef SYNTHESIS, as in the IMU's netlists
MEM = """module top(input clk, input we, input [3:0] wa, input [3:0] ra, input [7:0] d,
           output [7:0] q);
  reg [7:0] mem [0:15];
  reg [7:0] r = 0;
  always @(posedge clk) begin
    if (we) mem[wa] <= d;
    r <= mem[ra];
  end
`ifdef SYNTHESIS
  VENDOR_PRIMITIVE p (.A(r), .Y(q));
`else
  assign q = r ^ 8'h5a;
`endif
endmodule
"""


def test_byte_identical_text_is_identical(tmp_path):
    r = compare(ADD, ADD, "top", tmp_path)
    assert r.status == IDENTICAL


def test_equivalent_rewrite_is_proven(tmp_path):
    r = compare(ADD, ADD2, "top", tmp_path)
    assert r.status == PROVEN, r.detail


def test_non_equivalent_is_not_proven(tmp_path):
    r = compare(ADD, SUB, "top", tmp_path)
    assert r.status == NOT_PROVEN and "unproven" in r.detail, r.detail


def test_different_initial_value_is_not_proven(tmp_path):
    r = compare(ADD, ADD.replace("initial y = 0", "initial y = 5"), "top", tmp_path)
    assert r.status == NOT_PROVEN and "init" in r.detail, r.detail


def test_different_initial_value_of_an_anonymous_register_is_not_proven(tmp_path):
    """The register's name is not paired (``$r``): the check from the initial state sees it."""
    r = compare(ANON, ANON.replace("= 0;", "= 3;"), "top", tmp_path)
    assert r.status == NOT_PROVEN and "initial state" in r.detail, r.detail


def test_renamed_register_is_proven(tmp_path):
    r = compare(COUNTER, COUNTER.replace("cnt", "count"), "top", tmp_path)
    assert r.status == PROVEN, r.detail


def test_off_by_one_counter_is_not_proven(tmp_path):
    r = compare(COUNTER, COUNTER.replace("cnt[3]", "cnt[2]"), "top", tmp_path)
    assert r.status == NOT_PROVEN, r.detail


def test_memory_and_simulation_model(tmp_path):
    """Memories are mapped to flip-flops; the `else branch of `ifdef SYNTHESIS is read."""
    same = compare(MEM, MEM, "top", tmp_path / "same", prove_identical=True)
    assert same.status == PROVEN and "memories mapped" in same.detail, same.detail
    assert "without SYNTHESIS" in same.detail
    other = compare(MEM, MEM.replace("8'h5a", "8'h5b"), "top", tmp_path / "other")
    assert other.status == NOT_PROVEN, other.detail
    write = compare(MEM, MEM.replace("mem[wa] <= d", "mem[wa] <= ~d"), "top", tmp_path / "w")
    assert write.status == NOT_PROVEN, write.detail


def test_timeout_is_not_proven(tmp_path):
    r = compare(ADD, ADD2, "top", tmp_path, timeout=0.01)
    assert r.status == NOT_PROVEN and "timeout" in r.detail, r.detail


def test_same_amaranth_design_with_renamed_signal_is_proven(tmp_path):
    from amaranth import Elaboratable, Module, Signal
    from amaranth.back import verilog

    class Acc(Elaboratable):
        def __init__(self, name):
            self.x, self.en, self.y = Signal(8), Signal(), Signal(12)
            self.name = name

        def elaborate(self, platform):
            m = Module()
            acc = Signal(12, name=self.name)
            with m.If(self.en):
                m.d.sync += acc.eq(acc + self.x)
            m.d.comb += self.y.eq(acc)
            return m

    def text(name):
        d = Acc(name)
        return verilog.convert(d, name="acc", ports=[d.x, d.en, d.y], emit_src=False)

    a, b = text("total"), text("running_sum")
    assert a != b
    r = compare(a, b, "acc", tmp_path)
    assert r.status == PROVEN, r.detail


def _cli():
    spec = importlib.util.spec_from_file_location("equiv_cli", ROOT / "scripts" / "equiv.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cli_table_covers_every_unit():
    from hdl.units import UNITS
    cli = _cli()
    assert set(cli.CONFIGS) == set(UNITS)
    assert all({} in configs and len(configs) >= 3 for configs in cli.CONFIGS.values())


@pytest.mark.parametrize("args, message", [
    (["--before", "HEAD", "--units", "nosuchunit"], "unknown unit 'nosuchunit'"),
    (["--before", "no-such-rev-xyz", "--units", "lut"], "not a commit"),
])
def test_cli_bad_arguments_exit_2(args, message, tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "equiv.py"), *args,
                        "-o", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], r.stderr


# a register renamed, with a twin register that makes name pairing matter: without the
# hint the renamed pair is left to the fallback, with it the two pair by name
PIPE = """module top(input clk, input [7:0] a, output [7:0] y);
  reg [7:0] old_r = 0;
  reg [7:0] t = 0;
  always @(posedge clk) begin old_r <= a; t <= old_r; end
  assign y = t;
endmodule
"""


def test_name_hints_pair_renamed_registers_but_prove_nothing_false(tmp_path):
    renamed = PIPE.replace("old_r", "new_r")
    r = compare(PIPE, renamed, "top", tmp_path / "hint", renames=[(r"\bold_r\b", "new_r")])
    assert r.status == PROVEN, r.detail
    assert "renamed by the unit's hints" in r.detail
    # a hint on a pair that differs in function leaves it unproven
    wrong = renamed.replace("t <= new_r", "t <= ~new_r")
    r = compare(PIPE, wrong, "top", tmp_path / "wrong", renames=[(r"\bold_r\b", "new_r")],
                struct=False)
    assert r.status == NOT_PROVEN, r.detail
