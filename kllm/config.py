"""Unit configuration objects: one frozen dataclass per unit, shared by hdl/, golden/ and tests.

A parameter is written once, as a dataclass field with its range and meaning
in the field metadata::

    lanes: int = param(4, 1, 16, "elements per beat (P)")

The dataclass checks every field when it is built and raises ``TypeError`` or
``ValueError`` whose text names the unit, the parameter and the bad value.
Checks that involve several parameters go in ``check()``.
"""

import dataclasses
from dataclasses import dataclass, field

__all__ = ["param", "UnitConfig", "QuantizerConfig"]


def param(default, lo, hi, doc):
    """A config field: integer ``default`` in the inclusive range ``lo..hi``."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


@dataclass(frozen=True)
class UnitConfig:
    """Base of every unit configuration."""

    #: The unit's name on the command line; set by each subclass.
    UNIT = None

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{self.UNIT}: parameter '{f.name}' must be an integer, "
                                f"not {value!r}")
            lo, hi = f.metadata["lo"], f.metadata["hi"]
            if not lo <= value <= hi:
                raise ValueError(f"{self.UNIT}: parameter '{f.name}' must be in {lo}..{hi}, "
                                 f"got {value}")
        self.check()

    def check(self):
        """Checks that involve more than one parameter; raise ``ValueError``."""

    @classmethod
    def params(cls):
        """``[(name, default, lo, hi, doc), ...]`` in declaration order."""
        return [(f.name, f.default, f.metadata["lo"], f.metadata["hi"], f.metadata["doc"])
                for f in dataclasses.fields(cls)]

    @classmethod
    def from_strings(cls, assignments):
        """Build from ``["name=value", ...]`` as given to ``--set``."""
        names = [p[0] for p in cls.params()]
        values = {}
        for item in assignments:
            name, sep, text = item.partition("=")
            name = name.strip()
            if not sep or not name:
                raise ValueError(f"--set expects name=value, got {item!r}")
            if name not in names:
                raise ValueError(f"{cls.UNIT}: unknown parameter '{name}' "
                                 f"(parameters: {', '.join(names)})")
            try:
                values[name] = int(text, 0)
            except ValueError:
                raise ValueError(f"{cls.UNIT}: parameter '{name}' must be an integer, "
                                 f"got {text!r}") from None
        return cls(**values)

    def to_dict(self):
        return dataclasses.asdict(self)

    def describe(self):
        """Short ``name=value`` summary, e.g. for table rows and directory names."""
        return ",".join(f"{k}={v}" for k, v in self.to_dict().items())


@dataclass(frozen=True)
class QuantizerConfig(UnitConfig):
    """Activation quantizer: signed fixed-point input -> nearest-centroid index."""

    UNIT = "quantizer"

    width: int = param(16, 2, 32, "input width in bits (signed fixed point)")
    ba: int = param(4, 1, 8, "index bits: 2**ba centroids, 2**ba - 1 thresholds")
    lanes: int = param(4, 1, 16, "elements per beat (P)")

    @property
    def n_thresholds(self):
        return 2 ** self.ba - 1

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output beat (no backpressure)."""
        return self.ba + 1
