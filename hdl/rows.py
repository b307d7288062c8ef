"""The row-buffer input stage shared by the row units (histogram softmax and norm, and
their baselines).

Not a unit of its own: :class:`RowInput` is built inside a unit's ``elaborate``.
"""

from amaranth import Signal, unsigned
from amaranth.lib import memory

__all__ = ["RowInput"]


class RowInput:
    """A row of beats into a row buffer, one beat per cycle, and the stage-0 registers.

    While a row comes in, every accepted beat (``i.valid & i.ready``) is
    written into the row buffer (``word``, the bits to keep of the beat, at
    address ``wptr``; ``depth`` words, block RAM for deep rows) and its
    payload is registered into ``s0`` (with ``s0_valid`` when it was stored,
    ``s0_end`` when it was the row's ``last`` beat), where the unit
    computes its per-beat statistics in the following cycle.  After the
    ``last`` beat the input stops (``i.ready = ~busy``) until the unit
    raises ``clear`` (one cycle, when the row's last output beat is taken),
    which also rewinds ``wptr`` to 0.  Beats beyond ``depth`` are dropped (the
    row is cut) and ``overflow`` is set until reset.

    Attributes
    ----------
    read : the row buffer's synchronous read port (the unit drives ``addr`` and ``en``).
    wptr : beats of the current row in the buffer, 0 .. ``depth``.
    busy : the row's last beat is in; input stopped.
    s0, s0_valid, s0_end : the registered beat, stored, and the last of its row.
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

        buf = memory.Memory(shape=unsigned(len(word)), depth=depth, init=[])
        m.submodules[name] = buf
        wr = buf.write_port()
        self.read = buf.read_port(domain="sync")
        m.d.comb += [
            full.eq(self.wptr == depth),
            i.ready.eq(~self.busy),
            fire.eq(i.valid & ~self.busy),
            wr.en.eq(fire & ~full),
            wr.addr.eq(self.wptr),
            wr.data.eq(word),
        ]
        m.d.sync += [self.s0_valid.eq(fire & ~full), self.s0_end.eq(fire & i.payload.last),
                     self.s0.eq(i.payload)]
        with m.If(fire):
            with m.If(i.payload.last):
                m.d.sync += self.busy.eq(1)
            with m.If(full):
                m.d.sync += overflow.eq(1)
            with m.Else():
                m.d.sync += self.wptr.eq(self.wptr + 1)
        with m.If(self.clear):
            m.d.sync += [self.busy.eq(0), self.wptr.eq(0)]
