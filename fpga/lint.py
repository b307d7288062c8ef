"""Verilator lint of a generated netlist: errors, and warnings grouped by kind.

``verilator --lint-only -Wall -Wno-fatal``: an error (a ``%Error`` line, or a
non-zero exit, which with ``-Wno-fatal`` only an error causes) fails the lint.
Warnings are grouped by kind; the kinds that Amaranth's Verilog backend writes
for every design of a unit are expected, each with its reason (:data:`EXPECTED`).
"""

import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field

from base.errors import KllmError

__all__ = ["EXPECTED", "LintResult", "lint"]

#: Warning kinds that the Verilog backend writes by itself, and why they are harmless.
EXPECTED = {
    "PROCASSINIT": "each register is declared with its reset value as an initializer and "
                   "assigned in its always block",
    "UNUSEDSIGNAL": "debug aliases of payload fields (i__payload.x[0], ...) and names whose "
                    "logic merged into other nets",
    "WIDTHEXPAND": "a zero-extended operand (a lane number, a count, a constant) written at "
                   "its own width; the arithmetic is exact",
    "WIDTHTRUNC": "`x == 0` written as `!x` on a multi-bit x, and a variable word select "
                  "written as a shift assigned to the word's width; both exact",
    "DECLFILENAME": "a unit's submodules (compare-exchanges, kept copies, primitive "
                    "wrappers) in the unit's one Verilog file, named after its top module",
    "CASEINCOMPLETE": "a state register's case statement without the unused encodings",
}

_KIND = re.compile(r"^%Warning-([A-Z0-9_]+):")


@dataclass
class LintResult:
    """What Verilator said: ``errors`` (lines), ``warnings`` (kind -> lines), exit status."""
    errors: list = field(default_factory=list)
    warnings: dict = field(default_factory=dict)
    returncode: int = 0

    @property
    def failed(self):
        """An error: a ``%Error`` line or a non-zero exit."""
        return bool(self.errors) or self.returncode != 0

    @property
    def unexpected(self):
        """Warning kinds not in :data:`EXPECTED`."""
        return sorted(k for k in self.warnings if k not in EXPECTED)


def lint(netlist, path=None):
    """Lint ``netlist`` with the ``verilator`` found on ``path`` (``PATH`` by default)."""
    path = path if path is not None else os.environ.get("PATH", "")
    tool = shutil.which("verilator", path=path)
    if tool is None:
        raise KllmError("tool 'verilator' not found: run 'make setup'")
    p = subprocess.run([tool, "--lint-only", "-Wall", "-Wno-fatal", str(netlist)],
                       capture_output=True, text=True, env={**os.environ, "PATH": path})
    result = LintResult(returncode=p.returncode)
    for line in (p.stderr + p.stdout).splitlines():
        if line.startswith("%Error"):
            result.errors.append(line)
        m = _KIND.match(line)
        if m:
            result.warnings.setdefault(m[1], []).append(line)
    if p.returncode != 0 and not result.errors:
        tail = [line for line in p.stderr.splitlines() if line.strip()][-3:]
        result.errors.append(f"verilator exited with status {p.returncode}"
                             + (": " + " | ".join(tail) if tail else ""))
    return result
