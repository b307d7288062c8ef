"""The row engine's schedule (:mod:`hdl.rowengine`): how many histogram units it holds, and
the closed cycle formulas of ROWOP and ADD that :func:`golden.core_ops.rowop_cycles` and
:func:`golden.core_ops.add_cycles` return (the RTL meets them exactly).

One source of truth for the RTL, the interpreter and the bench.

* **Setup**: the format's header, its thresholds (and, for NORM, its centroids) one word a
  cycle, then the LUT table (``2**ba`` words) or the exp table (``4**ba``) one word a
  cycle, or (NORM, ADD) the affine's shift and its columns one a cycle (every other cycle
  on a 64-bit bus: three words a column).  Each TBUF stream starts :data:`RE_STREAM`
  cycles after it is requested.
* **Rows**: row ``r`` starts ``t_r`` cycles after the first, one beat a cycle within a
  row; a row takes ``S = max(b, Wmax)`` cycles (``b`` beats, ``Wmax`` the most ABUF words
  its elements can touch; ADD ``max(b, 2 Wmax)``).  SOFTMAX and NORM rows go in round
  robin to ``N`` histogram units, each busy ``U = 2 b + L - 1`` cycles a row (``L`` the
  unit's latency), so ``t_r = floor(r / N) max(U, N S) + (r mod N) S``; LUT and ADD rows
  ``t_r = r S``.
* **Tail**: the pipeline after the last beat (quantizer, table or unit, the output
  stages, the writer).
"""

from base.config import LutConfig, NormConfig, QuantizerConfig, SoftmaxConfig
from base.isa import RowKind

__all__ = ["RE_STREAM", "RE_FRONT", "RE_OUT", "row_engine_units", "row_unit_configs",
           "row_words", "row_slot", "row_starts_span", "rowop_schedule", "add_schedule"]

#: Cycles from a TBUF stream's request to its first word.
RE_STREAM = 4
#: Cycles from the last setup word to the first row's first beat (the ABUF reader's
#: head start: two words of each operand).
RE_FRONT = 6
#: Output stages after a result (affine read, product, sum, shift, saturation), the write
#: queue and the write, and a margin for the queue's backlog.
RE_OUT = 11
#: Beats of the softmax rows the unit count is sized for.
SOFTMAX_TARGET_BEATS = 8
#: Beats per cycle the softmax rows of SOFTMAX_TARGET_BEATS must reach.
SOFTMAX_TARGET = 0.9


def row_unit_configs(config):
    """The configurations of the units inside the engine, by kind."""
    P = config.elems
    qba = max(config.lut_ba, config.row_ba)
    return {
        "quantizer": QuantizerConfig(width=17, ba=qba, elems=P),
        RowKind.LUT: LutConfig(ba=config.lut_ba, elems=P, out_width=32),
        RowKind.SOFTMAX: SoftmaxConfig(ba=config.row_ba, elems=P, max_len=config.max_tokens),
        RowKind.NORM: NormConfig(ba=config.row_ba, elems=P, max_len=config.max_row, cw=16),
    }


def row_engine_units(config):
    """``(softmax units, norm units)``: enough softmax units that rows of
    :data:`SOFTMAX_TARGET_BEATS` beats (or the longest softmax row, if shorter) stream at one
    beat a cycle (``N b >= U``); norm units so that the longest rows do."""
    cfgs = row_unit_configs(config)
    P = config.elems
    b = min(SOFTMAX_TARGET_BEATS, -(-config.max_tokens // P))
    n_sm = -(-(2 * b + cfgs[RowKind.SOFTMAX].latency - 1) // b)
    bn = -(-config.max_row // P)
    n_nm = -(-(2 * bn + cfgs[RowKind.NORM].latency - 1) // bn)
    return n_sm, n_nm


def row_words(config, length):
    """The most ABUF words a row of ``length`` elements can touch (any alignment)."""
    EW = config.bus_bytes // 2
    return -(-(length - 1) // EW) + 1


def row_slot(config, length, add=False):
    b = -(-length // config.elems)
    w = row_words(config, length)
    return max(b, 2 * w if add else w)


def row_starts_span(rows, S, N=None, U=0):
    """Cycles from the first row's start to the last row's start (``t_{R-1}``)."""
    r = rows - 1
    if N is None:
        return r * S
    return (r // N) * max(U, N * S) + (r % N) * S


def _affine_cycles(config, length):
    every = 1 if config.bus_bytes // 4 >= 3 else 2
    return RE_STREAM + RE_STREAM + every * length - 1


def rowop_schedule(config, kind, rows, length, ba):
    """Cycles of a ROWOP from ``start`` to ``done`` (no fault)."""
    cfgs = row_unit_configs(config)
    J = 1 << ba
    P = config.elems
    b = -(-length // P)
    S = row_slot(config, length)
    QL = cfgs["quantizer"].latency
    head = 1 + RE_STREAM
    nfmt = (2 * J - 1) if kind == RowKind.NORM else J - 1
    X = head + RE_STREAM + nfmt - 1
    if kind == RowKind.NORM:
        Y = X + 2 + _affine_cycles(config, length)
    else:
        ntab = J if kind == RowKind.LUT else J * J
        Y = X + 2 + RE_STREAM + ntab - 1
    F = Y + RE_FRONT
    if kind == RowKind.LUT:
        span = row_starts_span(rows, S) if rows else 0
        tail = QL + cfgs[RowKind.LUT].latency + 1 + RE_OUT
    else:
        n_sm, n_nm = row_engine_units(config)
        N = n_sm if kind == RowKind.SOFTMAX else n_nm
        L = cfgs[kind].latency
        span = row_starts_span(rows, S, N, 2 * b + L - 1) if rows else 0
        tail = QL + L + b + RE_OUT
    return F + (span + b if rows else 0) + tail + 1


def add_schedule(config, rows, length):
    """Cycles of an ADD from ``start`` to ``done`` (no fault)."""
    b = -(-length // config.elems)
    S = row_slot(config, length, add=True)
    Y = 1 + _affine_cycles(config, length)
    F = Y + RE_FRONT
    span = row_starts_span(rows, S) if rows else 0
    return F + (span + b if rows else 0) + RE_OUT - 3
