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

__all__ = ["param", "UnitConfig", "QuantizerConfig", "TopKConfig", "OrizuruConfig",
           "OrizuruBaselineConfig"]


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


def _clog2(n):
    """Bits of a counter that holds 0 .. n - 1 (at least 1)."""
    return max(1, (n - 1).bit_length())


def bitonic_sort_depth(n):
    """Compare-exchange levels of a bitonic sorter of ``n`` inputs (padded to a power of 2)."""
    s = (n - 1).bit_length()
    return s * (s + 1) // 2


@dataclass(frozen=True)
class TopKConfig(UnitConfig):
    """Parameters shared by Orizuru and its baseline."""

    UNIT = "orizuru"

    width: int = param(16, 2, 32, "value width in bits (signed)")
    lanes: int = param(4, 1, 16, "values per beat (P)")
    k: int = param(8, 1, 64, "outliers per side: k largest and k smallest")
    max_len: int = param(1024, 1, 65536, "longest vector in elements (sets the position width)")

    def check(self):
        if self.k > self.max_len:
            raise ValueError(f"{self.UNIT}: parameter 'k' must not exceed max_len "
                             f"({self.max_len}), got {self.k}")
        if self.lanes > self.max_len:
            raise ValueError(f"{self.UNIT}: parameter 'lanes' must not exceed max_len "
                             f"({self.max_len}), got {self.lanes}")

    @property
    def pos_bits(self):
        """Width of a position: 0 .. max_len - 1."""
        return _clog2(self.max_len)

    @property
    def count_bits(self):
        """Width of the per-beat valid-value count: 0 .. lanes."""
        return self.lanes.bit_length()

    @property
    def entry_bits(self):
        """One output entry: value, position, valid."""
        return self.width + self.pos_bits + 1



@dataclass(frozen=True)
class OrizuruConfig(TopKConfig):
    """Orizuru streaming top-k: the k largest and k smallest values of each vector, with positions."""

    UNIT = "orizuru"

    merge: int = param(1, 0, 1, "final merge: 1 serial (k cycles, vectors >= k+1 beats), "
                                "0 pipelined tree (any length)")

    @property
    def rank_lanes(self):
        """Length of each rank lane: lane r keeps the best ``k // (r + 1)`` rank-r values."""
        return [self.k // (r + 1) for r in range(min(self.lanes, self.k))]

    @property
    def sort_depth(self):
        """Pipeline stages of the beat sorter (one compare-exchange level each)."""
        return bitonic_sort_depth(self.lanes)

    @property
    def merge_schedule(self):
        """Per level of the merge tree: the ``(a, b)`` list lengths merged, and its stages."""
        lengths, levels = list(self.rank_lanes), []
        while len(lengths) > 1:
            pairs = [(lengths[j], lengths[j + 1]) for j in range(0, len(lengths) - 1, 2)]
            depth = max((a + b - 1).bit_length() for a, b in pairs)
            levels.append((pairs, depth))
            nxt = [min(self.k, a + b) for a, b in pairs]
            if len(lengths) % 2:
                nxt.append(lengths[-1])
            lengths = nxt
        return levels

    @property
    def merge_depth(self):
        """Pipeline stages of the merge tree (``merge=0``)."""
        return sum(depth for _, depth in self.merge_schedule)

    @property
    def load_delay(self):
        """``merge=1``: cycles from an accepted last beat to the load of its lists into the
        merge queues (input register, sorter stages, lanes)."""
        return self.sort_depth + 2

    @property
    def latency(self):
        """Cycles from the accepted last beat of a vector to its result beat (no backpressure)."""
        if self.merge:       # load, k pops, copy to the output registers
            return self.load_delay + self.k + 2
        return 2 + self.sort_depth + self.merge_depth

    @property
    def min_beats(self):
        """Shortest vector, in beats, that streams back to back with no stall.

        ``merge=1``: a last beat is accepted at least k cycles after the previous one (its
        load meets the previous vector's last pop) and only when the vector before that
        has been popped completely (at most two vectors in the merge's care): with last
        beats m cycles apart, m >= k and 2 m >= load_delay + k + 1."""
        if self.merge:
            return max(self.k, -(-(self.load_delay + self.k + 1) // 2))
        return 1


@dataclass(frozen=True)
class OrizuruBaselineConfig(TopKConfig):
    """Baseline of Orizuru: a full bitonic sorting network per side, pruned to the top k."""

    UNIT = "orizuru_baseline"

    @property
    def network_inputs(self):
        """Inputs of each side's sorter: the k kept entries and the P new values, padded."""
        return 1 << (self.k + self.lanes - 1).bit_length()

    @property
    def latency(self):
        return 2

    @property
    def min_beats(self):
        return 1
