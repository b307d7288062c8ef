#!/usr/bin/env python3
"""Prove that the Verilog of every unit is unchanged since a commit.

    python scripts/equiv.py --before REV [--units a,b] [-o build/equiv] [--jobs 2]
        [--timeout 600] [--seq 5] [--prove-identical] [--strict]

For every unit and configuration of ``CONFIGS`` the Verilog is generated at
``REV`` (checked out with ``git worktree add --detach OUT/before-src REV``,
removed at the end) and in this work tree, each in a subprocess of the same
Python with ``PYTHONPATH`` set to that tree. Each pair is then reported as

* ``identical``: byte-identical text;
* ``proven``: Yosys proved the two netlists equivalent (``fpga/equiv.py``:
  memories mapped to flip-flops, vendor primitives replaced by their
  simulation models, ``equiv_make`` / ``equiv_simple`` / ``equiv_induct``);
* ``not proven``: with the reason (unproven cells, a Yosys error, a timeout,
  a generation error).

The table goes to ``OUT/report.md`` and to standard output; the pairs' files
and Yosys logs stay in ``OUT/<unit>/<configuration>/``. Exit status: 0, or 1
with ``--strict`` when a pair is not identical or proven; 2 for bad arguments
(unknown unit, bad revision).

``CONFIGS`` uses the current parameter names. A tree whose configuration
class lacks a name (older code) gets it translated with ``OLD_NAMES``.
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fpga.equiv import (IDENTICAL, NOT_PROVEN, PROVEN, Result, compare, find_yosys,  # noqa: E402
                        stop_all)

#: unit -> configurations (``{parameter: value}``, current names); ``{}`` is the default
CONFIGS = {
    "quantizer": [{}, {"elems": 8, "ba": 3}, {"elems": 16, "ba": 8, "width": 24}],
    "orizuru": [{}, {"elems": 8, "k": 16, "merge": 1}, {"elems": 8, "k": 16, "merge": 2},
                {"merge": 0}],
    "orizuru_baseline": [{}, {"elems": 8, "k": 16}, {"elems": 2, "k": 4}],
    "lut": [{}, {"elems": 1, "ba": 8}, {"elems": 8, "ba": 2}],
    "product": [{}, {"elems": 1, "ba": 6}, {"elems": 8, "ba": 2}],
    "softmax": [{}, {"elems": 1, "max_len": 64}, {"elems": 8, "ba": 6}],
    "norm": [{}, {"rms": 1}, {"elems": 1, "max_len": 64}],
    "softmax_baseline": [{}, {"elems": 1}, {"elems": 8}],
    "norm_baseline": [{}, {"rms": 1}, {"elems": 1, "max_len": 64}],
    "imu": [{}, {"outputs": 16, "elems": 16}, {"outputs": 8, "elems": 4, "bw": 3}],
    "imu_baseline": [{}, {"outputs": 16, "elems": 16}, {"outputs": 8, "elems": 4}],
    "core": [{}, {"bus_bytes": 8, "elems": 2, "abuf_kb": 4, "tbuf_kb": 4},
             {"bus_bytes": 32, "bw": 3, "elems": 8, "slots": 3}],
    "rowengine": [{}, {"bus_bytes": 8, "elems": 2, "abuf_kb": 4, "tbuf_kb": 4},
                  {"elems": 8, "row_ba": 3, "lut_ba": 4}],
}

#: current name -> name in older code, per unit (``"*"``: every other unit)
OLD_NAMES = {
    "imu": {"outputs": "lanes"},
    "imu_baseline": {"outputs": "lanes"},
    "*": {"elems": "lanes"},
}

#: Name hints per unit (see fpga.equiv.compare): renames that the code made without changing
#: a register, applied to the older netlist before the proof.  The IMU's register copies
#: were instances ``<name>_keep`` of a Verilog module before 9509fc4 and are submodules
#: ``keep_<name>`` (hdl.blocks.kept_register) since; its adder-tree registers
#: ``<t|f>_tree<n>_<level>_<k>`` became ``..._l<level + 1>_<k>`` (hdl.blocks.adder_tree).
#: ``q``: the output of the first kept copy in the newer netlist, a different net than the
#: older one's ``q``.
_IMU_HINTS = {
    "renames": [(r"\) (\w+)_keep \(", r") keep_\1 ("),
                (r"\b([tf]_tree\d+)_(\d+)_(\d+)\b",
                 lambda m: f"{m[1]}_l{int(m[2]) + 1}_{m[3]}")],
    "hide": ["w:q"],
}
NAME_HINTS = {"imu": _IMU_HINTS, "imu_baseline": _IMU_HINTS}

# Runs in a subprocess with PYTHONPATH=<tree>: reads a JSON job list from argv[1], writes
# each netlist (or the error) to its path, prints nothing but errors.
_WORKER = r"""
import json, sys, traceback
from pathlib import Path
tree = Path(sys.argv[2]).resolve()
import kllm
if tree not in Path(kllm.__file__).resolve().parents:
    sys.exit(f"kllm imported from {kllm.__file__}, not from {tree}")
if (tree / "hdl" / "units.py").exists():    # the registry's home since the layering
    from hdl.units import get_unit
    from hdl.generate import generate
else:                                       # earlier commits: the command-line package
    from kllm.units import get_unit
    from kllm.generate import generate
for name in ("hdl.units", "hdl.generate", "kllm.units", "kllm.generate"):
    mod = sys.modules.get(name)
    if mod is not None and tree not in Path(mod.__file__).resolve().parents:
        sys.exit(f"{name} imported from {mod.__file__}, not from {tree}")
old_names = json.loads(sys.argv[3])
for job in json.loads(Path(sys.argv[1]).read_text()):
    out, err = Path(job["out"]), Path(job["out"] + ".error")
    err.unlink(missing_ok=True)
    try:
        u = get_unit(job["unit"])
        names = {p[0] for p in u.config_cls.params()}
        renames = old_names.get(job["unit"], old_names["*"])
        sets = [f"{k if k in names else renames.get(k, k)}={v}"
                for k, v in job["config"].items()]
        text, _ = generate(u, u.config(sets))
        out.write_text(text)
    except Exception as e:
        out.unlink(missing_ok=True)
        err.write_text(f"{type(e).__name__}: {e}".splitlines()[0] + "\n")
"""


_children = set()       # generation subprocesses under way


def _stop(pool):
    """On an interrupt: end the subprocesses under way, drop the queued work."""
    stop_all()
    for proc in list(_children):
        proc.kill()
    pool.shutdown(wait=False, cancel_futures=True)


class UsageError(Exception):
    """A bad argument: one line on stderr, exit status 2."""


def config_name(config):
    """``default`` or ``name=value,...``: the configuration's column and directory name."""
    return ",".join(f"{k}={v}" for k, v in config.items()) or "default"


def git(*args, cwd=ROOT):
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)


def resolve_rev(rev):
    """The commit hash of ``rev``; ``UsageError`` when it is not a commit."""
    r = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    if r.returncode != 0:
        raise UsageError(f"--before {rev}: not a commit of this repository")
    return r.stdout.strip()


def add_worktree(path, commit):
    """Check out ``commit`` at ``path`` (detached), replacing a leftover one."""
    remove_worktree(path)
    r = git("worktree", "add", "--detach", str(path), commit)
    if r.returncode != 0:
        raise RuntimeError(f"git worktree add failed: {r.stderr.strip()}")


def remove_worktree(path):
    if Path(path).exists():
        git("worktree", "remove", "--force", str(path))
    git("worktree", "prune")


def generate_all(tree, jobs, log):
    """Generate the netlists of ``jobs`` (``[{unit, config, out}]``) with the code of ``tree``."""
    spec = Path(log).with_suffix(".json")
    spec.write_text(json.dumps(jobs))
    env = dict(os.environ, PYTHONPATH=str(tree))
    with open(log, "w") as f:
        proc = subprocess.Popen([sys.executable, "-c", _WORKER, str(spec), str(tree),
                                 json.dumps(OLD_NAMES)], cwd=tree, env=env, stdout=f,
                                stderr=subprocess.STDOUT)
        _children.add(proc)
        try:
            rc = proc.wait()
        finally:
            _children.discard(proc)
    if rc != 0:
        lines = Path(log).read_text().strip().splitlines()
        raise RuntimeError(f"generation in {tree} failed: {lines[-1] if lines else rc}")


def read_side(path, side):
    """``(text, None)`` or ``(None, reason)`` for one generated netlist."""
    path = Path(path)
    if path.exists():
        text = path.read_text()
        path.unlink()       # compare() keeps its own copy
        return text, None
    err = Path(str(path) + ".error")
    reason = err.read_text().strip() if err.exists() else "no output"
    return None, f"generation failed ({side}): {reason}"


def report_table(rows):
    """Markdown table of ``[(unit, config, Result)]``."""
    out = ["| unit | configuration | status | detail | time |", "|---|---|---|---|---|"]
    for unit, cfg, r in rows:
        detail = r.detail.replace("|", "\\|")
        out.append(f"| {unit} | {cfg} | {r.status} | {detail} | {r.seconds:.1f} s |")
    return "\n".join(out) + "\n"


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--before", required=True, metavar="REV", help="the commit to compare with")
    p.add_argument("--units", default=",".join(CONFIGS),
                   help="comma-separated units (default: all)")
    p.add_argument("-o", "--out", default="build/equiv", help="output directory")
    p.add_argument("--jobs", type=int, default=2, help="Yosys runs at once (default 2)")
    p.add_argument("--timeout", type=float, default=600,
                   help="seconds for the Yosys proof of one pair (default 600)")
    p.add_argument("--seq", type=int, default=5,
                   help="time steps of equiv_simple and equiv_induct (default 5)")
    p.add_argument("--prove-identical", action="store_true",
                   help="run the Yosys proof on byte-identical pairs too")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 unless every pair is identical or proven")
    args = p.parse_args(argv)
    args.units = [u.strip() for u in args.units.split(",") if u.strip()]
    unknown = [u for u in args.units if u not in CONFIGS]
    if unknown or not args.units:
        raise UsageError(f"unknown unit '{unknown[0] if unknown else ''}' "
                         f"(units: {', '.join(CONFIGS)})")
    if args.jobs < 1:
        raise UsageError(f"--jobs must be at least 1, got {args.jobs}")
    if args.timeout <= 0 or args.seq < 1:
        raise UsageError("--timeout must be positive and --seq at least 1")
    return args


def run(args):
    commit = resolve_rev(args.before)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    yosys = find_yosys()
    before_src = out / "before-src"
    pairs = [(unit, cfg) for unit in args.units for cfg in CONFIGS[unit]]

    def jobs_for(side):
        return [{"unit": u, "config": c, "out": str(out / u / config_name(c) / f"{side}.gen.v")}
                for u, c in pairs]

    for u, c in pairs:
        (out / u / config_name(c)).mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    print(f"generating {len(pairs)} configurations at {commit[:12]} and in the work tree",
          flush=True)
    add_worktree(before_src, commit)
    try:
        with ThreadPoolExecutor(max_workers=min(2, args.jobs)) as pool:
            futures = [pool.submit(generate_all, before_src, jobs_for("before"),
                                   out / "generate-before.log"),
                       pool.submit(generate_all, ROOT, jobs_for("after"),
                                   out / "generate-after.log")]
            try:
                for f in futures:
                    f.result()
            except BaseException:
                _stop(pool)
                raise
    finally:
        remove_worktree(before_src)
    print(f"generated in {time.monotonic() - t0:.0f} s", flush=True)

    def one(unit, cfg):
        work = out / unit / config_name(cfg)
        before, e1 = read_side(work / "before.gen.v", "before")
        after, e2 = read_side(work / "after.gen.v", "after")
        if e1 or e2:
            return Result(NOT_PROVEN, "; ".join(e for e in (e1, e2) if e))
        hints = NAME_HINTS.get(unit, {})
        return compare(before, after, f"kllm_{unit}", work, prove_identical=args.prove_identical,
                       yosys=yosys, timeout=args.timeout, seq=args.seq,
                       renames=hints.get("renames", ()), hide=hints.get("hide", ()))

    results = {}
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {pool.submit(one, u, c): (u, config_name(c)) for u, c in pairs}
        try:
            for n, f in enumerate(as_completed(futures), 1):
                u, c = futures[f]
                try:
                    r = f.result()
                except Exception as e:      # a broken pair must not lose the others' results
                    r = Result(NOT_PROVEN, f"{type(e).__name__}: {e}")
                results[u, c] = r
                print(f"[{n}/{len(pairs)}] {u} {c}: {r.status} ({r.seconds:.1f} s) {r.detail}",
                      flush=True)
        except BaseException:
            _stop(pool)
            raise

    rows = [(u, config_name(c), results[u, config_name(c)]) for u, c in pairs]
    table = (f"# Equivalence: {args.before} ({commit[:12]}) vs the work tree\n\n"
             + report_table(rows))
    (out / "report.md").write_text(table)
    print()
    print(table, end="")
    bad = [r for _, _, r in rows if r.status not in (IDENTICAL, PROVEN)]
    counts = {s: sum(r.status == s for _, _, r in rows) for s in (IDENTICAL, PROVEN, NOT_PROVEN)}
    summary = ", ".join(f"{n} {s}" for s, n in counts.items())
    print(f"\n{summary}; report: {out / 'report.md'}")
    return 1 if args.strict and bad else 0


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:
        print("equiv: interrupted", file=sys.stderr)
        return 130
    except UsageError as e:
        print(f"equiv: {e}", file=sys.stderr)
        return 2
    except (RuntimeError, FileNotFoundError) as e:
        print(f"equiv: {e}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
