"""hdl.component: kept register copies survive Yosys (and are plain registers to simulate)."""

import json
import subprocess

import pytest
from amaranth import Elaboratable, Module, Mux, Signal
from amaranth.back import verilog
from amaranth.sim import Simulator

from fpga.flow import YOSYS, _tool, hierarchy_cells
from hdl.blocks import KEPT_MODULES, kept_logic, kept_register
from hdl.units import get_unit

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


def _synth_cells(m, ports, tmp_path, *, kept=True, module="top"):
    """Yosys ``synth_ecp5`` cell counts of ``module`` (with its submodules) in ``m``, the
    ``keep_*`` submodules kept apart when ``kept``."""
    text = verilog.convert(m, name="top", ports=ports, emit_src=False)
    (tmp_path / "top.v").write_text(text)
    keep = f"setattr -mod -set keep_hierarchy 1 top.{KEPT_MODULES}; " if kept else ""
    script = f"read_verilog top.v; {keep}synth_ecp5 -top top; tee -q -o stat.json stat -json"
    subprocess.run([_tool(YOSYS), "-q", "-p", script], cwd=tmp_path, check=True,
                   capture_output=True)
    stat = json.loads((tmp_path / "stat.json").read_text())
    modules = {name.lstrip("\\"): mod for name, mod in stat["modules"].items()}
    return hierarchy_cells(modules, module)


def _flip_flops(kept, tmp_path):
    dut = _Copies(kept)
    cells = _synth_cells(dut, [dut.d, dut.en, *dut.t, *dut.o], tmp_path, kept=kept)
    return cells.get("TRELLIS_FF", 0)


def _clocked(m, signals, steps, read):
    """Simulate ``m``: per step set ``signals`` to the step's values, tick, ``read(ctx)``."""
    seen = []

    async def bench(ctx):
        for values in steps:
            for sig, v in zip(signals, values):
                ctx.set(sig, v)
            await ctx.tick()
            seen.append(read(ctx))
    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return seen


@pytest.mark.parametrize("kept", [False, True])
def test_copies_survive_synthesis(kept, tmp_path):
    """Plain copies of one register are folded into one by Yosys; kept ones stay apart."""
    assert _flip_flops(kept, tmp_path) == (COPIES if kept else 1) * WIDTH


def test_copies_simulate_as_registers():
    dut = _Copies(kept=True)
    seen = _clocked(dut, [dut.d, dut.en], [(5, 1), (9, 0), (12, 1), (3, 1)],
                    lambda ctx: [ctx.get(o) for o in dut.o])
    assert seen == [[5] * COPIES, [5] * COPIES, [12] * COPIES, [3] * COPIES]


def test_orizuru_lists_the_pattern():
    assert KEPT_MODULES in get_unit("orizuru").keep_modules.split()


def test_copy_built_inside_simulates_as_a_register():
    """``inside=True`` builds the value's logic in the copy: it still simulates as the register
    of that value (q = the inputs of the cycle before)."""
    d, x = Signal(WIDTH), Signal(WIDTH)
    m = Module()
    q = kept_register(m, (d + x)[:WIDTH], "inside", reset_less=False, inside=True)
    seen = _clocked(m, [d, x], [(5, 0), (9, 1), (12, 2), (3, 15)], lambda ctx: ctx.get(q))
    assert seen == [5, 10, 14, 2]        # (d + x) wraps at 16: 3 + 15 -> 2


def _set_or_take(kept_copy):
    """A register that is set to all ones by ``s`` and takes ``x`` when ``p`` (``s`` first)."""
    x, s_, p = Signal(WIDTH), Signal(), Signal()
    m = Module()
    q = kept_copy(m, Mux(s_, (1 << WIDTH) - 1, x), s_ | p)
    o = Signal(WIDTH)
    m.d.comb += o.eq(q)
    return m, (x, s_, p), o


def test_copy_inside_with_enable_simulates_as_a_register():
    """``inside=True`` with an ``enable``: the copy keeps its value while the enable is low."""
    m, ports, o = _set_or_take(
        lambda m, v, en: kept_register(m, v, "sp", enable=en, reset_less=False, inside=True))
    steps = [(5, 0, 1), (9, 0, 0), (2, 1, 0), (3, 0, 0), (6, 0, 1), (7, 1, 1)]
    seen = _clocked(m, ports, steps, lambda ctx: ctx.get(o))
    assert seen == [5, 5, 15, 15, 6, 15]


def test_copy_inside_folds_a_constant_select_into_the_flip_flop(tmp_path):
    """Built inside, ``Mux(s, constant, x)`` with the enable ``s | p`` needs no LUT in front of
    the flip-flops' d: ``s`` becomes their synchronous set, ``s | p`` their clock enable (one
    LUT for all bits).  Without a reset (a reset would take the set/reset input) and with
    the constant as the initial value (an ECP5 flip-flop starts at its set/reset value)."""
    m, ports, o = _set_or_take(
        lambda m, v, en: kept_register(m, v, "sp", enable=en, init=(1 << WIDTH) - 1,
                                       inside=True))
    cells = _synth_cells(m, [*ports, o], tmp_path, module="top.keep_sp")
    assert cells.get("TRELLIS_FF") == WIDTH
    assert cells.get("LUT4", 0) == 1


def test_kept_logic_copies_survive_and_compute():
    """kept_logic: copies of one expression stay apart in synthesis and compute it."""
    a, b = Signal(WIDTH), Signal(WIDTH)
    m = Module()
    outs = [kept_logic(m, a & ~b, f"and{c}") for c in range(COPIES)]
    seen = []

    async def bench(ctx):
        for av, bv in [(15, 5), (6, 3)]:
            ctx.set(a, av)
            ctx.set(b, bv)
            seen.append([ctx.get(q) for q in outs])
    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [[10] * COPIES, [4] * COPIES]


def test_kept_logic_copies_are_not_merged(tmp_path):
    a, b = Signal(WIDTH), Signal(WIDTH)
    m = Module()
    outs = [kept_logic(m, a & ~b, f"and{c}") for c in range(COPIES)]
    o = Signal(WIDTH * COPIES)
    m.d.comb += o.eq(sum((q << (WIDTH * c) for c, q in enumerate(outs)), 0))
    for c in range(COPIES):
        cells = _synth_cells(m, [a, b, o], tmp_path, module=f"top.keep_and{c}")
        assert cells.get("LUT4") == WIDTH


def test_component_takes_its_config_or_parameters():
    """A unit is built from its configuration object as it is, or from keyword parameters
    whose defaults live only in the configuration class; mixing them, a configuration of
    another unit or an unknown parameter is a clear error."""
    from base.config import ImuBaselineConfig, ImuConfig, QuantizerConfig
    from hdl.imu import Imu
    from hdl.quantizer import ActivationQuantizer
    cfg = QuantizerConfig(elems=2)
    assert ActivationQuantizer(cfg).config is cfg
    assert ActivationQuantizer(elems=2).config == cfg
    assert ActivationQuantizer().config == QuantizerConfig()
    with pytest.raises(TypeError, match="quantizer: pass a configuration or keyword parameters, "
                                        "not both"):
        ActivationQuantizer(cfg, ba=3)
    with pytest.raises(TypeError, match="imu: config must be an instance of ImuConfig, got ImuBaselineConfig"):
        Imu(ImuBaselineConfig())
    with pytest.raises(TypeError, match=r"quantizer: unknown parameter 'lanes' \(parameters: "
                                        r"width, ba, elems\)"):
        ActivationQuantizer(lanes=2)
    assert Imu(ImuConfig(outputs=2)).config.outputs == 2


def test_written_files_follow_the_umask(tmp_path):
    """Output files get 0o666 & ~umask, like any file a program writes, not the 0o600 of
    a temporary file."""
    import os
    import stat
    from base.files import write_files
    old = os.umask(0o022)
    try:
        (path,) = write_files(tmp_path / "a", {"x.v": "module x; endmodule\n"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o644
        os.umask(0o027)
        (path,) = write_files(tmp_path / "b", {"x.v": "module x; endmodule\n"})
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
    finally:
        os.umask(old)
