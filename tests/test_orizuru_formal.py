"""Formal: bounded model checking of small Orizuru configurations (SymbiYosys + Yices 2).

Every input sequence up to the depth (any beats, gaps, backpressure, resets)
is covered: each result equals the reference top-k of its vector, and the
output stream keeps the handshake rules (see testbench/formal_orizuru.py).
A planted tie-rule bug must be found, so the check is not vacuous.
"""

import pytest

from hdl.orizuru import Orizuru
from testbench.formal_orizuru import formal_tools, run_bmc

SMALL = {"width": 2, "elems": 2, "k": 2, "max_len": 4}
DEPTH = 9     # >= latency + 2 (merge=2: 10): the first vectors' results are all checked


def test_tools_installed():
    _, missing = formal_tools()
    assert not missing, f"missing: {missing}"


@pytest.mark.parametrize("merge", [0, 1, 2])
def test_bmc_result_equals_reference_topk(merge, build_dir):
    dut = Orizuru(**SMALL, merge=merge)
    depth = max(DEPTH, dut.latency + 2)
    assert depth <= DEPTH + 1
    passed, log = run_bmc(dut, build_dir, depth)
    assert passed, log[-3000:]


class _TieBug(Orizuru):
    _plant_tie_bug = True


@pytest.mark.parametrize("merge", [0, 2])   # the lanes of merge=2 compare a value ahead
def test_bmc_finds_a_planted_bug(merge, build_dir):
    dut = _TieBug(**SMALL, merge=merge)
    passed, log = run_bmc(dut, build_dir, max(DEPTH, dut.latency + 2))
    assert not passed and "DONE (FAIL" in log and "Assert failed" in log, log[-3000:]
