"""Orizuru and its baseline: parameter checks, registry, derived sizes and latency formula."""

import itertools
import re

import pytest

from hdl.orizuru import Orizuru, OrizuruBaseline, bitonic_sort_levels, odd_even_sort_levels
from base.config import OrizuruBaselineConfig, OrizuruConfig
from hdl.units import get_unit


@pytest.mark.parametrize("cls, unit", [(Orizuru, "orizuru"), (OrizuruBaseline, "orizuru_baseline")])
@pytest.mark.parametrize("kwargs, exc, message", [
    ({"width": 1}, ValueError, "parameter 'width' must be in 2..32, got 1"),
    ({"width": 33}, ValueError, "parameter 'width' must be in 2..32, got 33"),
    ({"elems": 0}, ValueError, "parameter 'elems' must be in 1..16, got 0"),
    ({"elems": 17}, ValueError, "parameter 'elems' must be in 1..16, got 17"),
    ({"k": 0}, ValueError, "parameter 'k' must be in 1..64, got 0"),
    ({"k": 65}, ValueError, "parameter 'k' must be in 1..64, got 65"),
    ({"max_len": 0}, ValueError, "parameter 'max_len' must be in 1..65536, got 0"),
    ({"max_len": 65537}, ValueError, "parameter 'max_len' must be in 1..65536, got 65537"),
    ({"k": 9, "max_len": 8}, ValueError, "parameter 'k' must not exceed max_len (8), got 9"),
    ({"elems": 4, "k": 2, "max_len": 3}, ValueError,
     "parameter 'elems' must not exceed max_len (3), got 4"),
    ({"k": 2.0}, TypeError, "parameter 'k' must be an integer, not 2.0"),
    ({"elems": True}, TypeError, "parameter 'elems' must be an integer, not True"),
    ({"max_len": "64"}, TypeError, "parameter 'max_len' must be an integer, not '64'"),
])
def test_bad_parameters_raise_at_construction(cls, unit, kwargs, exc, message):
    with pytest.raises(exc) as e:
        cls(**kwargs)
    assert str(e.value) == f"{unit}: {message}"


@pytest.mark.parametrize("value, exc, message", [
    (3, ValueError, "orizuru: parameter 'merge' must be in 0..2, got 3"),
    (-1, ValueError, "orizuru: parameter 'merge' must be in 0..2, got -1"),
    (None, TypeError, "orizuru: parameter 'merge' must be an integer, not None"),
])
def test_merge_parameter(value, exc, message):
    with pytest.raises(exc) as e:
        Orizuru(merge=value)
    assert str(e.value) == message
    with pytest.raises(TypeError):
        OrizuruBaseline(merge=1)          # the baseline has no final merge to choose


def test_keyword_only_and_exposed_config():
    with pytest.raises(TypeError):
        Orizuru(16, 4, 8)
    o = Orizuru(width=12, elems=3, k=5, max_len=40, merge=0)
    assert o.config == OrizuruConfig(width=12, elems=3, k=5, max_len=40, merge=0)
    b = OrizuruBaseline(elems=3, k=5)
    assert b.config == OrizuruBaselineConfig(elems=3, k=5)


def test_registry_and_strings():
    for name in ("orizuru", "orizuru_baseline"):
        unit = get_unit(name)
        assert unit.config(["elems=8", "k=16"]).k == 16
        assert unit.toplevel == f"kllm_{name}"
    assert get_unit("orizuru").config(["merge=0"]).merge == 0


def test_derived_sizes():
    c = OrizuruConfig(elems=8, k=16, max_len=384)
    assert c.pos_bits == 9 and c.count_bits == 4 and c.entry_bits == 16 + 9 + 1
    assert c.rank_lanes == [16, 8, 5, 4, 3, 2, 2, 2]        # k // (r + 1)
    assert sum(c.rank_lanes) == 42                           # versus P * k = 128
    assert OrizuruConfig(elems=16, k=2).rank_lanes == [2, 1]  # no lane beyond rank k - 1
    assert OrizuruConfig(elems=1, k=1, max_len=1).pos_bits == 1
    assert OrizuruBaselineConfig(elems=8, k=16).network_inputs == 32
    assert OrizuruBaselineConfig(elems=3, k=5).network_inputs == 8


@pytest.mark.parametrize("lanes, k, merge, latency, min_beats", [
    # serial merge: load 2 + 3 sorter levels (s = 2) after the last beat, k pops, result;
    # last beats >= k apart and two of them >= load + k + 1 apart: max(8, 14 / 2)
    (4, 8, 1, 4 + 3 + 8, 8),
    (4, 8, 0, 2 + 3 + 4 + 4, 1),  # merge tree: (8,4),(2,2) then (8,4): 4 + 4 levels
    # merge=2: the lanes compare a value ahead, one stage more: load 3 + 3 sorter levels;
    # max(8, ceil(15 / 2))
    (4, 8, 2, 5 + 3 + 8, 8),
    (8, 16, 2, 5 + 6 + 16, 16),   # max(16, ceil(26 / 2))
    (1, 1, 2, 5 + 0 + 1, 3),      # max(1, ceil(5 / 2)): P = 1, no sorter
    (4, 3, 2, 5 + 3 + 3, 5),      # max(3, ceil(10 / 2))
    (8, 16, 1, 4 + 6 + 16, 16),   # max(16, ceil(25 / 2))
    (8, 16, 0, 2 + 6 + 5 + 5 + 5, 1),
    (1, 1, 1, 4 + 0 + 1, 2),      # max(1, 4 / 2)
    (4, 3, 1, 4 + 3 + 3, 5),      # max(3, ceil(9 / 2))
    (1, 5, 0, 2, 1),              # one lane, nothing to merge
    (3, 5, 0, 2 + 3 + 3 + 3, 1),
])
def test_latency_formula(lanes, k, merge, latency, min_beats):
    c = OrizuruConfig(elems=lanes, k=k, merge=merge)
    assert c.latency == latency and c.min_beats == min_beats
    assert Orizuru(elems=lanes, k=k, merge=merge).latency == latency
    assert OrizuruBaselineConfig(elems=lanes, k=k).latency == 2


@pytest.mark.parametrize("levels_of", [bitonic_sort_levels, odd_even_sort_levels])
@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_sorting_networks_sort_every_zero_one_input(levels_of, n):
    """0-1 principle: a compare-exchange network that sorts every 0/1 input sorts all."""
    levels = levels_of(n)
    for level in levels:
        touched = [i for pair in level for i in pair]
        assert len(touched) == len(set(touched)), "an index twice in one level"
    assert len(levels) == (n - 1).bit_length() * ((n - 1).bit_length() + 1) // 2
    for bits in itertools.product([0, 1], repeat=n):
        e = list(bits)
        for level in levels:
            for a, b in level:
                if e[b] > e[a]:
                    e[a], e[b] = e[b], e[a]
        assert e == sorted(bits, reverse=True), bits


def test_odd_even_sorter_is_smaller():
    assert [sum(map(len, odd_even_sort_levels(n))) for n in (4, 8, 16)] == [5, 19, 63]
    assert [sum(map(len, bitonic_sort_levels(n))) for n in (4, 8, 16)] == [6, 24, 80]


@pytest.mark.parametrize("name", ["orizuru", "orizuru_baseline"])
def test_compare_exchanges_as_kept_modules(name):
    """ce_modules=1: one module per compare-exchange built (the network's stats), named
    so that the flow's keep_modules pattern selects them; ce_modules=0: one flat module."""
    import fnmatch

    from amaranth.back import verilog
    unit = get_unit(name)
    counts, stats = {}, {}
    for ce in (0, 1):
        dut = unit.build(unit.config(["width=6", "elems=3", "k=2", "max_len=16",
                                      f"ce_modules={ce}"]))
        text = verilog.convert(dut, name=unit.toplevel, emit_src=False)
        mods = re.findall(r"^module \\?([^\s(]+)", text, re.M)
        assert mods[0] == unit.toplevel
        counts[ce], stats[ce] = mods[1:], dut.stats
    assert stats[0] == stats[1]
    assert counts[0] == [] and len(counts[1]) == stats[1]["full"] + stats[1]["half"] > 0
    assert all(fnmatch.fnmatch(mod, f"{unit.toplevel}.ce_*") for mod in counts[1])
    assert "ce_*" in unit.keep_modules.split()


@pytest.mark.parametrize("merge", [0, 1, 2])
def test_register_copies_as_kept_modules(merge):
    """merge=2 (the fast form) copies its high-fan-out registers, each copy a module named
    so that the flow's keep_modules selects it: per side and rank-lane entry a copy of the
    next and of the present value and two of the comparison b (but the last entry, which has
    no next entry to select for), a load, a pop and a winner bit per 4 queue entries, a pop
    per 4 accumulator entries and a copy enable (logic: it reads the output's ready) per 4
    result entries.
    merge=0 and 1 make none."""
    import fnmatch

    from amaranth.back import verilog
    unit = get_unit("orizuru")
    cfg = unit.config(["width=6", "elems=3", "k=4", "max_len=16", f"merge={merge}"])
    text = verilog.convert(unit.build(cfg), name=unit.toplevel, emit_src=False)
    mods = re.findall(r"^module \\?([^\s(]+)", text, re.M)
    kept = [mod for mod in mods if fnmatch.fnmatch(mod, f"{unit.toplevel}.keep_*")]
    entries, groups = sum(cfg.rank_lanes), sum(-(-n // 4) for n in cfg.rank_lanes)
    expected = 2 * ((4 * entries - len(cfg.rank_lanes)) + 3 * groups + 2 * -(-cfg.k // 4))
    assert len(kept) == (expected if merge == 2 else 0)
    assert "keep_*" in unit.keep_modules.split()


def test_hierarchy_cells_totals():
    """The flow's unit figures with kept submodules: instances times their own cells."""
    from fpga.flow import hierarchy_cells
    modules = {
        "top": {"num_cells_by_type": {"LUT4": 3, "TRELLIS_FF": 2, "\\top.ce_1": 1, "top.ce_2": 2}},
        "top.ce_1": {"num_cells_by_type": {"LUT4": 5, "CCU2C": 1}},
        "top.ce_2": {"num_cells_by_type": {"LUT4": 7, "top.ce_1": 1}},
    }
    assert hierarchy_cells(modules, "top") == {"LUT4": 3 + 5 + 2 * (7 + 5), "TRELLIS_FF": 2,
                                               "CCU2C": 1 + 2}
    assert hierarchy_cells(modules, "top.ce_1") == {"LUT4": 5, "CCU2C": 1}
