#!/usr/bin/env python3
"""The IMU against its dequantize-and-multiply baseline on ECP5: one table and one plot.

    python scripts/imu_compare.py -o build/imu-compare --points 4x4,8x4 --seeds 3 \\
        --options=,-abc9,-nowidelut --run

runs ``kllm synth`` (Yosys + nextpnr, the same seeds) for both units at every
``LxP`` point and every Yosys option set, one synthesis at a time, into
``OUT/<unit>/<options>/<config>``; without ``--run`` it only reads what is
there.  For each unit and point it keeps the option set with the most GOPS
per kLUT4-equivalent, and writes ``compare.md`` and ``compare.png``.

Figures: MACs/cycle = L x P; GOPS = 2 x MACs/cycle x Fmax (median over
seeds); LUT4-equivalents = LUT4 (a CCU2C carry cell counts as 2) + 6 per
TRELLIS_DPR16X4 (16x4 LUTRAM: the four LUT4s of the two slices that hold it
and the two of the slice that carries its write port, which then takes no
logic; nextpnr's packer counts it so: 4 RAM LUTs + 2 RAMW LUTs) + ``--dsp-lut4`` per MULT18X18D (default 0: DSPs free, shown
apart).  The baseline synthesized with ``-nodsp`` is the same design with its
multipliers in LUTs, so it prices the DSPs.  Both units instantiate their
multipliers as MULT18X18D with input and output registers (Yosys does not
pack registers into ECP5 DSPs); for ``-nodsp`` runs the script builds the
``...LutMultipliers`` variant, the same design with plain ``*`` between the
same registers.
"""

import argparse
import json
from dataclasses import replace
from pathlib import Path

UNITS = ("imu", "imu_baseline")


def option_dir(options):
    return options.strip().replace(" ", "_").lstrip("-").replace("-", "") or "default"


DEVICE_LUT4 = 83640    # LUT4 sites of the ECP5-85k (nextpnr's TRELLIS_COMB count)
LUT4_PER_LUTRAM = 6    # TRELLIS_DPR16X4: 2 RAM slices + the write port's slice


def lut4_eq(res, dsp_lut4):
    return res["LUT4"] + LUT4_PER_LUTRAM * res["LUTRAM"] + dsp_lut4 * res["DSP"]


def load(out):
    rows = []
    for f in sorted(Path(out).glob("*/*/*/synth.json")):
        s = json.loads(f.read_text())
        s["options_dir"] = f.parent.parent.name
        rows.append(s)
    return rows


def figures(s, dsp_lut4):
    c, r = s["config"], s["unit_resources"]
    macs = c["outputs"] * c["elems"]
    fmax = s["fmax_mhz_median"]
    eq = lut4_eq(r, dsp_lut4)
    gops = 2 * macs * fmax / 1000 if fmax else None
    return {"macs": macs, "lut4eq": eq, "gops": gops,
            "gops_per_klut": gops / (eq / 1000) if gops else None,
            "macs_per_klut": macs / (eq / 1000)}


def best(rows, dsp_lut4, exclude=("nodsp",)):
    """Per (unit, L, P): the option set with the most GOPS per kLUT4-eq (placed runs)."""
    out = {}
    for s in rows:
        if s["options_dir"] in exclude or s["fmax_mhz_median"] is None:
            continue
        key = (s["unit"], s["config"]["outputs"], s["config"]["elems"])
        f = figures(s, dsp_lut4)
        if key not in out or f["gops_per_klut"] > figures(out[key], dsp_lut4)["gops_per_klut"]:
            out[key] = s
    return out


def table(rows, dsp_lut4):
    head = ["L", "P", "MACs/cycle", "design", "Yosys options", "LUT4", "LUTRAM", "FF", "DSP",
            "EBR", "LUT4-eq", "Fmax MHz (median)", "Fmax by seed", "GOPS", "GOPS/kLUT4-eq",
            "MACs/cycle per kLUT4-eq"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    key = lambda s: (s["config"]["outputs"] * s["config"]["elems"], s["config"]["outputs"],
                     s["unit"], s["options_dir"])
    for s in sorted(rows, key=key):
        r, f = s["unit_resources"], figures(s, dsp_lut4)
        seeds = ", ".join(f"{v:.0f}" for v in s["fmax_mhz_by_seed"].values())
        fmax = s["fmax_mhz_median"]
        lines.append("| " + " | ".join(str(x) for x in [
            s["config"]["outputs"], s["config"]["elems"], f["macs"], s["unit"],
            s["synth_options"] or "(none)", r["LUT4"], r["LUTRAM"], r["FF"], r["DSP"], r["EBR"],
            f["lut4eq"], "not placed" if fmax is None else f"{fmax:.1f}", seeds or "-",
            "-" if f["gops"] is None else f"{f['gops']:.2f}",
            "-" if f["gops_per_klut"] is None else f"{f['gops_per_klut']:.2f}",
            f"{f['macs_per_klut']:.2f}"]) + " |")
    return "\n".join(lines) + "\n"


def ratios(rows, dsp_lut4):
    """Per point, the best IMU against the best baseline (and the baseline without DSPs)."""
    b = best(rows, dsp_lut4)
    nodsp = {(s["config"]["outputs"], s["config"]["elems"]): s for s in rows
             if s["unit"] == "imu_baseline" and s["options_dir"] == "nodsp"
             and s["fmax_mhz_median"] is not None}
    # area only, both designs with every multiplier in LUTs (placed or not)
    fabric = {(s["unit"], s["config"]["outputs"], s["config"]["elems"]): s for s in rows
              if s["options_dir"] == "nodsp"}
    lines = ["| L | P | IMU options | baseline options | MACs/kLUT4-eq IMU / baseline | "
             "GOPS/kLUT4-eq IMU / baseline | MACs/kLUT4-eq IMU / baseline -nodsp | "
             "GOPS/kLUT4-eq IMU / baseline -nodsp | "
             "both -nodsp: MACs/kLUT4-eq IMU / baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (unit, L, P), s in sorted(b.items(), key=lambda kv: (kv[0][1] * kv[0][2], kv[0][1])):
        if unit != "imu":
            continue
        fi = figures(s, dsp_lut4)
        base = b.get(("imu_baseline", L, P))
        fb = figures(base, dsp_lut4) if base else None
        nd = f"{fi['gops_per_klut'] / figures(nodsp[(L, P)], 0)['gops_per_klut']:.2f}" \
            if (L, P) in nodsp else "-"
        ndm = f"{fi['macs_per_klut'] / figures(fabric[('imu_baseline', L, P)], 0)['macs_per_klut']:.2f}" \
            if ("imu_baseline", L, P) in fabric else "-"
        both = "-"
        if ("imu", L, P) in fabric and ("imu_baseline", L, P) in fabric:
            mi = figures(fabric[("imu", L, P)], 0)["macs_per_klut"]
            mb = figures(fabric[("imu_baseline", L, P)], 0)["macs_per_klut"]
            both = f"{mi / mb:.2f}"
        if base is None and nd == "-" and ndm == "-":
            continue
        lines.append(f"| {L} | {P} | {s['synth_options'] or '(none)'} | "
                     f"{(base['synth_options'] or '(none)') if base else '-'} | "
                     f"{fi['macs_per_klut'] / fb['macs_per_klut']:.2f} | " if fb else
                     f"| {L} | {P} | {s['synth_options'] or '(none)'} | - | - | ")
        if fb:
            lines[-1] += f"{fi['gops_per_klut'] / fb['gops_per_klut']:.2f} | {ndm} | {nd} | {both} |"
        else:
            lines[-1] += f"- | {ndm} | {nd} | {both} |"
    return "\n".join(lines) + "\n"


def plot(rows, dsp_lut4, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    b = best(rows, dsp_lut4)
    series = {}
    for (unit, L, P), s in b.items():
        series.setdefault(unit, []).append(s)
    for s in rows:
        if s["options_dir"] == "nodsp":     # area of every -nodsp run, placed or not
            series.setdefault(f"{s['unit']} -nodsp", []).append(s)
    fig, (ax_a, ax_g) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, ss in sorted(series.items()):
        ss.sort(key=lambda s: figures(s, dsp_lut4)["macs"])
        x = [figures(s, dsp_lut4)["macs"] for s in ss]
        ax_a.plot(x, [figures(s, dsp_lut4)["lut4eq"] for s in ss], "o-", label=label)
        placed = [s for s in ss if s["fmax_mhz_median"]]
        if placed:
            ax_g.plot([figures(s, dsp_lut4)["macs"] for s in placed],
                      [figures(s, dsp_lut4)["gops_per_klut"] for s in placed], "o-", label=label)
    ax_a.set(xlabel="MACs/cycle (L x P)", ylabel="LUT4-equivalents (unit)",
             title=f"area (DSP = {dsp_lut4} LUT4)", xscale="log", yscale="log")
    ax_g.set(xlabel="MACs/cycle (L x P)", ylabel="GOPS per kLUT4-eq", title="efficiency",
             xscale="log")
    ax_a.axhline(DEVICE_LUT4, color="grey", linestyle="--", linewidth=1,
                 label=f"ECP5-85k: {DEVICE_LUT4} LUT4 sites")
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter
    for ax in (ax_a, ax_g):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(LogLocator(base=2))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    fig.suptitle("IMU vs dequantize-and-multiply baseline, ECP5-85k")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(out, points, options, seeds, device, place, units, progress=print):
    from fpga.flow import synthesize
    from hdl.units import get_unit
    for L, P in points:
        for name in units:
            unit = get_unit(name)
            for opt in options:
                u = replace(unit, synth_options=opt)
                if "-nodsp" in opt.split():
                    # the DSP instances (with their registers) would stay: the same design
                    # with plain `*` between the same registers, mapped to LUTs
                    u = replace(u, component=unit.component + "LutMultipliers")
                config = unit.config([f"outputs={L}", f"elems={P}"])
                d = Path(out) / name / option_dir(opt) / config.describe()
                if (d / "synth.json").exists():
                    progress(f"{name} {opt or '(none)'} {L}x{P}: done before, kept")
                    continue
                progress(f"{name} {opt or '(none)'} {L}x{P}: synthesizing")
                s = synthesize(u, config, device, d, seeds=seeds, place=place)
                progress(f"  {s['unit_resources']} Fmax {s['fmax_mhz_median']}")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", default="build/imu-compare", metavar="DIR")
    p.add_argument("--points", default="4x4", help="comma-separated LxP points (default 4x4)")
    p.add_argument("--options", default=",-abc9,-nowidelut",
                   help="comma-separated Yosys option sets to try on both units "
                        "(empty = none; default ',-abc9,-nowidelut')")
    p.add_argument("--nodsp", action="store_true",
                   help="also synthesize the baseline with -nodsp (multipliers in LUTs)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="ecp5-85k")
    p.add_argument("--dsp-lut4", type=int, default=0,
                   help="LUT4s a MULT18X18D counts as in LUT4-eq (default 0)")
    p.add_argument("--units", default=",".join(UNITS),
                   help="comma-separated units to synthesize (default both)")
    p.add_argument("--run", action="store_true", help="synthesize what is missing first")
    p.add_argument("--no-place", action="store_true", help="Yosys only (no Fmax)")
    p.add_argument("--include", default="", metavar="DIRS",
                   help="comma-separated output directories of other runs whose results go "
                        "into the same table and plot (a point found twice is an error)")
    args = p.parse_args()
    include = [d for d in args.include.split(",") if d]
    missing = [d for d in include if not Path(d).is_dir()]
    if missing:
        raise SystemExit(f"--include: no such directory: {', '.join(missing)}")
    points = [tuple(int(v) for v in pt.split("x")) for pt in args.points.split(",")]
    options = args.options.split(",")
    if args.run:
        units = args.units.split(",")
        bad = [u for u in units if u not in UNITS]
        if bad:
            raise SystemExit(f"--units: unknown {', '.join(bad)} (choose from {', '.join(UNITS)})")
        run(args.output, points, options, args.seeds, args.device, not args.no_place, units)
        if args.nodsp:
            run(args.output, points, ["-nodsp"], args.seeds, args.device, not args.no_place,
                ("imu_baseline",))
    rows = [r for d in [args.output, *include] for r in load(d)]
    if not rows:
        raise SystemExit(f"no synth.json under {args.output}/<unit>/<options>/<config>")
    seen = {}
    for r in rows:
        key = (r["unit"], r["options_dir"], json.dumps(r["config"], sort_keys=True))
        if key in seen:
            raise SystemExit(f"the same run twice: {seen[key]} and {r['work_dir']}")
        seen[key] = r["work_dir"]
    text = (f"All runs (DSP counted as {args.dsp_lut4} LUT4):\n\n" + table(rows, args.dsp_lut4)
            + "\nBest option set per design and point, ratios:\n\n" + ratios(rows, args.dsp_lut4))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare.md").write_text(text)
    plot(rows, args.dsp_lut4, out / "compare.png")
    print(text)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")


if __name__ == "__main__":
    main()
