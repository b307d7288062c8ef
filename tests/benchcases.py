"""The parametrization shared by the unit benches' pytest wrappers (tests/test_*_cocotb.py)."""

import pytest


def bench_cases(configs):
    """``[(unit, {param: value}, (sim, ...)), ...]`` -> pytest params ``(unit, params, sim)``,
    one per simulator, with ids ``unit-name=value,...-sim`` (``default`` without params)."""
    def ids(p):
        return ",".join(f"{k}={v}" for k, v in p.items()) or "default"
    return [pytest.param(u, p, s, id=f"{u}-{ids(p)}-{s}") for u, p, sims in configs for s in sims]
