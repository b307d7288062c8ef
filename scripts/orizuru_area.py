#!/usr/bin/env python3
"""Orizuru's LUT4 and FF by part, from the cell names of a `kllm synth` netlist.

    python scripts/orizuru_area.py build/final/orizuru/lanes4_k8
    python scripts/orizuru_area.py --module kllm_orizuru_baseline build/final/orizuru_baseline/lanes4_k8

Cells are attributed by the name Yosys gave them (the signal they drive or
feed), so the split is approximate; a CCU2C carry cell counts as two LUT4s.
"""

import argparse
import collections
import json
import re
from pathlib import Path

PARTS = [("rank lanes", r"_lane\d"), ("beat sorters", r"_sort|^\\?[xy]\$\d"), ("merge queues", r"_q\d"),
         ("merge matrix", r"_g\d|_win|_ge_|_next_sel|_c\d|_lc\d|_fresh|_r\d|_t\d"), ("accumulator", r"_acc\d"),
         ("output registers", r"_res\d|o__payload"), ("input stage", r"s0_|i__"),
         ("merge control", r"pops|pending|load|pop|acc_full|result_full|last_ok|copy")]
# the baseline (``--module kllm_orizuru_baseline``): its network is made of kept
# compare-exchange modules ``ce_<side>_<n>``, or inline multiplexers ``<side>_ce<n>``
PARTS_BASELINE = [("sorting network", r"ce_|_ce\d"), ("kept entries", r"_kept\d"),
                  ("result registers", r"_out\d|o__payload"),
                  ("input stage", r"s0_|i__|_pos\d"), ("control", r"out_valid")]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run_dir", help="a kllm synth output directory (holds netlist.json)")
    p.add_argument("--module", default="kllm_orizuru")
    args = p.parse_args()
    modules = json.loads((Path(args.run_dir) / "netlist.json").read_text())["modules"]
    count = collections.Counter()
    parts = PARTS_BASELINE if args.module.endswith("_baseline") else PARTS

    def add(module, part=None):
        # a kept submodule (a compare-exchange) counts under the part of its instance name
        for name, cell in modules[module]["cells"].items():
            here = part or next((label for label, pat in parts if re.search(pat, name)), "other")
            if cell["type"].startswith(args.module + "."):
                add(cell["type"], here)
                continue
            kind = "FF" if cell["type"] == "TRELLIS_FF" else "LUT4"
            count[here, kind] += 2 if cell["type"] == "CCU2C" else 1
    add(args.module)
    print("| part | LUT4 | FF |\n|---|---|---|")
    for label in [label for label, _ in parts] + ["other"]:
        print(f"| {label} | {count[label, 'LUT4']} | {count[label, 'FF']} |")
    print(f"| total | {sum(v for (_, k), v in count.items() if k == 'LUT4')} "
          f"| {sum(v for (_, k), v in count.items() if k == 'FF')} |")


if __name__ == "__main__":
    main()
