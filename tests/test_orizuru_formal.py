"""Formal: bounded model checking of small Orizuru configurations (SymbiYosys + Yices 2).

Every input sequence up to the depth (any beats, gaps, backpressure, resets)
is covered: each result equals the reference top-k of its vector, and the
output stream keeps the handshake rules (see testbench/formal_orizuru.py).
A planted tie-rule bug must be found, so the check is not vacuous.
"""

import pytest

from hdl.orizuru import Orizuru
from testbench.formal_orizuru import formal_tools, run_bmc

SMALL = {"width": 2, "lanes": 2, "k": 2, "max_len": 4}
DEPTH = 9     # >= latency + 2: the first vectors' results are all checked


def test_tools_installed():
    _, missing = formal_tools()
    assert not missing, f"missing: {missing}"


@pytest.mark.parametrize("merge", [0, 1, 2])
def test_bmc_result_equals_reference_topk(merge, build_dir):
    dut = Orizuru(**SMALL, merge=merge)
    assert dut.latency + 2 <= DEPTH
    passed, log = run_bmc(dut, build_dir, DEPTH)
    assert passed, log[-3000:]


class _TieBug(Orizuru):
    _plant_tie_bug = True


def test_bmc_finds_a_planted_bug(build_dir):
    passed, log = run_bmc(_TieBug(**SMALL, merge=0), build_dir, DEPTH)
    assert not passed and "DONE (FAIL" in log and "Assert failed" in log, log[-3000:]
