"""hdl.component: kept register copies survive Yosys (and are plain registers to simulate)."""

import json
import subprocess

import pytest
from amaranth import Elaboratable, Module, Signal
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga.flow import YOSYS, _tool, hierarchy_cells
from hdl.component import KEPT_MODULES, kept_register
from kllm.units import get_unit

COPIES, WIDTH = 3, 4


class _Copies(Elaboratable):
    """``COPIES`` copies of one enabled register (or plain registers, ``kept=False``), each
    XORed with an input of its own so that every copy has a load."""

    def __init__(self, kept):
        self.kept = kept
        self.d, self.en = Signal(WIDTH), Signal()
        self.t = [Signal(WIDTH, name=f"t{c}") for c in range(COPIES)]
        self.o = [Signal(WIDTH, name=f"o{c}") for c in range(COPIES)]

    def elaborate(self, platform):
        m = Module()
        for c in range(COPIES):
            if self.kept:
                q = kept_register(m, self.d, f"copy{c}", enable=self.en, reset_less=False)
            else:
                q = Signal(WIDTH, name=f"q{c}")
                with m.If(self.en):
                    m.d.sync += q.eq(self.d)
            m.d.comb += self.o[c].eq(q ^ self.t[c])
        return m


def _flip_flops(kept, tmp_path):
    dut = _Copies(kept)
    text = verilog.convert(dut, name="copies", ports=[dut.d, dut.en, *dut.t, *dut.o],
                           emit_src=False)
    (tmp_path / "copies.v").write_text(text)
    keep = f"setattr -mod -set keep_hierarchy 1 copies.{KEPT_MODULES}; " if kept else ""
    script = (f"read_verilog copies.v; {keep}synth_ecp5 -top copies; "
              f"tee -q -o stat.json stat -json")
    subprocess.run([_tool(YOSYS), "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    modules = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    return hierarchy_cells(modules, "copies").get("TRELLIS_FF", 0)


@pytest.mark.parametrize("kept", [False, True])
def test_copies_survive_synthesis(kept, tmp_path):
    """Plain copies of one register are folded into one by Yosys; kept ones stay apart."""
    assert _flip_flops(kept, tmp_path) == (COPIES if kept else 1) * WIDTH


def test_copies_simulate_as_registers():
    dut = _Copies(kept=True)
    seen = []

    async def bench(ctx):
        for step, (d, en) in enumerate([(5, 1), (9, 0), (12, 1), (3, 1)]):
            ctx.set(dut.d, d)
            ctx.set(dut.en, en)
            await ctx.tick()
            seen.append([ctx.get(o) for o in dut.o])
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [[5] * COPIES, [5] * COPIES, [12] * COPIES, [3] * COPIES]


def test_orizuru_lists_the_pattern():
    assert KEPT_MODULES in get_unit("orizuru").keep_modules.split()


def test_copy_built_inside_simulates_as_a_register():
    """``inside=True`` builds the value's logic in the copy: it still simulates as the register
    of that value (q = the inputs of the cycle before)."""
    d, x = Signal(WIDTH), Signal(WIDTH)
    m = Module()
    q = kept_register(m, (d + x)[:WIDTH], "inside", reset_less=False, inside=True)
    seen = []

    async def bench(ctx):
        for dv, xv in [(5, 0), (9, 1), (12, 2), (3, 15)]:
            ctx.set(d, dv)
            ctx.set(x, xv)
            await ctx.tick()
            seen.append(ctx.get(q))
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [5, 10, 14, 2]        # (d + x) wraps at 16: 3 + 15 -> 2
