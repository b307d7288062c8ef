"""What every unit's top-level component has in common."""

from amaranth.lib import wiring

__all__ = ["ConfiguredComponent"]


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
