"""A pin-light synthesis harness around a generated unit.

A unit's ports are far wider than any package has pins (P lanes x 16 bits
in and out), so the harness feeds every input port from one serial-in shift
register and folds every registered output bit into one pin through a
pipelined XOR tree.  Every unit input and output stays observable, so Yosys
can remove nothing, and every path into and out of the unit starts and ends
at a flip-flop, as it would inside a larger design.

The unit is instantiated by name (``Instance``) from its own netlist, so the
synthesized unit is exactly the Verilog that ``kllm verilog`` writes.  The
flow keeps the unit's hierarchy, so its own cell counts are read apart from
the harness's.
"""

from amaranth import Cat, ClockSignal, Elaboratable, Instance, Module, ResetSignal, Signal
from amaranth.back import verilog

__all__ = ["Harness", "harness_verilog"]

HARNESS_TOP = "kllm_harness"


class Harness(Elaboratable):
    """Wraps the module ``toplevel`` whose ports are described by ``ports`` (from the port map)."""

    def __init__(self, toplevel, ports):
        self.toplevel = toplevel
        self.ports = [p for p in ports if p["name"] not in ("clk", "rst")]
        self.sin = Signal()
        self.sout = Signal()

    def elaborate(self, platform):
        m = Module()
        inputs = [(p["name"], Signal(p["width"], name=f"u_{p['name']}"))
                  for p in self.ports if p["direction"] == "input"]
        outputs = [(p["name"], Signal(p["width"], name=f"u_{p['name']}"))
                   for p in self.ports if p["direction"] == "output"]

        width_in = sum(len(s) for _, s in inputs)
        shreg = Signal(width_in)
        m.d.sync += shreg.eq(Cat(self.sin, shreg[:-1]))
        m.d.comb += Cat(s for _, s in inputs).eq(shreg)

        level = Signal(sum(len(s) for _, s in outputs))
        m.d.sync += level.eq(Cat(s for _, s in outputs))
        # XOR tree, 4 inputs per LUT level, a register after each level
        while len(level) > 1:
            n = (len(level) + 3) // 4
            nxt = Signal(n)
            m.d.sync += [nxt[k].eq(level[4 * k:4 * k + 4].xor()) for k in range(n)]
            level = nxt
        m.d.comb += self.sout.eq(level)

        kwargs = {"i_clk": ClockSignal(), "i_rst": ResetSignal()}
        kwargs.update({f"i_{name}": s for name, s in inputs})
        kwargs.update({f"o_{name}": s for name, s in outputs})
        m.submodules.unit = Instance(self.toplevel, **kwargs)
        return m


def harness_verilog(description):
    h = Harness(description["toplevel"], description["ports"])
    return verilog.convert(h, name=HARNESS_TOP, ports=[h.sin, h.sout], emit_src=False)
