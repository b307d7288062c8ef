"""What every unit's top-level component has in common."""

from amaranth.lib import wiring
from amaranth.lib.wiring import Out

__all__ = ["ConfiguredComponent", "write_signature"]


def write_signature(addr, data):
    """The signature of a unit's table write port, as its host drives it: ``en``,
    ``addr`` (``addr`` bits) and ``data`` (of shape ``data``), one entry a cycle."""
    return wiring.Signature({"en": Out(1), "addr": Out(addr), "data": Out(data)})


class ConfiguredComponent(wiring.Component):
    """A component built from one checked configuration (a :class:`base.config.UnitConfig`).

    A unit names its configuration class in ``Config`` and is built either from a
    configuration object (``Unit(config)``) or from keyword parameters whose
    defaults live only in that class (``Unit(elems=8)``).  Its ``__init__`` stores
    ``self.configure(config, params)`` in ``self._config`` before calling
    ``super().__init__(signature)``; ``config`` and ``latency`` read it, so the
    benches, the CLI and the docs take a unit's latency from one place.
    """

    #: The unit's configuration class (a :class:`base.config.UnitConfig`); set by each unit.
    Config = None

    @classmethod
    def configure(cls, config, params):
        """The checked configuration of a new component: ``config`` itself (an instance of
        exactly ``cls.Config``), or ``cls.Config(**params)``.  Raises ``TypeError`` /
        ``ValueError`` naming the unit and the parameter."""
        unit = cls.Config.UNIT
        if config is None:
            names = [p[0] for p in cls.Config.params()]
            for name in params:
                if name not in names:
                    raise TypeError(f"{unit}: unknown parameter '{name}' "
                                    f"(parameters: {', '.join(names)})")
            return cls.Config(**params)
        if params:
            raise TypeError(f"{unit}: pass a configuration or keyword parameters, not both "
                            f"(got {', '.join(params)} beside the configuration)")
        if type(config) is not cls.Config:
            raise TypeError(f"{unit}: config must be an instance of {cls.Config.__name__}, got {config!r}")
        return config

    @property
    def config(self):
        """The checked configuration the component was built from."""
        return self._config

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output (the configuration's formula)."""
        return self._config.latency
