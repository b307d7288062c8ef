"""Orizuru: streaming top-k (k largest and k smallest, with positions) of each vector.

Golden twin: :mod:`golden.orizuru`.  Configuration: :class:`base.config.OrizuruConfig`
(the baseline's: :class:`base.config.OrizuruBaselineConfig`).

Two units from one body of code, with the same ports and the same result:

* :class:`Orizuru`: a small sorter per beat, *rank lanes* (short sorted
  insertion lists, one compare per entry) and, at the end of each vector, a
  serial merge of the lanes (default) or a pipelined, pruned bitonic merge
  tree;
* :class:`OrizuruBaseline`: every cycle, a full bitonic sorting network over
  the k entries kept so far and the P new values, its outputs pruned to k.

Both share the input stage (framing, positions), the ordering key, the
compare-exchange network builder and the output stage.
"""

from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from amaranth import Cat, Const, Elaboratable, Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from base.config import OrizuruBaselineConfig, OrizuruConfig
from hdl.blocks import kept_logic, kept_register, register
from hdl.component import ConfiguredComponent

__all__ = ["Orizuru", "OrizuruBaseline", "CompareExchange", "bitonic_sort_levels",
           "bitonic_merge_levels", "odd_even_sort_levels", "network"]

#: A padding input of a network: worse than every element, never stored.
PAD = None


class _Dead:
    """An output nobody reads: pruned."""

    def __repr__(self):
        return "DEAD"


DEAD = _Dead()


def _pow2(n):
    return 1 << (n - 1).bit_length()


def bitonic_sort_levels(n):
    """Compare-exchange levels of a bitonic sorter of ``n`` (a power of 2) inputs.

    Each level is a list of pairs ``(a, b)``: after the compare-exchange the
    better element is at index ``a`` and the worse at ``b``.  The output is
    sorted best first.
    """
    levels, size = [], 2
    while size <= n:
        stride = size // 2
        while stride:
            level = []
            for i in range(n):
                j = i ^ stride
                if j > i:
                    level.append((i, j) if i & size == 0 else (j, i))
            levels.append(level)
            stride //= 2
        size *= 2
    return levels


def odd_even_sort_levels(n):
    """Levels of Batcher's odd-even merge sorter of ``n`` (a power of 2) inputs.

    The same depth as :func:`bitonic_sort_levels` with fewer compare-exchanges (5
    instead of 6 for 4 inputs, 19 instead of 24 for 8); pairs ``(a, b)`` with
    ``a < b``, the better element to ``a``.
    """
    levels, p = [], 1
    while p < n:
        k = p
        while k:
            level = []
            for j in range(k % p, n - k, 2 * k):
                for i in range(min(k, n - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        level.append((i + j, i + j + k))
            levels.append(level)
            k //= 2
        p *= 2
    return levels


def bitonic_merge_levels(n):
    """Levels of a bitonic merger of ``n`` (a power of 2): a bitonic input, sorted best first."""
    levels, stride = [], n // 2
    while stride:
        levels.append([(i, i + stride) for i in range(n) if i & stride == 0])
        stride //= 2
    return levels


def network(elems, levels, needed, beats, stage=None, stats=None, wire=None, cell=None):
    """Build a compare-exchange network, pruned to the outputs ``needed``.

    ``elems`` are Amaranth values or :data:`PAD`; ``beats(y, x)`` is true when
    ``y`` must come before ``x``.  Going backwards from ``needed``, a
    compare-exchange whose outputs are both unused is dropped and one with a
    single used output builds only that output's multiplexer; one with a
    :data:`PAD` input is a wire.  ``stage(elems)``, if given, is applied after
    every level (pipeline registers); ``wire(value)``, if given, names each
    compare result and, without ``stage``, each output (a signal per shared
    value keeps the netlist a graph rather than a tree of expressions).
    ``stats`` (a dict) counts full and half compare-exchanges.  ``cell(x, y, use_a, use_b)``, if given, builds each
    compare-exchange (e.g. as its own module) and returns its two outputs (or
    :data:`DEAD` for an unused one) instead of the inline multiplexers.
    Returns the ``needed`` outputs in order.
    """
    n = len(elems)
    live = [None] * len(levels) + [set(needed)]
    for lv in reversed(range(len(levels))):
        after = live[lv + 1]
        touched = {i for pair in levels[lv] for i in pair}
        need = after - touched
        for a, b in levels[lv]:
            if a in after or b in after:
                need |= {a, b}
        live[lv] = need
    e = list(elems)
    for i in range(n):
        if i not in live[0] and e[i] is not PAD:
            e[i] = DEAD
    for lv, level in enumerate(levels):
        out = list(e)
        after = live[lv + 1]
        for a, b in level:
            use_a, use_b = a in after, b in after
            if not (use_a or use_b):
                out[a] = out[b] = DEAD
                continue
            x, y = e[a], e[b]
            if y is PAD or x is PAD:
                out[a], out[b] = (x, PAD) if y is PAD else (y, PAD)
                continue
            if cell is not None:
                out[a], out[b] = cell(x, y, use_a, use_b)
            else:
                swap = beats(y, x)
                if wire is not None:
                    swap = wire(swap)
                out[a] = Mux(swap, y, x) if use_a else DEAD
                out[b] = Mux(swap, x, y) if use_b else DEAD
            if stats is not None:
                stats["full" if use_a and use_b else "half"] += 1
        for i in range(n):
            if i not in after and out[i] is not PAD:
                out[i] = DEAD
        if stage:
            out = stage(out)
        elif wire is not None and cell is None:
            out = [v if v is PAD or v is DEAD or v is e[i] else wire(v) for i, v in enumerate(out)]
        e = out
    return [e[i] for i in needed]


def _gt(a, b):
    """``a > b`` for unsigned values of one width, as the borrow of ``b - a``.

    Yosys maps a subtraction onto an ECP5 carry chain whose last output is the
    result; it maps a ``>`` of the same width to a chain followed by LUTs, or to
    LUTs alone, more LUT levels on the critical path.
    """
    n = max(len(a), len(b)) + 1
    return (Cat(b, Const(0, n - len(b))) - Cat(a, Const(0, n - len(a))))[n - 1]


def _key_beats(y, x):
    """Ordering of keys: larger unsigned key first (see :meth:`_TopKUnit.key`)."""
    return _gt(y, x)


def _ge(a, b):
    """``a >= b`` for unsigned values, as ``2 a + 1 > 2 b`` (:func:`_gt`): one carry chain
    whose last output is the result, no inverter in front of the chain."""
    return _gt(Cat(Const(1, 1), a), Cat(Const(0, 1), b))


def _beats_tie(x, y, x_first):
    """``x`` goes before ``y``: larger, or equal and ``x_first`` (the lower lane)."""
    return _ge(x, y) if x_first else _gt(x, y)


class CompareExchange(Elaboratable):
    """One compare-exchange of a sorting network as its own module.

    ``a`` gets the better of ``x`` and ``y`` (``beats(y, x)``: y goes first), ``b``
    the worse; only the outputs asked for are built (``None`` otherwise).  The
    units build their networks from these when ``ce_modules=1``: the synthesis
    flow then keeps each one a module of its own (``Unit.keep_modules``), so
    Yosys and ABC map many small modules rather than one flat netlist of the
    whole network.
    """

    def __init__(self, width, beats, use_a=True, use_b=True):
        self._beats = beats
        self.x = Signal(width)
        self.y = Signal(width)
        self.a = Signal(width) if use_a else None
        self.b = Signal(width) if use_b else None

    def elaborate(self, platform):
        m = Module()
        swap = Signal()
        m.d.comb += swap.eq(self._beats(self.y, self.x))
        if self.a is not None:
            m.d.comb += self.a.eq(Mux(swap, self.y, self.x))
        if self.b is not None:
            m.d.comb += self.b.eq(Mux(swap, self.x, self.y))
        return m


class _Entry(NamedTuple):
    """A decoded entry (:meth:`_TopKUnit._decode`): zeros when not valid."""
    value: Value
    pos: Value
    valid: Value


class _Control(NamedTuple):
    """Control fields of a beat along the pipeline (:meth:`Orizuru._carry`)."""
    valid: Value
    new: Value = None
    last: Value = None
    base: Value = None
    new_ahead: Value = None     # at the rank lanes: the next beat starts a vector


@dataclass
class _Stage0:
    """The input stage's registers (:meth:`_TopKUnit._input_stage`)."""
    valid: Signal           # a beat is in the stage
    new: Signal             # it starts a vector
    last: Signal            # it ends a vector
    base: Signal            # position of lane 0
    x: list                 # the P values
    lv: list                # per lane: holds a value
    new_in: Value           # the beat entering the stage starts a vector
    key: dict = None        # per side, the P sort keys (``_stage0_keys``)


class _TopKUnit(ConfiguredComponent):
    """What Orizuru and its baseline share: ports, input stage, keys, output stage."""

    def __init__(self, config=None, **params):
        cfg = self._config = self.configure(config, params)
        width, elems, k = cfg.width, cfg.elems, cfg.k
        self.in_layout = data.StructLayout({
            "x": data.ArrayLayout(signed(width), elems),
            "count": unsigned(cfg.count_bits),
            "first": 1,
            "last": 1,
        })
        self.entry_layout = data.StructLayout({
            "value": signed(width),
            "pos": unsigned(cfg.pos_bits),
            "valid": 1,
        })
        self.out_layout = data.StructLayout({
            "top": data.ArrayLayout(self.entry_layout, k),
            "bot": data.ArrayLayout(self.entry_layout, k),
        })
        self.stats = {"full": 0, "half": 0, "cells": 0, "compare": 0}
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
        })

    # -- keys ---------------------------------------------------------------
    # An element travels as one unsigned key, ordered so that "better" is
    # "larger": {valid, value (offset binary, inverted for the bottom side),
    # tie}.  The tie field is the inverted position (or lane), so a lower
    # position wins among equal values; an invalid element loses to all.

    def _vkey(self, x, side):
        w = self._config.width
        u = x.as_unsigned() ^ (1 << (w - 1))
        return u if side == "top" else ~u

    def key(self, x, tie, valid, side):
        return Cat(~tie, self._vkey(x, side), valid)

    def _decode(self, key, side):
        w, pb = self._config.width, self._config.pos_bits
        valid = key[-1]
        u = key[pb:pb + w] if side == "top" else ~key[pb:pb + w]
        value = (u ^ (1 << (w - 1))).as_signed()
        return _Entry(Mux(valid, value, 0), Mux(valid, ~key[:pb], 0), valid)

    # -- shared stages ------------------------------------------------------

    def _wire(self, m, prefix):
        count = [0]

        def wire(value):
            count[0] += 1
            w = Signal(len(value), name=f"{prefix}{count[0]}")
            m.d.comb += w.eq(value)
            return w
        return wire

    def _cell(self, m, prefix):
        """The ``cell`` argument of :func:`network`: compare-exchanges as submodules
        ``ce_<prefix><n>`` when ``ce_modules=1``, else ``None`` (inline)."""
        if not self._config.ce_modules:
            return None
        count = [0]

        def cell(x, y, use_a, use_b):
            count[0] += 1
            ce = CompareExchange(max(len(x), len(y)), _key_beats, use_a, use_b)
            m.submodules[f"ce_{prefix}{count[0]}"] = ce
            m.d.comb += [ce.x.eq(x), ce.y.eq(y)]
            return (ce.a if use_a else DEAD), (ce.b if use_b else DEAD)
        return cell

    #: Stage 0 also registers each value's sort key per side (``_Stage0.key``), tagged by lane.
    _stage0_keys = False

    def _input_stage(self, m, advance, ready):
        """Stage 0: the accepted beat, per-lane valid bits, the position of lane 0.

        ``ready`` is ``i.ready``; ``advance`` enables the stage's registers (1 when
        the pipeline never stalls)."""
        cfg = self._config
        P, pb = cfg.elems, cfg.pos_bits
        after_last = Signal(init=1)       # the next beat starts a vector
        cnt = Signal(pb)                  # values so far in this vector
        start = self.i.payload.first | after_last
        base = Mux(start, 0, cnt)
        count = self.i.payload.count
        cb = len(count)
        take = self.i.valid & ready
        # a count above P reads as P (only possible when P + 1 is not a power of 2)
        n = Mux(count > Const(P, cb), Const(P, cb), count) if (1 << cb) - 1 > P else count
        s = _Stage0(
            valid=Signal(name="s0_valid"),
            new=Signal(name="s0_new", reset_less=True),
            last=Signal(name="s0_last", reset_less=True),
            base=Signal(pb, name="s0_base", reset_less=True),
            x=[Signal(signed(cfg.width), name=f"s0_x{p}", reset_less=True) for p in range(P)],
            lv=[Signal(name=f"s0_lv{p}", reset_less=True) for p in range(P)],
            new_in=start & take,          # the beat entering stage 0 starts a vector
        )
        tb = max(1, (P - 1).bit_length())          # lane tag bits
        if self._stage0_keys:
            s.key = {side: [Signal(cfg.width + tb + 1, name=f"s0_{side}_key{p}",
                                      reset_less=True) for p in range(P)]
                        for side in ("top", "bot")}
        with m.If(advance):
            m.d.sync += [
                s.valid.eq(take),
                s.new.eq(start & take),
                s.last.eq(self.i.payload.last & take),
                s.base.eq(base),
            ]
            m.d.sync += [s.x[p].eq(self.i.payload.x[p]) for p in range(P)]
            # a lane holds a value: within count, and the beat is taken (so a bubble
            # carries no valid value, starts and ends nothing)
            lv_in = [(count > Const(p, cb) if p else count.any()) & take for p in range(P)]
            m.d.sync += [s.lv[p].eq(lv_in[p]) for p in range(P)]
            if self._stage0_keys:
                # the sorters' keys registered here, so no LUT (the smallest side's
                # inversion, the offset) sits in front of a sorter's first comparator
                for side in ("top", "bot"):
                    m.d.sync += [s.key[side][p].eq(self.key(self.i.payload.x[p], Const(p, tb),
                                                             lv_in[p], side))
                                 for p in range(P)]
            with m.If(take):
                m.d.sync += [cnt.eq((base + n.as_unsigned())[:pb]),
                             after_last.eq(self.i.payload.last)]
        return s

    def _output(self, m, valid, lists):
        """Drive ``o`` from lists of keys (decoded here) or of decoded entries."""
        m.d.comb += self.o.valid.eq(valid)
        for side in ("top", "bot"):
            for j, key in enumerate(lists[side]):
                entry = self.o.payload[side][j]
                if isinstance(key, data.View):
                    m.d.comb += entry.eq(key)
                    continue
                d = self._decode(key, side)
                m.d.comb += [entry.value.eq(d.value), entry.pos.eq(d.pos),
                             entry.valid.eq(d.valid)]

    def elaborate(self, platform):
        m = Module()
        advance = Signal()        # the pipeline's registers move (a global stall when 0)
        ready = Signal()
        s0 = self._input_stage(m, advance, ready)
        valid, lists = self._core(m, advance, ready, s0)
        m.d.comb += self.i.ready.eq(ready)
        self._output(m, valid, lists)
        return m


class Orizuru(_TopKUnit):
    """Streaming top-k: the k largest and k smallest values of each vector, with positions.

    **Ports.** ``i``: a stream of beats ``{x: P signed values, count, first,
    last}``.  Lanes ``0 .. count-1`` of a beat hold values (``count`` in
    ``0 .. P``; a larger ``count`` reads as P), so any beat, not only the last,
    may be partial; positions number the values of a vector in arrival order
    from 0.  A vector starts at a beat with ``first`` set or at the first beat
    after one with ``last`` set (or after reset), and ends at a beat with
    ``last`` set.  ``o``: one beat per vector, ``{top: k entries, bot: k
    entries}``, each entry ``{value, pos, valid}``: the k largest values
    largest first and the k smallest smallest first, a lower position winning
    among equal values (:mod:`golden.orizuru`).  A vector of ``n < k`` values
    fills ``n`` entries per side, the rest are ``(0, 0, valid 0)``.  Vectors
    longer than ``max_len`` are outside the contract (positions wrap).

    **Microarchitecture**, per side (largest, smallest), all pipelined with
    one compare-exchange level per stage:

    1. *Beat sorter*: Batcher's odd-even merge sorter orders the P values of a
       beat, ties by lane; only its first ``min(P, k)`` outputs are built.
    2. *Rank lanes*: the rank-r value of every beat (the r-th best of its
       beat) goes to lane r, a sorted insertion list of ``k // (r + 1)``
       entries (one compare per entry, entries shift down behind the new
       value; an equal value never displaces an older one, which has the
       lower position).  A value of rank r in the vector's top k brings its
       r better beat-mates into the top k too, so lane r can hold at most
       ``k // (r + 1)`` of the top k: the lanes together hold all of it in
       ``k * H(min(P, k))`` entries (H: harmonic number), not ``P * k``.
    3. In the cycle after the last beat the lane contents move on (the lanes
       start the next vector in the same cycle):

       * ``merge=1``: into queues, from whose heads the best is popped k
         times, one per cycle (a registered comparison matrix of the heads,
         updated from one comparator per lane, and a registered winner), into
         an accumulator copied to the output registers;
       * ``merge=2``: the same, with the comparisons of the queues' next
         entries also registered, a pop ahead (2 n (n - 1) comparators per side
         instead of n, no carry chain in the winner's loop), and the registers
         of large fan-out copied (:func:`hdl.blocks.kept_register`: the
         lanes' values and comparisons, the queues' and the accumulator's
         enables), and rank lanes that compare a value ahead (a registered
         comparison per entry, one stage more): faster, larger;
       * ``merge=0``: into a merge tree: pairs of sorted lists merged by a
         bitonic merger pruned to ``k`` outputs, level by level.

    **Latency and throughput.** One beat of P values per cycle (II = 1) for
    every k.  The result of a vector whose last beat is accepted in cycle
    ``c`` leaves in cycle ``c + L`` when the output is not stalled::

        merge=1, 2:  L = load_delay + k + 2,  load_delay = 2 + s (s + 1) / 2 + (merge == 2)
        merge=0:  L = 2 + s (s + 1) / 2 + sum over merge-tree levels of ceil(log2(a + b))

    with ``s = ceil(log2 P)`` (sorter levels) and ``(a, b)`` the longest pair
    of list lengths merged at each tree level (``config.merge_schedule``);
    e.g. 15 (merge=1), 16 (merge=2) and 13 (merge=0) cycles for P = 4, k = 8, 26,
    27 and 23 for P = 8, k = 16.  ``merge=0``: vectors back to back with no bubble and no
    minimum length; backpressure stalls the whole pipeline (``i.ready =
    ~o.valid | o.ready``).  ``merge=1``: nothing before the queues ever
    stalls; the input refuses a *last* beat whose lists the queues could not
    surely take ``load_delay`` cycles later (``i.ready = ~last | last_ok``),
    so vectors of at least ``config.min_beats = max(k, ceil((load_delay + k +
    1) / 2))`` beats stream with no bubble, and shorter ones are exact but
    wait.

    Parameters
    ----------
    width : int
        Value width in bits, signed (2..32, default 16).
    elems : int
        Values per beat, P (1..16, default 4).
    k : int
        Values kept per side (1..64, default 8).
    max_len : int
        Longest vector (1..65536, default 1024); positions have
        ``ceil(log2(max_len))`` bits.
    merge : int
        Final merge: 1 serial (default), 2 serial with its comparisons a pop
        ahead, 0 pipelined merge tree.
    ce_modules : int
        1 (default): each compare-exchange of the sorting networks is a module
        of its own (:class:`CompareExchange`), kept apart by the synthesis
        flow; 0: inline.

    Attributes
    ----------
    i : In(stream.Signature(in_layout))
    o : Out(stream.Signature(out_layout))
    """

    #: Tests only: an equal later value displaces an older one (breaks the tie rule).
    _plant_tie_bug = False
    _stage0_keys = True

    Config = OrizuruConfig

    def _core(self, m, advance, ready, s0):
        cfg = self._config
        if cfg.merge:
            m.d.comb += advance.eq(1)     # no global stall: see _serial_merge
        sorted_beat, last_d = self._beat_sorters(m, advance, s0)
        ctrl, base_next = self._lane_control(m, advance, s0)
        lanes = self._rank_lanes(m, advance, ctrl, sorted_beat, last_d, base_next)
        if cfg.merge:
            return self._serial_merge(m, ready, ctrl, lanes)
        valid, result = self._merge_tree(m, advance, ctrl, lanes)
        m.d.comb += [advance.eq(~valid | self.o.ready), ready.eq(advance)]
        return valid, result

    @staticmethod
    def _stage(m, advance, prefix):
        """The ``stage`` argument of :func:`network`: registers ``<prefix><level>_<i>``
        after every level (``advance`` their enable)."""
        stage_no = [0]

        def reg(elems):
            stage_no[0] += 1
            return [e if e is PAD or e is DEAD else
                    register(m, e, f"{prefix}{stage_no[0]}_{i}", en=advance)
                    for i, e in enumerate(elems)]
        return reg

    @staticmethod
    def _carry(m, advance, ctrl, depth, prefix):
        """The fields of ``ctrl`` (a :class:`_Control`) delayed along ``depth`` pipeline
        stages, registers ``<prefix><stage>_<field>``."""
        for d in range(depth):
            nxt = {}
            for name, v in ctrl._asdict().items():
                if v is None:
                    continue
                nxt[name] = Signal(len(v), name=f"{prefix}{d + 1}_{name}",
                                   reset_less=name != "valid")
                with m.If(advance):
                    m.d.sync += nxt[name].eq(v)
            ctrl = _Control(**nxt)
        return ctrl

    def _beat_sorters(self, m, advance, s0):
        """Stage 1: a pipelined beat sorter per side.  Returns ``(sorted_beat,
        last_d)``: per side, the first ``len(rank_lanes)`` outputs (registers), and the
        inputs of the last level's registers."""
        cfg = self._config
        P = cfg.elems
        nl = len(cfg.rank_lanes)
        levels = odd_even_sort_levels(_pow2(P))
        assert len(levels) == cfg.sort_depth
        sorted_beat = {}
        # merge=2 (the fast form): the sorter's last level also feeds copies of its output
        # registers, one pair per rank-lane entry (see _rank_lane_ahead); `last_d` keeps
        # that level's inputs of the registers
        last_d = {}
        for side in ("top", "bot"):
            elems = list(s0.key[side])
            elems += [PAD] * (_pow2(P) - P)

            stage = self._stage(m, advance, f"{side}_sort")

            def reg(elems, stage=stage, side=side):
                last_d[side] = elems          # the last call is the last level
                return stage(elems)
            sorted_beat[side] = network(elems, levels, range(nl), _key_beats,
                                        reg, self.stats,
                                        self._wire(m, f"{side}_sort_swap"),
                                        self._cell(m, f"{side}_sort"))
        return sorted_beat, last_d

    def _lane_control(self, m, advance, s0):
        """The input stage's control fields delayed to the rank lanes.  Returns
        ``(ctrl, base_next)``: ``ctrl.new_ahead`` is set when the next beat at the lanes
        starts a vector; ``base_next`` (``merge=2``) is the base of the beat a stage
        before the lanes, else ``None``."""
        cfg = self._config
        ctrl = _Control(s0.valid, s0.new, s0.last, s0.base)
        base_next = None
        if cfg.sort_depth:
            ctrl = self._carry(m, advance, ctrl, cfg.sort_depth - 1, "sort")
            ahead = ctrl.new                      # the next beat at the lanes starts a vector
            ctrl = self._carry(m, advance, ctrl, 1, "lanes")
        else:
            ahead = s0.new_in
        if cfg.merge == 2:
            # the lanes compare a value ahead (_rank_lane_ahead): the sorter's output is the
            # next value, the lanes' own registers hold the present one, a stage later
            ahead, base_next = ctrl.new, ctrl.base
            ctrl = self._carry(m, advance, ctrl, 1, "ahead")
        return ctrl._replace(new_ahead=ahead), base_next

    def _rank_lanes(self, m, advance, ctrl, sorted_beat, last_d, base_next):
        """Stage 2: per side, the rank lanes' entries (lists of keys, best first)."""
        cfg = self._config
        tb = max(1, (cfg.elems - 1).bit_length())   # lane tag bits
        copies = cfg.merge == 2 and cfg.sort_depth > 0
        lanes = {}
        for side in ("top", "bot"):
            lanes[side] = []
            for r, length in enumerate(cfg.rank_lanes):
                if cfg.merge == 2:
                    x_d = last_d[side][r] if copies else None
                    lanes[side].append(self._rank_lane_ahead(
                        m, ctrl, sorted_beat[side][r], x_d, base_next, length, tb,
                        f"{side}_lane{r}"))
                else:
                    lanes[side].append(self._rank_lane(
                        m, advance, ctrl, sorted_beat[side][r], length, tb, f"{side}_lane{r}"))
        return lanes

    def _rank_lane(self, m, advance, ctrl, x, length, tb, name):
        """One sorted insertion list of ``length`` entries; returns its registers.

        The loop of an entry is one comparator between two registers (the new value,
        a sorter output register, and the entry's value), one LUT (``b``) and the
        entry's flip-flop enable.  Within a lane the values arrive in position order,
        so a strictly better value (an equal older one keeps its place: it has the
        lower position) needs no position bits in the comparator.  The valid bits are
        kept apart: an entry is replaced when it is empty, when a vector starts (its
        contents belong to the previous vector) or when x's value is larger."""
        pb = self._config.pos_bits
        kb = self._config.entry_bits
        self.stats["cells"] += length
        xv = x[-1]                       # includes the beat's valid bit (stage 0)
        xval = x[tb:-1]                  # the value's key (unsigned, larger is better)
        pos = Signal(pb, name=f"{name}_pos")
        lane = Signal(pb, name=f"{name}_lane")
        m.d.comb += [lane.eq((~x[:tb])[:tb]), pos.eq((ctrl.base + lane)[:pb])]
        xfull = Signal(kb - 1, name=f"{name}_x")
        m.d.comb += xfull.eq(Cat(~pos, xval))
        data_, valid, live = _lane_entries(name, length, kb)
        w = _named_wire(m, name)
        # x beats entry i: a valid x and an empty entry, or a strictly larger value (an
        # equal older value keeps its place: it has the lower position).  With an invalid
        # x and an empty entry the result does not matter: empty entries move among
        # themselves.  The b_i are a thermometer code down the valid entries.
        # (x > e as the borrow of e - x: a carry chain whose last output is the enable)
        xk = Cat(xval, xv)

        def beats(e):
            return ~_gt(e, xk) if self._plant_tie_bug else _gt(xk, e)
        b = [w(beats(Cat(d[pb:], lv)), f"{i}_b") for i, (d, lv) in enumerate(zip(data_, live))]
        for i in range(length):
            # entry i takes the one above it (or x) when x beats it, else keeps its value
            above = xfull if i == 0 else Mux(b[i - 1], data_[i - 1], xfull)
            above_v = xv if i == 0 else Mux(b[i - 1], live[i - 1], xv)
            nv = Mux(b[i], above_v, live[i])
            with m.If(advance & b[i]):
                m.d.sync += data_[i].eq(above)
            with m.If(advance):
                m.d.sync += [valid[i].eq(nv), live[i].eq(nv & ~ctrl.new_ahead)]
        entries = [Cat(d, v) for d, v in zip(data_, valid)]
        return entries

    def _rank_lane_ahead(self, m, ctrl, x_next, x_d, base_next, length, tb, name):
        """``merge=2``: :meth:`_rank_lane` with its comparisons made a value ahead, so that
        no comparator output steers an entry in the cycle it is computed.

        ``x_next`` (the sorter's output register; ``x_d`` its input, or ``None`` when
        P = 1) is the value that reaches the lane in the *next* cycle; the lane's own
        registers hold the present one, ``x``, a cycle later (one pipeline stage more
        than :meth:`_rank_lane`).  ``b_i`` (x beats entry i) is a register: it was
        computed in the cycle before from two comparisons, ``c_i`` (x_next beats entry i
        as it is) and ``n_i`` (x_next beats x): ``b_i = n_i ? c_i : c_{i-1}`` (below).
        So the loop of an entry is register -> carry chain -> one LUT -> ``b_i``, and
        ``b_i`` (register copies: one for entry i's enables, one for entry i + 1's
        multiplexer selects) -> the entry's flip-flops.  ``x_next`` and ``x`` are copied per entry
        (:func:`hdl.blocks.kept_register`), so each feeds one entry's comparators.
        When the next beat starts a vector every entry will be empty, so ``b_i`` is 1
        then (a valid x beats an empty entry; with an invalid x, empty entries only
        move among themselves)."""
        pb = self._config.pos_bits
        kb = self._config.entry_bits
        self.stats["cells"] += length
        new_ahead = ctrl.new_ahead           # the next beat starts a vector

        def key(x):                             # a sorter output's key without its lane tag
            return Cat(x[tb:-1], x[-1])
        if x_d is None:                         # P = 1: the input register itself
            xn = [key(x_next)] * length
        else:
            xn = [kept_register(m, key(x_d), f"{name}_{i}_xn") for i in range(length)]
        # x: the present value, one copy per entry (each a copy of x_next a cycle later)
        xs = [kept_register(m, xn[i] if x_d is not None else key(x_next), f"{name}_{i}_x")
              for i in range(length)]
        # the present value's position, registered from x_next's lane tag and base
        pos = register(m, (base_next + (~x_next[:tb])[:tb])[:pb], f"{name}_pos")
        data_, valid, live = _lane_entries(name, length, kb)
        b = [Signal(name=f"{name}_{i}_b", reset_less=True) for i in range(length)]
        w = _named_wire(m, name)

        def beats(xk, e):
            return ~_gt(e, xk) if self._plant_tie_bug else _gt(xk, e)
        # c_i: x_next beats entry i as it is now; n_i: x_next beats x (one per entry, on
        # the entry's own copies)
        c = [w(beats(xn[i], Cat(data_[i][pb:], live[i])), f"{i}_c") for i in range(length)]
        n = [w(beats(xn[i], xs[i]), f"{i}_n") for i in range(length)]
        # b_i one cycle ahead, without the present b: the list is sorted, so the c_i are a
        # thermometer code (x_next beats the entries from its insertion point q on, and
        # every empty one).  x enters the list now; if x_next beats x, x_next's insertion
        # point in the next list is q too (x goes in at q or later: x_next beats x, which
        # beats what follows it), else q + 1 (x, not beaten, comes before it): b_i = c_i
        # or c_{i-1}.  (With an invalid x_next only the valid entries matter, and neither
        # case beats one; the same holds with an invalid x.)  When the next beat starts a
        # vector every entry will be empty: b_i = 1.
        b_nxt = [new_ahead | Mux(n[i], c[i], c[i - 1] if i else 0) for i in range(length)]
        m.d.sync += [b[i].eq(b_nxt[i]) for i in range(length)]
        # copies of b_i: entry i's enables, entry i + 1's multiplexer selects
        b_nxt = [w(v, f"{i}_b_next") for i, v in enumerate(b_nxt)]   # one LUT for the copies
        b_en = [kept_register(m, b_nxt[i], f"{name}_{i}_en") for i in range(length)]
        b_sel = [kept_register(m, b_nxt[i], f"{name}_{i}_sel") for i in range(length - 1)]
        for i in range(length):
            xf, xv = Cat(~pos, xs[i][:-1]), xs[i][-1]
            above = xf if i == 0 else Mux(b_sel[i - 1], data_[i - 1], xf)
            above_v = xv if i == 0 else Mux(b[i - 1], live[i - 1], xv)
            nv = Mux(b[i], above_v, live[i])
            # the enable written as a multiplexer (synthesis infers the same flip-flop enable):
            # as an `if`, the Verilog's next state of the entry is an `always @*` block whose
            # inputs here are all registers that keep their initial values until a beat
            # arrives, so an event-driven simulator (Icarus) does not run it before the
            # first clock edge and clocks X into the entry
            m.d.sync += data_[i].eq(Mux(b_en[i], above, data_[i]))
            m.d.sync += [valid[i].eq(nv), live[i].eq(nv & ~new_ahead)]
        return [Cat(d, v) for d, v in zip(data_, valid)]

    def _merge_tree(self, m, advance, ctrl, lanes):
        """``merge=0``: in the cycle after a vector's last beat the lanes hold its lists
        (the pipeline stalls as a whole, so they stay while the output is stalled); they
        enter the merge tree then."""
        cfg = self._config
        k = cfg.k
        snapshot = dict(lanes)
        mvalid = Signal(name="merge0_valid")
        with m.If(advance):
            m.d.sync += mvalid.eq(ctrl.valid & ctrl.last)
        for side in ("top", "bot"):
            groups = snapshot[side]
            for t, (pairs, tdepth) in enumerate(cfg.merge_schedule):
                flat, lv_all, needed, spans = [], [[] for _ in range(tdepth)], [], []
                for j in range(0, len(groups) - 1, 2):
                    a, b = groups[j], groups[j + 1]
                    assert (len(a), len(b)) == pairs[j // 2]
                    n = _pow2(len(a) + len(b))
                    seg = a + [PAD] * (n - len(a) - len(b)) + b[::-1]   # a bitonic sequence
                    off = len(flat)
                    merge = bitonic_merge_levels(n)
                    for d, level in enumerate(merge):
                        lv_all[tdepth - len(merge) + d] += [(off + x, off + y) for x, y in level]
                    keep = min(k, len(a) + len(b))
                    spans.append((len(needed), keep))
                    needed += range(off, off + keep)
                    flat += seg
                if len(groups) % 2:
                    off = len(flat)
                    spans.append((len(needed), len(groups[-1])))
                    needed += range(off, off + len(groups[-1]))
                    flat += groups[-1]
                out = network(flat, lv_all, needed, _key_beats,
                              self._stage(m, advance, f"{side}_m{t}_"),
                              self.stats, self._wire(m, f"{side}_m{t}_swap"),
                              self._cell(m, f"{side}_m{t}_"))
                groups = [out[s:s + n] for s, n in spans]
            assert len(groups) == 1 and len(groups[0]) == k
            snapshot[side] = groups[0]
        valid = self._carry(m, advance, _Control(mvalid), cfg.merge_depth, "merge").valid
        return valid, snapshot

    def _serial_merge(self, m, ready, ctrl, lanes):
        """``merge=1, 2``: the lanes' lists copied into queues in the cycle after a
        vector's last beat (the load), then the best of the queue heads popped k times,
        one per cycle, into the result registers (per side a :class:`_SerialMerge` or a
        :class:`_LookaheadMerge`).

        Nothing before the queues ever stalls: the input refuses a last beat that
        would reach the lanes while the queues are still busy (:meth:`_last_ready`).
        Returns ``(valid, result)``."""
        control = self._merge_control(m, ctrl)
        self._last_ready(m, ready, control)
        form = _LookaheadMerge if self._config.merge == 2 else _SerialMerge
        result = {side: form(self, m, control, side, lanes[side]).build()
                  for side in ("top", "bot")}
        return control.full, result

    def _merge_control(self, m, ctrl):
        """The serial merge's control registers, one set for both sides: the load, the
        pops, and which of the accumulator and the output registers hold a result."""
        k = self._config.k
        # counters as thermometer codes (bit j: "more than j"), so that every test of them
        # is one register bit and a count down is a shift
        left = Signal(k, name="pops_left")        # pops left in the current vector
        load = Signal(name="load")                # the lanes hold a finished vector
        # `pop` is a register: the pops of a vector run k cycles in a row into the
        # accumulator `acc` once started, and start only when `acc` is free (or is
        # surely copied to the output registers in the cycle the first pop shifts it)
        pop = Signal(name="pop")
        acc_full = Signal(name="acc_full")        # acc holds a result not yet copied out
        full = Signal(name="result_full")         # the output registers hold a result
        last_pop = Signal(name="last_pop")
        copy = Signal(name="copy")                # acc -> output registers
        m.d.comb += [
            last_pop.eq(pop & left[0] & ~(left[1] if k > 1 else 0)),
            copy.eq(acc_full & (~full | self.o.ready)),
        ]
        load_next = ctrl.valid & ctrl.last
        left_next = Mux(load, Const((1 << k) - 1, k), Mux(pop, left[1:], left))
        acc_full_next = last_pop | (acc_full & ~copy)
        full_next = copy | (full & ~self.o.ready)
        free_next = ~acc_full_next | ~full_next   # acc may shift in the next cycle
        pop_next = left_next[0] & free_next
        m.d.sync += [
            left.eq(left_next),
            pop.eq(pop_next),
            acc_full.eq(acc_full_next),
            full.eq(full_next),
            load.eq(load_next),                      # a load may meet the last pop
        ]
        return _MergeControl(load=load, pop=pop, left=left, acc_full=acc_full, full=full,
                             last_pop=last_pop, copy=copy, load_next=load_next,
                             left_next=left_next, free_next=free_next, o_ready=self.o.ready)

    def _last_ready(self, m, ready, c):
        """Drive ``ready`` (``i.ready``) for the serial merge: a last beat accepted in
        cycle t loads in cycle t + ``load_delay``; the queues must have made their last
        pop by then.  ``last_ok`` is a register (computed for the next cycle), so
        ``i.ready`` is one LUT of registers and ``i.payload.last``."""
        k = self._config.k
        fwd = self._config.load_delay             # accepted last beat -> its load
        left, pop = c.left, c.pop
        # `pending` counts accepted vectors not yet fully popped; `rem` is the number of
        # cycles until the last pop of the newest one, if its pops do not wait from now on.
        pending = Signal(2, name="pending")
        rem_top = fwd + k - 1
        rem = Signal(rem_top, name="pops_due")
        last_ok = Signal(name="last_ok", init=1)
        take_last = self.i.valid & self.i.payload.last & last_ok
        stall = left[0] & ~pop
        rem_load = Const((1 << rem_top) - 1, rem_top)
        rem_next = Mux(take_last, rem_load, Mux(rem[0] & ~stall, rem[1:], rem))
        m.d.sync += [pending.eq(pending + take_last - c.last_pop), rem.eq(rem_next)]
        # A last beat may be taken when no vector is pending, or when the one pending
        # vector's last pop surely comes by the time of the new load: its pops cannot
        # wait once started (acc fills only with its own last pop), nor if acc is empty
        # or will be copied out.  `rem` counts a wait only in the cycle after it: a pop
        # waiting in this cycle (`stall`) delays the last pop by one more cycle than
        # `rem` says (rem + stall <= fwd).
        # `last_ok` is a register, computed for the next cycle from the next state, so
        # that `i.ready` is one LUT of registers and the input's `last`: the next state
        # depends on whether a last beat is taken now, so it is computed for both cases
        # and selected by `take_last`.  The output's `ready` of the next cycle is not
        # known, so a copy then is counted only if the output registers will be free (a
        # stricter condition, which only backpressure can meet: no effect on `min_beats`).
        stall_n = c.left_next[0] & ~c.free_next

        def ok_next(tl):
            pend = (pending + tl - c.last_pop)[:len(pending)]
            rem_n = rem_load if tl else Mux(rem[0] & ~stall, rem[1:], rem)
            due_ok = Mux(stall_n, ~rem_n[fwd - 1], ~rem_n[fwd] if fwd < rem_top else 1)
            return ~pend.any() | ((pend == 1) & due_ok & c.free_next)
        m.d.sync += last_ok.eq(Mux(take_last, ok_next(1), ok_next(0)))
        m.d.comb += ready.eq(~self.i.payload.last | last_ok)


def _lane_entries(name, length, kb):
    """A rank lane's entry registers: value and position in one register per entry
    (written only when x replaces the entry or the one above it: a flip-flop enable), the
    valid bit in another, and ``live``: valid and of the vector of the beat now at the
    lane (cleared one cycle ahead when the next beat starts a vector), so the comparators
    read registers only."""
    data_ = [Signal(kb - 1, name=f"{name}_{i}", reset_less=True) for i in range(length)]
    valid = [Signal(name=f"{name}_{i}_valid", reset_less=True) for i in range(length)]
    live = [Signal(name=f"{name}_{i}_live", reset_less=True) for i in range(length)]
    return data_, valid, live


def _named_wire(m, name):
    """``w(value, suffix)``: ``value`` on a wire named ``<name>_<suffix>`` (a readable
    net in the Verilog and the netlist)."""
    def w(value, suffix):
        sig = Signal(len(value), name=f"{name}_{suffix}")
        m.d.comb += sig.eq(value)
        return sig
    return w


def _and_all(values):
    out = values[0]
    for v in values[1:]:
        out = out & v
    return out


def _or_all(values):
    out = values[0]
    for v in values[1:]:
        out = out | v
    return out


@dataclass
class _MergeControl:
    """The serial merge's control, one set for both sides (:meth:`Orizuru._merge_control`)."""
    load: Signal            # the lanes hold a finished vector: the queues load
    pop: Signal             # the best head moves into the accumulator
    left: Signal            # pops left in the current vector (thermometer code)
    acc_full: Signal        # the accumulator holds a result not yet copied out
    full: Signal            # the output registers hold a result
    last_pop: Signal
    copy: Signal            # accumulator -> output registers
    load_next: Value        # next state of `load`
    left_next: Value        # next state of `left`
    free_next: Value        # the accumulator may shift in the next cycle
    o_ready: Value          # the output's `ready`

    @cached_property
    def pop_next_r(self):
        """``pop``'s next state from registers only (no shared `last_pop`, `copy` or
        `free_next` signal), for logic built inside each copy of a register (``inside``
        of :func:`hdl.blocks.kept_register`) rather than fanned out from one net."""
        left, pop, acc_full, full = self.left, self.pop, self.acc_full, self.full
        lp_r = pop & left[0] & ~(left[1] if len(left) > 1 else 0)
        cp_r = acc_full & (~full | self.o_ready)
        left0_next = self.load | Mux(pop, left[1] if len(left) > 1 else 0, left[0])
        return left0_next & (~(lp_r | (acc_full & ~cp_r))
                             | ~(cp_r | (full & ~self.o_ready)))


class _QueueMerge:
    """One side of the serial merge (``merge=1, 2``): what both forms share.

    At the load the rank lanes' lists are copied into queues (one per lane); then, once
    per pop, the winner's head moves (decoded: one decoder per side, not k) into an
    accumulator of k entries, copied to the result registers when they are free.  The
    heads are compared through a registered matrix ``g[a][b] = head a >= head b``
    (a < b), all ones at the load (the best rank-r value beats the best rank-(r+1)
    value, and empty entries rank below valid ones), and updated at each pop from
    relations ``nb[a, b]`` (a's next entry beats b's head) that read registers only
    (:meth:`relations`).  The winner itself is a register, one-hot, computed for the
    next cycle from those relations and the matrix, so a queue's shift enable is one
    LUT of registers.

    The forms (:class:`_SerialMerge`, :class:`_LookaheadMerge`) provide
    :meth:`relations`, :meth:`next_winner` and the enables of the queues, the
    accumulator and the result registers.
    """

    def __init__(self, unit, m, control, side, lanes):
        cfg = unit._config
        self.unit, self.m, self.c, self.side, self.lanes = unit, m, control, side, lanes
        self.k = cfg.k
        self.kb = kb = cfg.entry_bits
        self.queues = [[Signal(kb, name=f"{side}_q{r}_{i}", reset_less=True)
                        for i in range(len(lane))] for r, lane in enumerate(lanes)]
        self.n = n = len(self.queues)
        self.heads = [q[0] for q in self.queues]
        self.nexts = [q[1] if len(q) > 1 else Const(0, kb) for q in self.queues]
        self.g = {(a, b): Signal(name=f"{side}_g{a}_{b}", init=1)
                  for a in range(n) for b in range(a + 1, n)}
        # the winner is a register (one-hot, lane 0 after a load and after reset: the
        # matrix is all ones then), so a queue's enable is one LUT of registers
        self.win = [Signal(name=f"{side}_win{a}", init=int(a == 0)) for a in range(n)]
        self.nb = None

    def build(self):
        """Build the side; returns its k result registers (decoded entries)."""
        m, side, k = self.m, self.side, self.k
        self.nb = self.relations()
        self._update_matrix()
        nxts = self._update_winner()
        best = Signal(self.kb, name=f"{side}_best")
        m.d.comb += best.eq(_or_all([Mux(w, h, 0) for w, h in zip(self.win, self.heads)]))
        self.shift_queues(nxts)
        dec = self.unit._decode(self.best_entry(best), side)
        acc = [Signal(self.unit.entry_layout, name=f"{side}_acc{j}", reset_less=True)
               for j in range(k)]
        shifted = [acc[j + 1] if j + 1 < k else Cat(dec.value, dec.pos, dec.valid)
                   for j in range(k)]
        self.shift_acc(acc, shifted)
        res = [Signal(self.unit.entry_layout, name=f"{side}_res{j}", reset_less=True)
               for j in range(k)]
        self.copy_results(res, acc)
        return res

    def beats_now(self, a, b):
        """Head a beats head b (the matrix)."""
        return self.g[a, b] if a < b else ~self.g[b, a]

    def _update_matrix(self):
        m, c, win, nb = self.m, self.c, self.win, self.nb
        for (a, b), gab in self.g.items():
            with m.If(c.load):
                m.d.sync += gab.eq(1)
            with m.Elif(c.pop & win[a]):
                m.d.sync += gab.eq(nb[a, b])
            with m.Elif(c.pop & win[b]):
                m.d.sync += gab.eq(~nb[b, a])

    def _update_winner(self):
        """The winner's registers; returns their next states (wires), one per lane."""
        m, c = self.m, self.c
        nxts = []
        for a in range(self.n):
            nxt = Signal(name=f"{self.side}_win{a}_next")
            nxts.append(nxt)
            m.d.comb += nxt.eq(self.next_winner(a))
            with m.If(c.load):
                m.d.sync += self.win[a].eq(int(a == 0))
            with m.Elif(c.pop):
                m.d.sync += self.win[a].eq(nxt)
        return nxts

    def best_entry(self, best):
        """The key that enters the accumulator (``best``: the winner's head)."""
        return best


class _SerialMerge(_QueueMerge):
    """``merge=1``: one comparator per lane, the winner's next entry against each head.

    The registers of the queues, the accumulator and the results share one enable each
    (``load``, ``pop``, ``copy``); an empty entry loads as zeros.
    """

    def relations(self):
        # nb[a][b]: a's next entry beats b's head, needed only when a pops (is the
        # winner): one comparator per lane, the winner's next entry (selected by the
        # one-hot winner register) against each head.  Valid entries never tie (a
        # vector's positions differ), and a tie between two empty entries never
        # matters (no valid entry is left when only they compete), so the
        # comparison needs no tie rule by lane
        m, side, n = self.m, self.side, self.n
        nsel = Signal(self.kb, name=f"{side}_next_sel")
        m.d.comb += nsel.eq(_or_all([Mux(w, x, 0) for w, x in zip(self.win, self.nexts)]))
        self.ge = []
        for b in range(n):
            c = Signal(name=f"{side}_next_ge_h{b}")
            m.d.comb += c.eq(_ge(nsel, self.heads[b]))
            self.ge.append(c)
            self.unit.stats["compare"] += 1
        return {(a, b): self.ge[b] for a in range(n) for b in range(n) if a != b}

    def next_winner(self, a):
        # with one comparison per head: lane a wins again if its next entry beats every
        # other head; another lane a wins if its head beats the winner's next entry and
        # every head but the winner's
        ge, n, win = self.ge, self.n, self.win
        again = _and_all([ge[b] for b in range(n) if b != a] or [Const(1)])
        other = _and_all([~ge[a]] + [self.beats_now(a, b) | win[b]
                                     for b in range(n) if b != a])
        return Mux(win[a], again, other)

    def shift_queues(self, nxts):
        m, c = self.m, self.c
        for q, lane, w in zip(self.queues, self.lanes, self.win):
            with m.If(c.load):
                # an empty entry loads as zeros, so empty heads tie (the lower lane wins)
                m.d.sync += [e.eq(Mux(v[-1], v, 0)) for e, v in zip(q, lane)]
            with m.Elif(c.pop & w):
                m.d.sync += [e.eq(q[i + 1] if i + 1 < len(q) else 0)
                             for i, e in enumerate(q)]

    def shift_acc(self, acc, shifted):
        with self.m.If(self.c.pop):
            self.m.d.sync += [a_.eq(v) for a_, v in zip(acc, shifted)]

    def copy_results(self, res, acc):
        with self.m.If(self.c.copy):
            self.m.d.sync += [r.eq(a) for r, a in zip(res, acc)]


class _LookaheadMerge(_QueueMerge):
    """``merge=2``: the relations a pop ahead, in registers, and enables from copies.

    ``load``, ``pop`` and each lane's shift enable ``load | pop & win[a]`` drive every
    queue entry and accumulator entry; there they are copies of their own (kept
    registers, computed from the next state like the originals, see
    :attr:`_MergeControl.pop_next_r`), one per group of :attr:`group` entries, so that
    each drives a few entries' flip-flop enables and selects, no LUT between them.
    """

    #: Entries (of a queue, of the accumulator, of the results) per copy of an enable.
    group = 4

    def relations(self):
        """The relations "next entry of a beats head of b" held in registers
        ``c[a][b]``, updated a pop ahead, so the winner's loop is LUT logic on registers.

        When lane w pops, its next entry becomes its head and its third entry its next:
        ``c[w][b] <- q_w[2] beats q_b[0]`` and ``c[a][w] <- q_a[1] beats q_w[1]`` (one
        comparator per ordered and per unordered pair, each followed by one LUT).  At a
        load, ``c[a][b]`` for a > b is 0 (the best rank-b value beats the second best
        rank-a value), and for a < b it is compared from the lanes' registers into
        ``lc[a][b]``, used (``fresh``) until the first pop of a or b replaces it.
        Returns ``{(a, b): relation}``."""
        m, side, queues, lanes, win = self.m, self.side, self.queues, self.lanes, self.win
        load, pop = self.c.load, self.c.pop
        stats = self.unit.stats
        n = self.n
        zero = Const(0, self.kb)

        def entry(q, i):
            return q[i] if i < len(q) else zero

        def lane_entry(lane, i):
            # not masked to zero when empty (the queues are): the valid bit on top still
            # ranks every valid entry above every empty one, and relations between two
            # empty heads never matter (no valid entry is left when only they compete)
            return lane[i] if i < len(lane) else zero
        ahead = {}
        third = {}            # (w, b): q_w[2] beats q_b[0]
        nexts = {}            # (a, b), a < b: q_a[1] beats q_b[1]
        for a in range(n):
            for b in range(n):
                if a == b:
                    continue
                t = Signal(name=f"{side}_t{a}_ge_h{b}")
                m.d.comb += t.eq(_beats_tie(entry(queues[a], 2), entry(queues[b], 0), a < b))
                third[a, b] = t
                stats["compare"] += 1
                if a < b:
                    x = Signal(name=f"{side}_n{a}_ge_n{b}")
                    m.d.comb += x.eq(_beats_tie(entry(queues[a], 1), entry(queues[b], 1), True))
                    nexts[a, b] = x
                    stats["compare"] += 1
        for a in range(n):
            for b in range(n):
                if a == b:
                    continue
                c = Signal(name=f"{side}_c{a}_{b}", reset_less=True)
                # a pops: its third entry against b's head; b pops: a's next against b's next
                upd = Mux(win[a], third[a, b], nexts[a, b] if a < b else ~nexts[b, a])
                if a > b:
                    with m.If(load):
                        m.d.sync += c.eq(0)
                    with m.Elif(pop & (win[a] | win[b])):
                        m.d.sync += c.eq(upd)
                else:                 # while fresh, lc stands for it
                    with m.If(pop & (win[a] | win[b])):
                        m.d.sync += c.eq(upd)
                if a > b:
                    ahead[a, b] = c
                    continue
                lc = Signal(name=f"{side}_lc{a}_{b}", reset_less=True)
                fresh = Signal(name=f"{side}_fresh{a}_{b}")
                with m.If(load):
                    m.d.sync += [lc.eq(_beats_tie(lane_entry(lanes[a], 1),
                                                  lane_entry(lanes[b], 0), True)),
                                 fresh.eq(1)]
                with m.Elif(pop & (win[a] | win[b])):
                    m.d.sync += fresh.eq(0)
                stats["compare"] += 1
                rel = Signal(name=f"{side}_r{a}_{b}")
                m.d.comb += rel.eq(Mux(fresh, lc, c))
                ahead[a, b] = rel
        return ahead

    def beats_after(self, a, b, w):
        """Head a beats head b once lane w has popped."""
        if a == w:
            return self.nb[a, b]
        if b == w:
            return ~self.nb[b, a]
        return self.beats_now(a, b)

    def next_winner(self, a):
        # the next winner, flattened over the lane that pops: for each w, an AND of
        # n - 1 relations (matrix bits and comparator outputs), selected by win[w]
        terms = []
        for w in range(self.n):
            rel = [self.beats_after(a, b, w) for b in range(self.n) if b != a]
            terms.append(_and_all([self.win[w]] + rel))
        return _or_all(terms)

    def shift_queues(self, nxts):
        m, c, side, group = self.m, self.c, self.side, self.group
        for a, (q, lane) in enumerate(zip(self.queues, self.lanes)):
            for i, (e, v) in enumerate(zip(q, lane)):
                if i % group == 0:
                    g_ = f"{side}_q{a}_{i // group}"
                    ld = kept_register(m, c.load_next, f"{g_}_ld", reset_less=False)
                    # the shift enable is one LUT of two copies: of `pop` (its next
                    # state built inside) and of the winner bit, whose next state `nxt`
                    # goes straight to the flip-flop's d (`load` becomes its synchronous
                    # set/reset, `load | pop` its clock enable): no LUT after `nxt`
                    pc = kept_register(m, c.pop_next_r, f"{g_}_pop", reset_less=False,
                                       inside=True)
                    # (no reset: `pop` is 0 from reset until a load sets the copy, so
                    # its value before the first load never reaches an enable; a
                    # reset would take the flip-flop's set/reset input that `load`
                    # needs, and `init` is the value `load` sets, as an ECP5
                    # flip-flop's must be)
                    wc = kept_register(m, Mux(c.load, int(a == 0), nxts[a]), f"{g_}_win",
                                       enable=c.load | c.pop, init=int(a == 0), inside=True)
                    sh = Signal(name=f"{g_}_sh")
                    m.d.comb += sh.eq(pc & wc)
                # an empty entry is loaded as it is (merge=1 zeroes it): its valid bit
                # on top ranks it below every valid entry, relations between two empty
                # heads never matter, and the results take their valid bit from the
                # heads (`best_entry`), so no set/reset logic sits behind `ld`
                with m.If(ld):
                    m.d.sync += e.eq(v)
                with m.Elif(sh):
                    m.d.sync += e.eq(q[i + 1] if i + 1 < len(q) else 0)

    def best_entry(self, best):
        # the best entry's valid bit is read from all heads, not through the winner: the
        # winner has the best head, so it is valid when any head is (and the empty
        # entries that follow it are zeros); one LUT of registers instead of the
        # winner's head selection
        any_valid = Signal(name=f"{self.side}_best_valid")
        self.m.d.comb += any_valid.eq(_or_all([h[-1] for h in self.heads]))
        return Cat(best[:-1], any_valid)

    def shift_acc(self, acc, shifted):
        m = self.m
        for j in range(self.k):
            if j % self.group == 0:
                pj = kept_register(m, self.c.pop_next_r, f"{self.side}_acc{j // self.group}_pop",
                                   reset_less=False, inside=True)
            with m.If(pj):
                m.d.sync += acc[j].eq(shifted[j])

    def copy_results(self, res, acc):
        m, c = self.m, self.c
        for j in range(self.k):
            # `copy` reads the output's `ready` in the same cycle, so its copies are
            # logic, one per group of result entries (not one net to all 2 k of them)
            if j % self.group == 0:
                cj = kept_logic(m, c.acc_full & (~c.full | c.o_ready),
                                f"{self.side}_res{j // self.group}_copy")
            with m.If(cj):
                m.d.sync += res[j].eq(acc[j])


class OrizuruBaseline(_TopKUnit):
    """Baseline of :class:`Orizuru`: a full bitonic sorting network of the same throughput.

    Same ports, parameters and result as :class:`Orizuru` (see there).  Per
    side, every cycle, one bitonic sorting network sorts the k entries kept so
    far together with the P new values (``k + P`` inputs padded to a power of
    2) and its first k outputs, pruned of what feeds nothing else, become the
    kept entries: a combinational loop of ``s (s + 1) / 2`` compare-exchange
    levels, ``s = ceil(log2(k + P))``.  The kept entries of the last beat are
    the result.

    Latency and throughput: II = 1 (P values per cycle), no bubble between
    vectors; the result of a vector whose last beat is accepted in cycle
    ``c`` leaves in cycle ``c + 2`` (input register, result register).
    ``ce_modules`` as in :class:`Orizuru`.
    """

    Config = OrizuruBaselineConfig

    def _core(self, m, advance, ready, s0):
        cfg = self._config
        P, k, pb = cfg.elems, cfg.k, cfg.pos_bits
        n = cfg.network_inputs
        levels = bitonic_sort_levels(n)
        result = {}
        ovalid = register(m, s0.valid & s0.last, "out_valid", en=advance, reset_less=False)
        for side in ("top", "bot"):
            kept = [Signal(cfg.width + pb + 1, name=f"{side}_kept{i}", reset_less=True)
                    for i in range(k)]
            elems = [Cat(e[:-1], e[-1] & ~s0.new) for e in kept]
            for p in range(P):
                pos = Signal(pb, name=f"{side}_pos{p}")
                m.d.comb += pos.eq((s0.base + Const(p, pb))[:pb])
                elems.append(self.key(s0.x[p], pos, s0.lv[p], side))
            elems += [PAD] * (n - len(elems))
            out = network(elems, levels, range(k), _key_beats, None, self.stats,
                          self._wire(m, f"{side}_ce"), self._cell(m, f"{side}_"))
            with m.If(advance & s0.valid):
                m.d.sync += [kp.eq(o) for kp, o in zip(kept, out)]
            result[side] = [register(m, o, f"{side}_out{i}",
                                     en=advance & s0.valid & s0.last)
                            for i, o in enumerate(out)]
        m.d.comb += [advance.eq(~ovalid | self.o.ready), ready.eq(advance)]
        return ovalid, result
