#!/usr/bin/env python3
"""The nets of largest fan-out in one module of a Yosys JSON netlist (``netlist.json`` of a
``kllm synth`` work directory), with the cell that drives each.

    python scripts/netlist_fanout.py build/imu-compare/imu/default/<config>/netlist.json \\
        --module kllm_imu --top 25
"""

import argparse
import collections
import json


def fanout(netlist, module):
    m = json.load(open(netlist))["modules"][module]
    loads, driver = collections.Counter(), {}
    for cname, c in m["cells"].items():
        dirs = c.get("port_directions", {})
        for port, bits in c["connections"].items():
            for b in bits:
                if isinstance(b, int):
                    if dirs.get(port) == "input":
                        loads[b] += 1
                    else:
                        driver[b] = f"{c['type'].split(chr(92))[-1]}.{port}"
    names = {}
    for name, n in sorted(m["netnames"].items(), key=lambda kv: kv[1].get("hide_name", 0)):
        for b in n["bits"]:
            if isinstance(b, int):
                names.setdefault(b, name)
    return [(f, names.get(b, "?"), driver.get(b, "module input")) for b, f in loads.most_common()]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("netlist")
    p.add_argument("--module", default="kllm_imu")
    p.add_argument("--top", type=int, default=25)
    a = p.parse_args()
    for f, name, drv in fanout(a.netlist, a.module)[:a.top]:
        print(f"{f:7d}  {name[:80]:80s}  {drv}")


if __name__ == "__main__":
    main()
