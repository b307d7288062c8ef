"""Design-space sweeps: synthesize a grid of configurations, write a table and a plot."""

import itertools
import json
from pathlib import Path

from fpga.flow import synthesize
from base.errors import KllmError
from base.files import write_files

__all__ = ["parse_grid", "sweep", "markdown_table", "plot"]

COLUMNS = ("LUT4", "FF", "LUTRAM", "DSP", "EBR")


def parse_grid(unit, fixed, varied):
    """Configurations from ``--set`` strings and ``--vary name=v1,v2,...`` strings."""
    axes = []
    for item in varied:
        name, sep, values = item.partition("=")
        if not sep or not values:
            raise KllmError(f"--vary expects name=v1,v2,..., got {item!r}")
        try:
            axes.append((name.strip(), [int(v, 0) for v in values.split(",")]))
        except ValueError:
            raise KllmError(f"--vary {name}: values must be integers, got {values!r}") from None
    names = [n for n, _ in axes]
    if len(set(names)) != len(names):
        raise KllmError(f"--vary names a parameter twice: {', '.join(names)}")
    configs = []
    for combo in itertools.product(*(v for _, v in axes)):
        assignments = list(fixed) + [f"{n}={v}" for n, v in zip(names, combo)]
        configs.append(unit.config(assignments))  # checks every point before any work
    return names, configs


def sweep(unit, configs, device, out_dir, *, seeds=3, speed=None, progress=None):
    rows = []
    for k, config in enumerate(configs):
        def say(text, k=k, config=config):
            if progress:
                progress(f"[{k + 1}/{len(configs)}] {config.describe()}: {text}")
        rows.append(synthesize(unit, config, device, Path(out_dir) / config.describe(),
                               seeds=seeds, speed=speed, progress=say))
    return rows


def markdown_table(rows, varied):
    head = ["unit", *varied, *COLUMNS, "Fmax MHz (median)", "Fmax by seed"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for s in rows:
        r = s["unit_resources"]
        seeds = ", ".join(f"{v:.0f}" for v in s["fmax_mhz_by_seed"].values())
        cells = [s["unit"], *(str(s["config"][n]) for n in varied), *(str(r[c]) for c in COLUMNS),
                 f"{s['fmax_mhz_median']:.1f}", seeds]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(rows, varied, path, title):
    """LUT4 and Fmax against the first varied parameter, one line per value of the others."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x_name, others = varied[0], varied[1:]
    groups = {}
    for s in rows:
        key = tuple(s["config"][n] for n in others)
        groups.setdefault(key, []).append(s)
    fig, (ax_area, ax_fmax) = plt.subplots(1, 2, figsize=(10, 4))
    for key, group in sorted(groups.items()):
        group.sort(key=lambda s: s["config"][x_name])
        xs = [s["config"][x_name] for s in group]
        label = ", ".join(f"{n}={v}" for n, v in zip(others, key)) or None
        ax_area.plot(xs, [s["unit_resources"]["LUT4"] for s in group], "o-", label=label)
        ax_fmax.plot(xs, [s["fmax_mhz_median"] for s in group], "o-", label=label)
    ax_area.set(xlabel=x_name, ylabel="LUT4 (unit)", title="area")
    ax_fmax.set(xlabel=x_name, ylabel="Fmax MHz (median over seeds)", title="Fmax")
    for ax in (ax_area, ax_fmax):
        ax.grid(True, alpha=0.3)
        if others:
            ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows, varied, out_dir, title):
    out_dir = Path(out_dir)
    table = markdown_table(rows, varied)
    write_files(out_dir, {"sweep.json": json.dumps(rows, indent=2) + "\n", "sweep.md": table})
    plot(rows, varied, out_dir / "sweep.png", title)
    return table


def compare_table(designs, varied):
    """One markdown table of several sweeps over the same grid, with area ratios to the last.

    ``designs`` is ``[(label, rows), ...]``; the last design is the reference of the ratios.
    """
    key = lambda s: tuple(s["config"][n] for n in varied)
    ref_label, ref_rows = designs[-1]
    ref = {key(s): s for s in ref_rows}
    head = [*varied, "design", "LUT4", "FF", "Fmax MHz (median)", "Fmax by seed",
            f"LUT4 of {ref_label} / LUT4"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    points = sorted({key(s) for _, rows in designs for s in rows})
    for p in points:
        for label, rows in designs:
            s = next((r for r in rows if key(r) == p), None)
            if s is None:
                continue
            r = s["unit_resources"]
            seeds = ", ".join(f"{v:.0f}" for v in s["fmax_mhz_by_seed"].values())
            ratio = (f"{ref[p]['unit_resources']['LUT4'] / r['LUT4']:.2f}"
                     if p in ref and r["LUT4"] else "")
            fmax = s["fmax_mhz_median"]
            lines.append("| " + " | ".join([*(str(v) for v in p), label, str(r["LUT4"]),
                                            str(r["FF"]),
                                            "not placed" if fmax is None else f"{fmax:.1f}",
                                            seeds, ratio]) + " |")
    return "\n".join(lines) + "\n"


def compare_plot(designs, varied, path, title):
    """LUT4 and Fmax of several designs against the grid points, one line per design."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = lambda s: tuple(s["config"][n] for n in varied)
    points = sorted({key(s) for _, rows in designs for s in rows})
    labels = [", ".join(f"{n}={v}" for n, v in zip(varied, p)) for p in points]
    fig, (ax_area, ax_fmax) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, rows in designs:
        by = {key(s): s for s in rows}
        xs = [j for j, p in enumerate(points) if p in by]
        ax_area.plot(xs, [by[points[j]]["unit_resources"]["LUT4"] for j in xs], "o-", label=label)
        placed = [j for j in xs if by[points[j]]["fmax_mhz_median"] is not None]
        ax_fmax.plot(placed, [by[points[j]]["fmax_mhz_median"] for j in placed], "o-", label=label)
    ax_area.set(ylabel="LUT4 (unit)", title="area", yscale="log")
    ax_fmax.set(ylabel="Fmax MHz (median over seeds)", title="Fmax (placed points)")
    for ax in (ax_area, ax_fmax):
        ax.set_xticks(range(len(points)), labels, rotation=30, ha="right", fontsize=8)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
