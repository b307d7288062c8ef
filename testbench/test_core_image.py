"""cocotb bench that runs one program image on the KLLM core (a compiled sentence: ``kllm
run --sim``, the layer test of tests/test_core_cocotb.py).

``KLLM_IMAGE`` names a directory holding ``image.bin`` (the external memory from address 0)
and ``image.json`` (``prog_addr``, ``mem_size``, ``check``).  The image goes into an
``AxiRam`` that never pauses, an ``AxiLiteMaster`` starts the core and waits for done.
With ``check`` the run is held to :class:`golden.interp.Interpreter` on the same image
(every byte of the memory, the error code, CYCLES and every busy and stall counter
exactly: :meth:`testbench.test_core.CoreTB.run`).  The final memory is written to
``final.bin`` and the counters, the error code, the simulated cycles and the wall time to
``result.json`` in the same directory.
"""

import json
import os
import time
from pathlib import Path

import cocotb

from base.isa import STATUS_ERROR_SHIFT, Reg
from testbench.test_core import COUNTERS, CoreTB


@cocotb.test()
async def run_image(dut):
    where = Path(os.environ["KLLM_IMAGE"])
    meta = json.loads((where / "image.json").read_text())
    size = meta["mem_size"]
    tb = CoreTB(dut, mem_size=size)
    await tb.reset()
    image = (where / "image.bin").read_bytes()
    tb.put(0, image + bytes(size - len(image)))
    t0 = time.perf_counter()
    c0 = tb.cycles
    if meta.get("check", True):
        ref, got = await tb.run(meta["prog_addr"], limit=meta.get("max_cycles"))
        error = ref.error
    else:
        await tb.start(meta["prog_addr"])
        status = await tb.wait_done(meta.get("max_cycles") or 500_000_000)
        error = (status >> STATUS_ERROR_SHIFT) & 0xFF
        got = {k: await tb.read(a) for k, a in COUNTERS.items()}
    wall = time.perf_counter() - t0
    sim_cycles = tb.cycles - c0
    (where / "final.bin").write_bytes(tb.ram.read(0, size))
    (where / "result.json").write_text(json.dumps({
        "error": error, "counters": got, "checked": bool(meta.get("check", True)),
        "sim_cycles": sim_cycles, "wall_s": wall,
        "cycles_per_s": sim_cycles / wall if wall else None}, indent=2) + "\n")
    dut._log.info("%d core cycles (%d simulated) in %.1f s: %.0f cycles/s", got["cycles"],
                  sim_cycles, wall, sim_cycles / wall if wall else 0)
    tb.record()
