#!/usr/bin/env python3
"""The critical paths of a nextpnr ``--report`` JSON (``nextpnr-seed<N>.json`` of a
``kllm synth`` work directory): each step's kind, delay, running total and cells.

    python scripts/nextpnr_paths.py build/imu-compare/imu/default/<config>/nextpnr-seed1.json
"""

import argparse
import json


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("report")
    p.add_argument("--paths", type=int, default=1, help="how many paths (default 1)")
    a = p.parse_args()
    rep = json.load(open(a.report))
    for clk, f in rep["fmax"].items():
        print(f"{clk}: achieved {f['achieved']:.1f} MHz (constraint {f['constraint']:.1f})")
    for cp in rep.get("critical_paths", [])[:a.paths]:
        print(f"path {cp.get('from')} -> {cp.get('to')}")
        total = 0.0
        for st in cp["path"]:
            total += st["delay"]
            fr, to = st.get("from", {}), st.get("to", {})
            print(f"  {st['type']:9s} {st['delay']:6.3f} {total:7.3f}  "
                  f"{fr.get('cell', '')}.{fr.get('port', '')} -> {to.get('cell', '')}.{to.get('port', '')}"
                  f"  {st.get('net', '')}")


if __name__ == "__main__":
    main()
