"""Shared cocotb bench machinery: the unit's description, stream drivers, handshake log.

A bench reads the JSON description written beside the netlist
(``KLLM_DESCRIPTION``), rebuilds the unit's Amaranth component from the
configuration in it, and packs/unpacks payloads with the component's own
layouts, so bit positions have one source of truth.
"""

import json
import logging
import os
import random
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamSink, AxiStreamSource

from hdl.units import get_unit

CLOCK_PERIOD_NS = 10


def load_description():
    with open(os.environ["KLLM_DESCRIPTION"]) as f:
        return json.load(f)


def build_component(description):
    """The Amaranth component the netlist was generated from (for its layouts)."""
    unit = get_unit(description["unit"])
    return unit.build(unit.config_cls(**description["config"]))


class AmaranthStreamBus(AxiStreamBus):
    """An ``amaranth.lib.stream`` port (``<name>__payload/valid/ready``) seen as AXI-Stream."""

    _signals = {"tdata": "payload"}
    _optional_signals = {"tvalid": "valid", "tready": "ready"}

    def __init__(self, entity, name):
        super().__init__(entity, name, bus_separator="__")


def pause_pattern(kind, seed):
    """A pause generator for cocotbext-axi: ``None`` (never pause), ``"random"`` or ``"bursty"``."""
    if kind == "none":
        return None
    rng = random.Random(seed)

    def gen():
        while True:
            if kind == "random":
                yield rng.random() < 0.4
            else:  # bursty: long runs of pause and of flow
                for _ in range(rng.randint(1, 12)):
                    yield False
                for _ in range(rng.randint(1, 8)):
                    yield True
    return gen()


class HandshakeLog:
    """Records ``(cycle, payload)`` of every completed handshake on a stream port."""

    def __init__(self, dut, name, clock_counter):
        self.rst = dut.rst
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.counter = clock_counter
        self.beats = []
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.counter.clk)
            await ReadOnly()
            if self.rst.value == 0 and self.valid.value == 1 and self.ready.value == 1:
                self.beats.append((self.counter.cycle, int(self.payload.value)))


class CycleCounter:
    def __init__(self, clk):
        self.clk = clk
        self.cycle = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        while True:
            await RisingEdge(self.clk)
            self.cycle += 1


class TB:
    """Clock, reset, stream source and sink on ports ``i`` and ``o``, handshake logs."""

    def __init__(self, dut, in_pause="none", out_pause="none", seed=0):
        self.dut = dut
        self.description = load_description()
        self.component = build_component(self.description)
        self.started = time.perf_counter()
        # every input driven from time 0 and the first rising clock edge half a period later:
        # in a four-state simulator (Icarus) an edge at time 0 clocked the still undriven
        # (X) inputs into the reset-less datapath, and four-state pessimism could turn that
        # bubble into X valid bits further on (the hardware and the two-state simulators
        # start from 0)
        dut.i__payload.value = 0
        dut.i__valid.value = 0
        dut.rst.value = 1
        cocotb.start_soon(Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=False))
        self.counter = CycleCounter(dut.clk)
        in_width = len(dut.i__payload)
        out_width = len(dut.o__payload)
        self.source = AxiStreamSource(AmaranthStreamBus(dut, "i"), dut.clk, dut.rst,
                                      byte_size=in_width)
        self.sink = AxiStreamSink(AmaranthStreamBus(dut, "o"), dut.clk, dut.rst,
                                  byte_size=out_width)
        for driver in (self.source, self.sink):
            driver.log.setLevel(logging.WARNING)  # they log every beat at INFO
        self.source.set_pause_generator(pause_pattern(in_pause, seed))
        self.sink.set_pause_generator(pause_pattern(out_pause, seed + 1))
        self.in_log = HandshakeLog(dut, "i", self.counter)
        self.out_log = HandshakeLog(dut, "o", self.counter)

    async def reset(self, cycles=3):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, cycles)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def pack_in(self, value):
        return self.component.in_layout.const(value).as_value().value

    def unpack_out(self, bits):
        return self.component.out_layout.from_bits(bits)

    async def wait_outputs(self, count, timeout_cycles):
        """Wait until ``count`` output beats were logged; fail after ``timeout_cycles``."""
        for _ in range(timeout_cycles):
            if len(self.out_log.beats) >= count:
                return
            await RisingEdge(self.dut.clk)
        raise AssertionError(f"timeout: {len(self.out_log.beats)} of {count} output beats "
                             f"after {timeout_cycles} cycles")

    def check_pipelined(self, ins, outs, latency):
        """Beats in and out (``[(cycle, payload)]``, one output per input) of a run with no
        gaps and no backpressure: the input took a beat every cycle (II = 1), every beat
        left exactly ``latency`` cycles after it came in, ``n`` beats took ``n + latency``
        cycles; the figures go to the stats."""
        in_cycles, out_cycles = [c for c, _ in ins], [c for c, _ in outs]
        assert in_cycles == list(range(in_cycles[0], in_cycles[0] + len(ins))), \
            "input not back to back"
        for k, (ci, co) in enumerate(zip(in_cycles, out_cycles)):
            assert co - ci == latency, f"beat {k}: latency {co - ci}, formula {latency}"
        span = out_cycles[-1] - in_cycles[0] + 1
        assert span == len(ins) + latency, f"{len(ins)} beats took {span} cycles"
        self.record_stats(latency_check={"beats": len(ins), "cycles": span,
                                         "formula": len(ins) + latency})

    async def reset_in_flight(self, cycles):
        """Let the queued input run for ``cycles`` cycles, then reset and drop what the
        source still holds.  Returns the beats logged in and out before the reset."""
        await ClockCycles(self.dut.clk, cycles)
        await self.reset()
        self.source.clear()
        return list(self.in_log.beats), list(self.out_log.beats)

    def record_stats(self, **extra):
        """Append this test's simulated cycles and wall time to ``KLLM_STATS``, if set."""
        path = os.environ.get("KLLM_STATS")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"cycles": self.counter.cycle,
                                    "wall_s": time.perf_counter() - self.started,
                                    **extra}) + "\n")
