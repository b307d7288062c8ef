"""Design-space sweeps: synthesize a grid of configurations, write a table and a plot."""

import itertools
import json
from pathlib import Path

from fpga.flow import synthesize
from kllm import KllmError
from kllm.generate import write_files

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


def sweep(unit, configs, device, out_dir, *, seeds=3, progress=None):
    rows = []
    for k, config in enumerate(configs):
        def say(text, k=k, config=config):
            if progress:
                progress(f"[{k + 1}/{len(configs)}] {config.describe()}: {text}")
        rows.append(synthesize(unit, config, device, Path(out_dir) / config.describe(),
                               seeds=seeds, progress=say))
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
