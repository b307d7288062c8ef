#!/usr/bin/env python3
"""Overlay sweeps of several units over the same grid: one table and one plot.

    python scripts/compare_sweeps.py --vary elems,k -o build/sweep/orizuru-vs-baseline \
        orizuru=build/sweep/orizuru/ecp5-85k/sweep.json \
        orizuru_baseline=build/sweep/orizuru_baseline/ecp5-85k/sweep.json

The last design is the reference of the area ratio column.
"""

import argparse
import json
from pathlib import Path

from fpga.sweep import compare_plot, compare_table


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("designs", nargs="+", metavar="LABEL=SWEEP_JSON_OR_DIR",
                   help="a sweep.json, or a directory whose subdirectories hold synth.json")
    p.add_argument("--vary", required=True, help="comma-separated grid parameters")
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    args = p.parse_args()
    varied = args.vary.split(",")
    designs = []
    for item in args.designs:
        label, _, path = item.partition("=")
        path = Path(path)
        if path.is_dir():     # a directory of single runs (kllm synth -o DIR/CONFIG)
            rows = [json.loads(f.read_text()) for f in sorted(path.glob("*/synth.json"))]
        else:
            rows = json.loads(path.read_text())
        designs.append((label, rows))
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    table = compare_table(designs, varied)
    (out / "compare.md").write_text(table)
    compare_plot(designs, varied, out / "compare.png",
                 " vs ".join(label for label, _ in designs))
    print(table)
    print(f"wrote {out / 'compare.md'} and {out / 'compare.png'}")


if __name__ == "__main__":
    main()
