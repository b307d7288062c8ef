"""Unit configuration objects: one frozen dataclass per unit, shared by hdl/, golden/ and tests.

A parameter is written once, as a dataclass field with its range and meaning
in the field metadata::

    elems: int = param(4, 1, 16, "elements per beat (P)")

The dataclass checks every field when it is built and raises ``TypeError`` or
``ValueError`` whose text names the unit, the parameter and the bad value.
Checks that involve several parameters go in ``check()``.
"""

import dataclasses
import math
from dataclasses import dataclass, field

from base.formats import (BASE_EXP_ADDR, EXP_FRAC, NORM_OUT_FRAC, RECIP_ADDR, RSQRT_FRAC,
                          SOFTMAX_OUT_FRAC)
from base.isa import slot_layout
from base.latency import (banked_latency, bitonic_sort_depth, bits_signed, clog2, mul_latency,
                          row_rsqrt_latency, rsqrt_latency, select_latency, table_latency,
                          tree_latency)

__all__ = ["param", "UnitConfig", "QuantizerConfig", "TopKConfig", "OrizuruConfig",
           "OrizuruBaselineConfig", "ImuConfig", "ImuBaselineConfig"]


def param(default, lo, hi, doc):
    """A config field: integer ``default`` in the inclusive range ``lo..hi``."""
    return field(default=default, metadata={"lo": lo, "hi": hi, "doc": doc})


@dataclass(frozen=True)
class UnitConfig:
    """Base of every unit configuration."""

    #: The unit's name on the command line; set by each subclass.
    UNIT = None
    #: Former parameter names still accepted by ``--set`` for one release: old -> new.
    #: ``elems`` is the values per beat (P) of every unit; ``lanes`` named it before.
    RENAMED = {"lanes": "elems"}

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
    elems: int = param(4, 1, 16, "elements per beat (P)")

    @property
    def n_thresholds(self):
        return 2 ** self.ba - 1

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output beat (no backpressure)."""
        return self.ba + 1


@dataclass(frozen=True)
class TopKConfig(UnitConfig):
    """Parameters shared by Orizuru and its baseline."""

    UNIT = "orizuru"

    width: int = param(16, 2, 32, "value width in bits (signed)")
    elems: int = param(4, 1, 16, "values per beat (P)")
    k: int = param(8, 1, 64, "outliers per side: k largest and k smallest")
    max_len: int = param(1024, 1, 65536, "longest vector in elements (sets the position width)")
    ce_modules: int = param(1, 0, 1, "compare-exchanges as modules of their own, kept apart "
                                      "by synthesis (0: inline, one flat netlist)")

    def check(self):
        if self.k > self.max_len:
            raise ValueError(f"{self.UNIT}: parameter 'k' must not exceed max_len "
                             f"({self.max_len}), got {self.k}")
        if self.elems > self.max_len:
            raise ValueError(f"{self.UNIT}: parameter 'elems' must not exceed max_len "
                             f"({self.max_len}), got {self.elems}")

    @property
    def pos_bits(self):
        """Width of a position: 0 .. max_len - 1."""
        return clog2(self.max_len)

    @property
    def count_bits(self):
        """Width of the per-beat valid-value count: 0 .. elems."""
        return self.elems.bit_length()

    @property
    def entry_bits(self):
        """One output entry: value, position, valid."""
        return self.width + self.pos_bits + 1



@dataclass(frozen=True)
class OrizuruConfig(TopKConfig):
    """Orizuru streaming top-k: the k largest and k smallest values of each vector, with positions."""

    UNIT = "orizuru"

    merge: int = param(1, 0, 2, "final merge: 1 serial (k cycles, vectors >= k+1 beats), "
                                "2 serial with its comparisons a pop ahead and its "
                                "high-fan-out registers copied (faster, larger), 0 pipelined "
                                "tree (any length)")

    @property
    def rank_lanes(self):
        """Length of each rank lane: lane r keeps the best ``k // (r + 1)`` rank-r values."""
        return [self.k // (r + 1) for r in range(min(self.elems, self.k))]

    @property
    def sort_depth(self):
        """Pipeline stages of the beat sorter (one compare-exchange level each)."""
        return bitonic_sort_depth(self.elems)

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
        """``merge=1, 2``: cycles from an accepted last beat to the load of its lists into the
        merge queues (input register, sorter stages, elems; ``merge=2`` one more: its elems
        compare a value ahead)."""
        return self.sort_depth + 2 + (self.merge == 2)

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
        return 1 << (self.k + self.elems - 1).bit_length()

    @property
    def latency(self):
        return 2

    @property
    def min_beats(self):
        return 1


# ------------------------------------------------------------ index-domain nonlinear units

class RowShape:
    """Widths shared by the row units (``elems`` per beat, rows of up to ``max_len``):
    row buffer depth and counters."""

    @property
    def max_beats(self):
        """Row buffer depth: beats of the longest row."""
        return -(-self.max_len // self.elems)

    @property
    def ptr_bits(self):
        return clog2(self.max_beats)

    @property
    def count_bits(self):
        """Width of a histogram bin and of the row's element count."""
        return (self.max_beats * self.elems).bit_length()

    @property
    def lane_count_bits(self):
        """Width of the per-beat element count: 0 .. P."""
        return self.elems.bit_length()

    def row_latency(self, beats):
        """The latency of a row of ``beats`` beats (the same for every row)."""
        return self.latency


class SoftmaxFormat(RowShape):
    """Fixed-point widths of a softmax row (:mod:`base.formats`)."""

    @property
    def exp_bits(self):
        return EXP_FRAC + 1

    @property
    def denom_bits(self):
        """The denominator D = sum_j h[j] E[j] <= n * 2**EXP_FRAC."""
        return (self.max_beats * self.elems * ((1 << (self.exp_bits - 1)))).bit_length()

    @property
    def out_bits(self):
        return SOFTMAX_OUT_FRAC + 1


class NormFormat(RowShape):
    """Fixed-point width of a normalized row (:mod:`base.formats`)."""

    @property
    def out_bits(self):
        """Signed output: |z| <= sqrt(n) for LayerNorm and RMSNorm, with NORM_OUT_FRAC
        fraction bits, 1% margin for the rsqrt table's error and one unit of rounding."""
        n = self.max_beats * self.elems
        return int(2 ** NORM_OUT_FRAC * math.sqrt(n) * 1.01 + 2).bit_length() + 1


@dataclass(frozen=True)
class LutConfig(UnitConfig):
    """Elementwise table: each index of a beat looks up a run-time loadable 2**ba-entry table."""

    UNIT = "lut"

    ba: int = param(4, 1, 8, "index bits: a table of 2**ba entries")
    elems: int = param(4, 1, 16, "elements per beat (P)")
    out_width: int = param(16, 1, 32, "bits of a table entry (ba for index -> index)")

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output beat (no backpressure): 2, plus
        one per two index bits above a 16-word LUTRAM bank (hdl.lut.table_pipeline)."""
        return table_latency(1 << self.ba)


@dataclass(frozen=True)
class ProductConfig(UnitConfig):
    """Binary product table: a pair of indices (a, b) per lane looks up a 2**ba x 2**ba table."""

    UNIT = "product"

    ba: int = param(4, 1, 6, "index bits of each operand: a table of 2**(2 ba) entries")
    elems: int = param(4, 1, 16, "element pairs per beat (P)")
    out_width: int = param(16, 1, 32, "bits of a table entry (ba for a product -> index table)")

    @property
    def latency(self):
        """Cycles from an accepted input beat to its output beat (no backpressure): 2, plus
        one per two address bits above a 16-word LUTRAM bank (hdl.lut.table_pipeline)."""
        return table_latency(1 << (2 * self.ba))


@dataclass(frozen=True)
class SoftmaxConfig(SoftmaxFormat, UnitConfig):
    """Softmax of each row of indices from its histogram."""

    UNIT = "softmax"

    ba: int = param(4, 1, 6, "index bits: 2**ba score centroids, an exp table of 4**ba entries")
    elems: int = param(4, 1, 16, "elements per beat (P)")
    max_len: int = param(1024, 1, 65536, "longest row in elements (row buffer depth, counter widths)")

    @property
    def stage_latencies(self):
        """Pipeline depths (hdl.blocks): exp table read ``Le`` (banks, then a copy register per
        multiplier), h E multiplier ``Lm``, E r
        multiplier ``Lm2``, reciprocal ROM ``Lrom``, row buffer read ``Lr``."""
        J = 1 << self.ba
        return (banked_latency(J * J) + 1, mul_latency(self.count_bits), mul_latency(self.exp_bits),
                banked_latency(1 << RECIP_ADDR), banked_latency(self.max_beats))

    @property
    def compute_cycles(self):
        """Cycles of the per-row computation between the histogram and the first read of the
        row: idle 1, maximum 1, sum ``J + Le + Lm``, normalization ``6 + Lrom`` (the leading
        one of D in two stages), remap ``J + Le + Lm2 + 3`` (``J = 2**ba``)."""
        Le, Lm, Lm2, Lrom, _ = self.stage_latencies
        return 2 * (1 << self.ba) + 11 + 2 * Le + Lm + Lm2 + Lrom

    @property
    def latency(self):
        """Cycles from the accepted last beat of a row to its first output beat (no backpressure):
        the input register, three histogram stages and the start flag, the computation, the
        row buffer read ``Lr`` and the output register."""
        return self.compute_cycles + 5 + self.stage_latencies[4]


@dataclass(frozen=True)
class NormConfig(NormFormat, UnitConfig):
    """LayerNorm (rms=0) or RMSNorm (rms=1) of each row of indices from its histogram."""

    UNIT = "norm"

    ba: int = param(4, 1, 6, "index bits: 2**ba centroids")
    elems: int = param(4, 1, 16, "elements per beat (P)")
    max_len: int = param(1024, 1, 65536, "longest row in elements (row buffer depth, counter widths)")
    cw: int = param(8, 2, 16, "centroid width in bits (signed)")
    rms: int = param(0, 0, 1, "0: LayerNorm, 1: RMSNorm")

    @property
    def stage_latencies(self):
        """Pipeline depths (hdl.blocks): bin/centroid selection ``Ls``, the multipliers by a
        centroid ``Lc``, the variance products ``Lv`` (``n S2``, ``S1**2``), rsqrt lookup
        ``Lrom`` (divide by 3, clamp, ROM), the ``(n C - S1) r`` multiplier ``Lmr``, row buffer read ``Lr``."""
        cb = self.count_bits
        return (select_latency(1 << self.ba), mul_latency(self.cw),
                max(mul_latency(cb), mul_latency(cb + self.cw + 1)),
                rsqrt_latency(), mul_latency(RSQRT_FRAC + 1),
                banked_latency(self.max_beats))

    @property
    def compute_cycles(self):
        """Cycles of the per-row computation between the histogram and the first read of the
        row: idle 1, sums ``J + Ls + 2 Lc``, variance ``Lv + 1``, normalization
        ``7 + Lrom`` (leading one 2, shift amount 1, shift 3, rsqrt 1), remap
        ``J + Ls + Lc + Lmr + 4`` (``J = 2**ba``)."""
        Ls, Lc, Lv, Lrom, Lmr, _ = self.stage_latencies
        return 2 * (1 << self.ba) + 13 + 2 * Ls + 3 * Lc + Lv + Lrom + Lmr

    @property
    def latency(self):
        """Cycles from the accepted last beat of a row to its first output beat (no backpressure):
        the input register, three histogram stages and the start flag, the computation, the
        row buffer read (LUTRAM banks, base.latency.banked_latency), the registered remap read
        (hdl.histogram.HistogramRowUnit.pipelined_read) and the output register."""
        return self.compute_cycles + 6 + self.stage_latencies[5]


__all__ += ["LutConfig", "ProductConfig", "SoftmaxConfig", "NormConfig"]


@dataclass(frozen=True)
class SoftmaxBaselineConfig(SoftmaxFormat, UnitConfig):
    """Baseline of the histogram softmax: conventional fixed point, an exp table and a
    multiplier per lane."""

    UNIT = "softmax_baseline"

    width: int = param(16, 8, 24, "score width in bits (signed fixed point)")
    frac: int = param(8, 6, 16, "fraction bits of the scores")
    elems: int = param(4, 1, 16, "elements per beat (P)")
    max_len: int = param(1024, 1, 65536, "longest row in elements (row buffer depth, counter widths)")

    def check(self):
        if self.frac >= self.width:
            raise ValueError(f"{self.UNIT}: parameter 'frac' must be below width "
                             f"({self.width}), got {self.frac}")

    @property
    def stage_latencies(self):
        """Pipeline depths (hdl.blocks): lane trees (maximum, exp sum) ``Lt``, row buffer read
        ``Lr``, exp ROM ``Le`` (address copies, LUT banks), reciprocal ROM ``Lrom``, E r
        multiplier ``Lmr``."""
        return (tree_latency(self.elems), banked_latency(self.max_beats),
                banked_latency(1 << BASE_EXP_ADDR) + 1, banked_latency(1 << RECIP_ADDR),
                mul_latency(self.exp_bits))

    def row_latency(self, beats):
        """Cycles from the accepted last beat of a row of ``beats`` beats to its first output
        beat (no backpressure): ``beats + 17 + 3 Lt + 2 Lr + 2 Le + Lrom + Lmr``: the
        maximum (``3 + 2 Lt``: the comparator tree two stages per level), the sum pass (``beats`` issues, ``Lr + 3 + Le + Lt`` to the last
        accumulation), the normalization (``6 + Lrom``), the output pass (``Lr + 2 + Le +
        Lmr + 3``)."""
        Lt, Lr, Le, Lrom, Lmr = self.stage_latencies
        return beats + 17 + 3 * Lt + 2 * Lr + 2 * Le + Lrom + Lmr


@dataclass(frozen=True)
class NormBaselineConfig(NormFormat, UnitConfig):
    """Baseline of the histogram norm: conventional fixed point, squares and a
    normalization multiply per lane."""

    UNIT = "norm_baseline"

    width: int = param(8, 2, 16, "value width in bits (signed; the histogram unit's cw)")
    elems: int = param(4, 1, 16, "elements per beat (P)")
    max_len: int = param(1024, 1, 65536, "longest row in elements (row buffer depth, counter widths)")
    rms: int = param(0, 0, 1, "0: LayerNorm, 1: RMSNorm")

    @property
    def stage_latencies(self):
        """Pipeline depths (hdl.blocks): ``x**2`` and ``n x`` multipliers ``Lsq``, lane adder
        trees ``Lt``, variance products ``Lv``, row buffer read ``Lr``, ``(n x - S1) r``
        multiplier ``Lmr``."""
        cb = self.count_bits
        return (mul_latency(self.width), tree_latency(self.elems),
                max(mul_latency(cb), mul_latency(cb + self.width + 1)),
                banked_latency(self.max_beats), mul_latency(RSQRT_FRAC + 1))

    @property
    def latency(self):
        """Cycles from the accepted last beat of a row to its first output beat (no
        backpressure): ``9 + 2 Lsq + Lt + Ln + Lr + Lmr``, ``Ln = Lv + 7 + Lrom`` the
        per-row normalization (hdl.norm.row_rsqrt_latency): input register, masked values,
        squares, trees, sums, the wait for ``Ln`` and its start and end, then the output
        pipeline (read, ``n x``, minus ``S1``, times ``r``, three shift stages)."""
        Lsq, Lt, Lv, Lr, Lmr = self.stage_latencies
        return 9 + 2 * Lsq + Lt + row_rsqrt_latency(Lv) + Lr + Lmr


__all__ += ["SoftmaxBaselineConfig", "NormBaselineConfig"]

# ----------------------------------------------------------------------------- IMU

@dataclass(frozen=True)
class ImuConfig(UnitConfig):
    """Index MatMul unit: L output channels x P elements per cycle on K-Means indices.

    The widths below are derived so that no sum can overflow for any vector of
    up to ``positions`` elements (``k_max`` rounded up to whole beats), any
    centroids of ``cw``/``ca`` bits, any shift up to ``shift_max`` and up to
    ``outliers`` residuals of ``xbits + 1`` bits per token.
    """

    UNIT = "imu"
    #: ``lanes`` named the output channels (L) before ``elems`` became P in every unit.
    RENAMED = {"lanes": "outputs"}

    outputs: int = param(4, 1, 256, "output channels in parallel (L)")
    elems: int = param(4, 1, 32, "elements per beat (P), a power of 2")
    bw: int = param(4, 1, 8, "weight index bits: 2**bw weight centroids per channel")
    ba: int = param(4, 1, 8, "activation index bits: 2**ba activation centroids")
    cw: int = param(8, 2, 18, "weight centroid bits (signed)")
    ca: int = param(8, 2, 16, "activation centroid bits (signed)")
    k_max: int = param(1024, 1, 65536, "longest reduction (K) in elements")
    outliers: int = param(16, 0, 256, "outlier (position, residual) pairs per token, at most")
    xbits: int = param(16, 2, 32, "fixed-point activation bits (outlier residuals: xbits + 1)")

    def check(self):
        u = self.UNIT
        if self.elems & (self.elems - 1):
            raise ValueError(f"{u}: parameter 'elems' must be a power of 2 (a position splits "
                             f"into weight-memory row and lane by bits), got {self.elems}")
        if self.k_max < self.elems:
            raise ValueError(f"{u}: parameter 'k_max' ({self.k_max}) must be at least "
                             f"elems ({self.elems})")
        if self.ca > self.xbits:
            raise ValueError(f"{u}: parameter 'ca' ({self.ca}) must not exceed xbits "
                             f"({self.xbits}): centroids are x values shifted left by 0.."
                             f"xbits - ca")

    # -- memory organisation
    @property
    def depth(self):
        """Rows of the weight-index memory per lane: one row = the P indices of one beat."""
        return -(-self.k_max // self.elems)

    @property
    def positions(self):
        """Longest vector in elements: whole beats."""
        return self.depth * self.elems

    @property
    def row_bits(self):
        return clog2(self.depth)

    @property
    def col_bits(self):
        return (self.elems - 1).bit_length()

    @property
    def pos_bits(self):
        return self.row_bits + self.col_bits

    @property
    def lane_bits(self):
        return clog2(self.outputs)

    @property
    def count_bits(self):
        """Width of the per-beat element count 0..P (values above P read as P)."""
        return self.elems.bit_length()

    # -- arithmetic widths
    @property
    def shift_max(self):
        """Largest activation shift: a centroid in x units is ``Ca << shift``, within xbits."""
        return self.xbits - self.ca

    @property
    def shift_bits(self):
        return max(1, self.shift_max.bit_length())

    @property
    def rbits(self):
        """Outlier residual ``x - (Ca[ia] << shift)``: |r| < 2**xbits."""
        return self.xbits + 1

    @property
    def sum_bits(self):
        """A bucket summed over the P files: at most ``positions`` centroids, each in
        ``-2**(ca-1) .. 2**(ca-1) - 1``, so the sum lies in ``-positions * 2**(ca-1) ..
        positions * 2**(ca-1) - positions`` (the negative end sets the width).  The IMU keeps
        its bucket files modulo ``2**sum_bits`` (see :class:`hdl.imu.Imu`)."""
        return (self.positions * 2 ** (self.ca - 1) - 1).bit_length() + 1

    @property
    def dense_bits(self):
        """The dense dot product before the shift."""
        return bits_signed(self.positions * 2 ** (self.ca - 1) * 2 ** (self.cw - 1))

    @property
    def ybits(self):
        """The result: dense part shifted by up to ``shift_max`` plus the outlier corrections."""
        dense = (self.positions * 2 ** (self.ca - 1) * 2 ** (self.cw - 1)) << self.shift_max
        return bits_signed(dense + self.outliers * 2 ** self.xbits * 2 ** (self.cw - 1))

    @property
    def mul_bits(self):
        """The tail multiplier's data operand: a bucket sum or an outlier residual."""
        return max(self.sum_bits, self.rbits)

    # -- timing (see hdl/imu.py)
    @property
    def combine_ops(self):
        """Tail operations per token before the shift: one per bucket."""
        return 2 ** self.bw

    @property
    def tree_depth(self):
        """Pipeline stages of the adder tree over the P bucket files."""
        return self.col_bits

    def tail_ops(self, shift, n_outliers):
        """Tail operations of one token: combine, ``shift`` doublings, one per outlier beat."""
        return self.combine_ops + shift + (max(1, n_outliers) if self.outliers else 0)

    @property
    def latency(self):
        """Cycles from the accepted last beat of a vector to its result, less the tail
        operations, when the tail is free, the outliers wait and the output is not stalled:
        the result leaves ``latency + tail_ops(shift, n) - 1`` cycles after the last beat."""
        return 13 + self.tree_depth

    @property
    def min_beats(self):
        """Shortest vector (in beats) that streams at II = 1: a vector may start only when the
        tail has read the bank of the vector two before it (2**bw + 5 beats)."""
        return self.combine_ops + 5

    def streams(self, beats, shift, n_outliers):
        """True when vectors of ``beats`` beats stream back to back with no input stall."""
        return beats >= max(self.min_beats, self.tail_ops(shift, n_outliers))


@dataclass(frozen=True)
class ImuBaselineConfig(ImuConfig):
    """Baseline of the IMU: dequantize both operands and multiply-accumulate (one multiplier
    per MAC), same ports, storage and tail (shift and outlier correction)."""

    UNIT = "imu_baseline"

    @property
    def combine_ops(self):
        return 1

    @property
    def mul_bits(self):
        return self.rbits

    @property
    def latency(self):
        """As :attr:`ImuConfig.latency`; two cycles more than the IMU's: the register between
        the weight codebook read and the multipliers (F3), and the tail stage between the
        outlier index select and its codebook read (see hdl/imu.py)."""
        return 15 + self.tree_depth

    @property
    def min_beats(self):
        """The dense sum is handed to the tail 7 + tree_depth cycles after the last beat and
        its bank released one cycle after the tail has read it."""
        return 8 + self.tree_depth


# ----------------------------------------------------------------------------- the core

@dataclass(frozen=True)
class CoreConfig(UnitConfig):
    """The KLLM core: the units behind an instruction stream (base/isa.py), one AXI4 master
    to external memory, on-chip activation, weight and table buffers."""

    UNIT = "core"
    RENAMED = {}

    outputs: int = param(16, 1, 64, "IMU output channels in parallel (L)")
    elems: int = param(4, 1, 16, "elements per beat (P) of every unit, a power of 2")
    bw: int = param(4, 2, 4, "weight index bits")
    ba: int = param(8, 2, 8, "activation index bits of a MATMUL input")
    row_ba: int = param(6, 2, 6, "index bits of a softmax or norm row (2**row_ba centroids)")
    lut_ba: int = param(8, 2, 8, "index bits of an elementwise table (GELU)")
    k_max: int = param(1536, 16, 4096, "longest MATMUL reduction (K) in elements")
    outliers: int = param(8, 0, 32, "Orizuru outliers per side per token, at most")
    max_row: int = param(1536, 16, 4096, "longest ROWOP / ADD row in elements")
    max_tokens: int = param(64, 1, 256, "longest sentence (softmax rows, A V reductions)")
    bus_bytes: int = param(32, 8, 32, "AXI4 data width in bytes (8, 16 or 32)")
    slots: int = param(2, 2, 8, "weight slots (IMU tiles) in WBUF")
    abuf_kb: int = param(192, 4, 512, "activation buffer in KiB (16-bit elements)")
    tbuf_kb: int = param(96, 4, 256, "table buffer in KiB (32-bit words)")
    baseline: int = param(0, 0, 1, "1: MATMUL on the dequantize-and-multiply IMU "
                                   "(imu_baseline); not yet verified, and the softmax/norm "
                                   "baselines are not wired into the row engine")

    def check(self):
        u = self.UNIT
        for name in ("elems", "bus_bytes"):
            v = getattr(self, name)
            if v & (v - 1):
                raise ValueError(f"{u}: parameter '{name}' must be a power of 2, got {v}")
        if self.k_max % self.elems:
            raise ValueError(f"{u}: parameter 'k_max' ({self.k_max}) must be a multiple of "
                             f"elems ({self.elems})")
        if 4 * self.elems > self.bus_bytes:
            raise ValueError(f"{u}: parameter 'elems' ({self.elems}) must be at most "
                             f"bus_bytes / 4 ({self.bus_bytes // 4}): a beat of 16-bit "
                             f"elements is at most half a buffer word")
        if self.max_tokens > self.max_row:
            raise ValueError(f"{u}: parameter 'max_tokens' ({self.max_tokens}) must not exceed "
                             f"max_row ({self.max_row})")

    @property
    def imu(self):
        """The IMU inside (its outlier port takes both sides: 2 x outliers per token)."""
        cls = ImuBaselineConfig if self.baseline else ImuConfig
        return cls(outputs=self.outputs, elems=self.elems, bw=self.bw, ba=self.ba, cw=8, ca=8,
                   k_max=self.k_max, outliers=max(1, 2 * self.outliers), xbits=16)

    @property
    def depth(self):
        return self.k_max // self.elems

    @property
    def slot(self):
        return slot_layout(self.outputs, self.elems, self.bw, self.depth)

    @property
    def abuf_bytes(self):
        return self.abuf_kb * 1024

    @property
    def tbuf_words(self):
        return self.tbuf_kb * 256

    @property
    def wbuf_bytes(self):
        return self.slots * self.slot.stride


__all__ += ["CoreConfig"]
