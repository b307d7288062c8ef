"""What every unit's top-level component has in common, and kept register copies."""

from amaranth import Elaboratable, Module, Signal, Value
from amaranth.lib import wiring

__all__ = ["ConfiguredComponent", "KeptRegister", "kept_register", "kept_logic", "KEPT_MODULES"]


class ConfiguredComponent(wiring.Component):
    """A component built from one checked configuration (a :class:`kllm.config.UnitConfig`).

    The subclass stores that configuration in ``self._config`` before calling
    ``super().__init__(signature)``; ``config`` and ``latency`` read it, so the
    benches, the CLI and the docs take a unit's latency from one place.
    """

    @property
    def config(self):
        """The checked configuration the component was built from."""
        return self._config

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output (the configuration's formula)."""
        return self._config.latency


# -- kept register copies ---------------------------------------------------------------
# Copies of one register (same input, same enable) split a fan-out: each copy drives a
# part of the loads, so each net is shorter.  Yosys's `opt_merge` folds equal flip-flops
# back into one, so each copy is a module of its own (``keep_<name>``), and the synthesis
# flow keeps the modules matching ``KEPT_MODULES`` apart (a unit lists the pattern in
# ``kllm.units.Unit.keep_modules``; Yosys `keep_hierarchy`).  Simulation and formal
# checks see plain registers: the copies are equal by construction.

#: Yosys name pattern (below the unit's module) of the submodules :func:`kept_register` makes.
KEPT_MODULES = "keep_*"


class KeptRegister(Elaboratable):
    """A register ``q <= d`` (when ``en``, if built with ``enable=True``) as its own module.

    Built by :func:`kept_register`; kept apart from its copies by the synthesis flow
    (``KEPT_MODULES``).  ``reset_less=False`` gives ``q`` the domain's reset to ``init``.
    """

    def __init__(self, shape, *, enable=False, init=0, reset_less=True):
        self.d = Signal(shape)
        self.q = Signal(shape, init=init, reset_less=reset_less)
        self.en = Signal() if enable else None

    def elaborate(self, platform):
        m = Module()
        if self.en is None:
            m.d.sync += self.q.eq(self.d)
        else:
            with m.If(self.en):
                m.d.sync += self.q.eq(self.d)
        return m


class _KeptLogicRegister(Elaboratable):
    """A register ``q <= value`` whose logic is built inside the module (see :func:`kept_register`)."""

    def __init__(self, value, *, enable=None, init=0, reset_less=True):
        self.value = value
        self.enable = enable
        self.q = Signal(value.shape(), init=init, reset_less=reset_less)

    def elaborate(self, platform):
        m = Module()
        if self.enable is None:
            m.d.sync += self.q.eq(self.value)
        else:
            with m.If(self.enable):
                m.d.sync += self.q.eq(self.value)
        return m


def kept_register(m, value, name, *, enable=None, init=0, reset_less=True, inside=False):
    """One copy of the register ``value`` (enabled by ``enable``, if given) that synthesis
    does not merge with its other copies: a :class:`KeptRegister` submodule ``keep_<name>``
    of ``m`` (the unit's top-level module, so that ``KEPT_MODULES`` names it).

    Returns the register's output.  Each call makes one more copy; pass the same
    ``value`` and ``enable`` to every copy of one register.

    ``inside=True``: the logic of ``value`` (and of ``enable``) is built inside the copy,
    the signals it reads become the module's inputs, so each copy has that logic of its
    own and the signals it reads, not its output, fan out to the copies.  Synthesis maps
    each copy alone, as if its inputs came early: meant for logic of registers (a signal
    computed outside stays one shared input), or for a multiplexer that synthesis can
    fold into the flip-flop itself (``Mux(s, constant, x)`` with an enable becomes a
    flip-flop with a synchronous set/reset and a clock enable, no LUT in front of ``d``,
    when the copy has no reset and ``init`` is that constant: an ECP5 flip-flop starts at
    its set/reset value).
    """
    value = Value.cast(value)
    if inside:
        reg = _KeptLogicRegister(value, enable=enable, init=init, reset_less=reset_less)
        m.submodules[f"keep_{name}"] = reg
        return reg.q
    reg = KeptRegister(value.shape(), enable=enable is not None, init=init,
                       reset_less=reset_less)
    m.submodules[f"keep_{name}"] = reg
    m.d.comb += reg.d.eq(value)
    if enable is not None:
        m.d.comb += reg.en.eq(enable)
    return reg.q


class _KeptLogic(Elaboratable):
    """``q = value`` (combinational), built inside a module of its own (see :func:`kept_logic`)."""

    def __init__(self, value):
        self.value = value
        self.q = Signal(value.shape())

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.q.eq(self.value)
        return m


def kept_logic(m, value, name):
    """One copy of the logic ``value`` that synthesis does not merge with its other copies
    (``opt_merge`` folds equal LUTs as it does equal flip-flops): a submodule
    ``keep_<name>`` of ``m``, kept apart like :func:`kept_register`'s copies.

    Meant for a signal that cannot be a register (it reads an input of the unit in the
    same cycle) and drives many flip-flop enables: each copy drives a part of them, and
    the signals it reads fan out to the copies instead.
    """
    logic = _KeptLogic(Value.cast(value))
    m.submodules[f"keep_{name}"] = logic
    return logic.q
