"""What the row units (histogram softmax and norm, and their baselines) share: the beat
layouts, the row-buffer input stage, the read-back of a buffered row, the output
register with its skid register, and the baselines' common component.

Not a unit of its own: everything here is built inside a unit's ``elaborate``.
"""

from types import SimpleNamespace

from amaranth import Cat, Mux, Signal, signed, unsigned
from amaranth.lib import data, stream
from amaranth.lib.wiring import In, Out

from hdl.blocks import banked_memory
from hdl.component import ConfiguredComponent

__all__ = [
    "RowInput",
    "RowRead",
    "SkidOutput",
    "ValueRowUnit",
    "last_beat_compares",
    "row_input",
    "row_layouts",
    "wait_cycles",
]


def row_layouts(field, in_shape, out_shape, elems, count_bits):
    """The beat layouts of a row unit: the input ``{field: elems x in_shape, count, first,
    last}`` and the output ``{y: elems x out_shape, count, first, last}`` (``count``:
    the valid lanes, ``count_bits`` bits)."""
    in_layout = data.StructLayout({
        field: data.ArrayLayout(in_shape, elems),
        "count": unsigned(count_bits), "first": 1, "last": 1})
    out_layout = data.StructLayout({
        "y": data.ArrayLayout(out_shape, elems),
        "count": unsigned(count_bits), "first": 1, "last": 1})
    return in_layout, out_layout


def row_input(m, unit, field):
    """The :class:`RowInput` of a row unit (``i``, ``overflow`` and a configuration with
    ``max_beats``): every beat's ``field`` values and its count, in LUTRAM banks."""
    return RowInput(m, unit.i, unit.overflow,
                    Cat(getattr(unit.i.payload, field).as_value(), unit.i.payload.count),
                    unit.config.max_beats)


class RowInput:
    """A row of beats into a row buffer, one beat per cycle, and the stage-0 registers.

    While a row comes in, every accepted beat (``i.valid & i.ready``) is
    written into the row buffer (``word``, the bits to keep of the beat, at
    address ``wptr``; ``depth`` words in LUTRAM banks) and its
    payload is registered into ``s0`` (with ``s0_valid`` when it was stored,
    ``s0_end`` when it was the row's ``last`` beat), where the unit
    computes its per-beat statistics in the following cycle.  After the
    ``last`` beat the input stops (``i.ready = ~busy``) until the unit
    raises ``clear`` (one cycle, when the row's last output beat is taken),
    which also rewinds ``wptr`` to 0.  Beats beyond ``depth`` are dropped (the
    row is cut) and ``overflow`` is set until reset.

    Attributes
    ----------
    read : the row buffer's read port (the unit drives ``addr`` and ``en``; ``data``).
    read_latency : cycles from ``addr`` to ``data``: ``banked_latency(depth)``
        (:func:`hdl.blocks.banked_memory`, no block RAM clock-to-out on the path).
    wptr : beats of the current row in the buffer, 0 .. ``depth``.
    busy : the row's last beat is in; input stopped.
    s0, s0_valid, s0_end : the registered beat, stored, and the last of its row.
    store : (comb) the beat presented this cycle is accepted and stored.
    clear : driven by the unit (comb): the row is done, take the next one.
    """

    def __init__(self, m, i, overflow, word, depth, name="row_buffer"):
        self.busy = Signal(name=f"{name}_busy")
        self.wptr = Signal(range(depth + 1), name=f"{name}_wptr")
        self.clear = Signal(name=f"{name}_clear")
        self.s0 = Signal(i.payload.shape(), name="s0")
        self.s0_valid = Signal(name="s0_valid")
        self.s0_end = Signal(name="s0_end")
        full = Signal(name=f"{name}_full")
        fire = Signal(name=f"{name}_fire")
        self.store = Signal(name=f"{name}_store")     # comb: this cycle's beat is stored
        self._count = i.payload.count

        # ``full`` (``wptr == depth``) is a registered look-ahead: set as the beat that makes
        # ``wptr`` reach ``depth`` is stored, so no compare sits in front of ``wptr``'s enable
        m.d.comb += [
            i.ready.eq(~self.busy),
            fire.eq(i.valid & ~self.busy),
            self.store.eq(fire & ~full),
        ]
        # LUTRAM banks: ``read.data`` is valid ``read_latency`` cycles after ``read.addr``
        # is presented with ``read.en`` (see :func:`banked_memory`)
        self.read = SimpleNamespace(addr=Signal(range(depth), name=f"{name}_raddr"),
                                    en=Signal(name=f"{name}_ren"))
        # the write is registered (it lands a cycle later; the row is read back after
        # the per-row computation), with one registered write enable per bank
        self.read.data, self.read_latency = banked_memory(
            m, name, unsigned(len(word)), depth, self.read.addr, we=self.store,
            waddr=self.wptr, wdata=word, en=self.read.en, wreg=True)
        m.d.sync += [self.s0_valid.eq(fire & ~full), self.s0_end.eq(fire & i.payload.last),
                     self.s0.eq(i.payload)]
        with m.If(fire):
            with m.If(i.payload.last):
                m.d.sync += self.busy.eq(1)
            with m.If(full):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.sync += [self.wptr.eq(self.wptr + 1), full.eq(self.wptr == depth - 1)]
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(0), self.wptr.eq(0), full.eq(0)]

    def lane_valid(self, m, elems):
        """Per lane ``p`` of the beat in ``s0``: stored and holding an element (``count >
        p``), registered with ``s0`` from the input beat (``s0_lv<p>``)."""
        lv = [Signal(name=f"s0_lv{p}") for p in range(elems)]
        m.d.sync += [lv[p].eq(self.store & (self._count > p)) for p in range(elems)]
        return lv


class RowRead:
    """Reads a :class:`RowInput`'s buffered row back from its first beat, one beat per
    cycle with ``advance``, while ``active``; rewinds while ``active`` is low (so a row
    can be read more than once: raise ``active`` again).

    ``issue`` (comb): a read of beat ``rptr`` is issued this cycle if ``advance``;
    ``at_first`` and ``at_last`` (registered look-aheads, no compare on the issue path):
    that beat is the row's first / last.  After the last beat ``issue`` stays low until
    the rewind.  Drives the buffer's read port (``addr``, ``en = advance``).

    ``at_last``'s next value is selected from registered compares, free running (``rptr``
    and the row's length are still for a cycle before any step): ``rptr == wlast - 1``
    for a step after a cycle without one, ``rptr == wlast - 2`` for a step after a step
    (``rptr`` one higher now), ``wlast == 0`` on the rewind; no compare in front of it.
    So the row's last beat must be in four cycles, and ``active`` low for two, before a
    pass starts (the baselines wait far longer: their per-row sums and normalization).
    """

    def __init__(self, m, rows, active, advance, name="row_read"):
        self.rptr = Signal.like(rows.wptr, name=f"{name}_rptr")
        self.issue = Signal(name=f"{name}_issue")
        self.at_first = Signal(init=1, name=f"{name}_at_first")
        self.at_last = Signal(name=f"{name}_at_last")
        rend = Signal(name=f"{name}_end")            # the last beat was issued
        # the row's last beat and the one before (registered; still while the row is read)
        wlast = Signal.like(rows.wptr, name=f"{name}_wlast")
        wlast1 = Signal.like(rows.wptr, name=f"{name}_wlast1")
        step = Signal(name=f"{name}_step")
        m.d.sync += [wlast.eq(rows.wptr - 1), wlast1.eq(wlast - 1)]
        next_last, last_only = last_beat_compares(m, self.rptr, wlast, wlast1, step, f"{name}_")
        m.d.comb += [self.issue.eq(active & ~rend), rows.read.en.eq(advance),
                     rows.read.addr.eq(self.rptr), step.eq(active & advance & self.issue)]
        with m.If(~active):
            m.d.sync += [self.at_first.eq(1), self.at_last.eq(last_only), self.rptr.eq(0),
                         rend.eq(0)]
        with m.Elif(step):
            m.d.sync += [self.at_first.eq(0), self.at_last.eq(next_last),
                         self.rptr.eq(self.rptr + 1)]
            with m.If(self.at_last):
                m.d.sync += rend.eq(1)


def last_beat_compares(m, rptr, wlast, wlast1, step, prefix=""):
    """The next value of a row read's last-beat flag from registered compares, free
    running (``rptr`` and the row's ``wlast = length - 1``, ``wlast1 = wlast - 1`` still
    for a cycle before any ``step``): ``rptr == wlast1`` for a step after a cycle without
    one, ``rptr == wlast1 - 1`` for a step after a step (``rptr`` one higher now), so no
    compare sits in front of the flag.  Returns ``(next_last, last_only)``: the flag's
    value for a step, and ``wlast == 0`` (a one-beat row; the flag's value at the row's
    start), both registered."""
    wlast2 = Signal.like(wlast1, name=f"{prefix}wlast2")
    eq_held = Signal(name=f"{prefix}eq_held")
    eq_stepped = Signal(name=f"{prefix}eq_stepped")
    last_only = Signal(name=f"{prefix}last_only")
    stepped = Signal(name=f"{prefix}stepped")
    m.d.sync += [wlast2.eq(wlast1 - 1), eq_held.eq(rptr == wlast1),
                 eq_stepped.eq(rptr == wlast2), last_only.eq(wlast == 0), stepped.eq(step)]
    return Mux(stepped, eq_stepped, eq_held), last_only


class SkidOutput:
    """The output register of a row unit's read pipeline, with a skid register, so the
    stream's ``o.ready`` reaches only these registers and never the pipeline behind them.

    The unit drives ``valid`` and ``payload`` (combinational, the beat its pipeline
    presents) and advances its pipeline with ``advance``, a register (no skid beat
    held): while the output register holds a beat that is not taken, the presented
    beat goes into the skid register and the pipeline stops in the next cycle, until
    the output takes the skid beat.  No cycle is added: with ``o.ready`` high the
    presented beat is on ``o`` in the next cycle, as with a plain output register.

    ``last_out``: a register, high for one cycle after a beat with ``payload.last``
    left the pipeline (the cycle it is first on ``o`` when ``o.ready`` was high, so the
    unit may free the row: its beats are all in the output registers).
    """

    def __init__(self, m, o, name="out"):
        layout = o.payload.shape()
        self.valid = Signal(name=f"{name}_valid")
        self.payload = Signal(layout, name=f"{name}_payload")
        self.advance = Signal(name=f"{name}_advance")
        self.last_out = Signal(name=f"{name}_last_out")
        held = Signal(name=f"{name}_skid_valid")
        skid = Signal(layout, name=f"{name}_skid")
        m.d.comb += self.advance.eq(~held)
        m.d.sync += self.last_out.eq(~held & self.valid & self.payload.last)
        with m.If(held):
            with m.If(o.ready):          # o.valid is high while a beat is held
                m.d.sync += [o.payload.eq(skid), held.eq(0)]
        with m.Elif(o.valid & ~o.ready):
            m.d.sync += [skid.eq(self.payload), held.eq(self.valid)]
        with m.Else():
            m.d.sync += [o.payload.eq(self.payload), o.valid.eq(self.valid)]

    def present(self, m, valid, first, last, count):
        """Drive the presented beat's ``valid`` and framing (the unit drives ``y``)."""
        m.d.comb += [
            self.valid.eq(valid),
            self.payload.first.eq(first),
            self.payload.last.eq(last),
            self.payload.count.eq(count),
        ]


def wait_cycles(m, trigger, cycles, then):
    """Set the register ``then`` ``cycles + 2`` cycles after ``trigger`` (a counter runs
    from the cycle after it); the caller clears ``then``."""
    waiting = Signal()
    kw = Signal(range(cycles + 2))
    with m.If(trigger):
        m.d.sync += [waiting.eq(1), kw.eq(0)]
    with m.Elif(waiting):
        m.d.sync += kw.eq(kw + 1)
        with m.If(kw == cycles):
            m.d.sync += [waiting.eq(0), then.eq(1)]


class ValueRowUnit(ConfiguredComponent):
    """A baseline row unit's component: rows of values in (``i``: beats of P signed
    ``width``-bit values ``x``, ``count``, ``first``, ``last``), rows of results out
    (``o``: ``y``, P values of ``out_shape``, with the input beat's framing), and
    ``overflow`` (a row was longer than the buffer; sticky until reset).

    The subclass passes its checked configuration (with ``width``, ``elems``,
    ``max_beats`` and ``lane_count_bits``)."""

    def __init__(self, config, out_shape):
        self._config = config
        self.in_layout, self.out_layout = row_layouts(
            "x", signed(config.width), out_shape, config.elems, config.lane_count_bits)
        super().__init__({
            "i": In(stream.Signature(self.in_layout)),
            "o": Out(stream.Signature(self.out_layout)),
            "overflow": Out(1),
        })

