"""Semantics and cycle counts of the KLLM core's compute instructions (MATMUL, ROWOP, ADD).

The interpreter (:mod:`golden.interp`) calls :func:`execute` for every compute
instruction with the on-chip buffers as byte arrays; it returns the cycles the compute
engine is busy with the instruction (from its start to its signal), and raises
:class:`base.isa.CoreFault` for a fault the core reports.

Each instruction is the composition of the units' golden twins, so the core is
bit-exact with them by construction of its contract:

* **MATMUL** -- quantizer (:mod:`golden.quantizer`), Orizuru outliers
  (:func:`golden.quant.top_outliers`, its contract), the IMU (:func:`golden.imu.
  index_matmul`), then the slot's requantization ``sat16((y * M[n] + B[n] + 2**(sh-1))
  >> sh)``; lane ``n`` of token ``t`` goes to ``y_addr + t * y_tstride + n * y_nstride``.
* **ROWOP** -- quantizer, then LUT (:mod:`golden.lut`), SOFTMAX
  (:func:`golden.softmax.softmax_rows_table`) or NORM (:func:`golden.norm.
  norm_rows_outliers` with the row's Orizuru outliers, then the per-column affine);
  the result is shifted right by ``out_shift`` (LUT, SOFTMAX) and saturated to 16 bits.
* **ADD** -- ``sat16(a + ((b * M[c] + B[c] + 2**(sh-1)) >> sh))``.

The cycle counts are the core's schedule (docs/ARCHITECTURE.md, "The KLLM core"):
:func:`matmul_cycles`, :func:`rowop_cycles`, :func:`add_cycles`.
"""

import torch

from base.isa import CoreFault, Error, Op, RowKind
from base.rowsched import add_schedule, rowop_schedule
from golden.imu import index_matmul, stream_cycles
from golden.norm import norm_rows_outliers
from golden.quant import top_outliers
from golden.quantizer import quantize
from golden.softmax import softmax_rows_table

__all__ = ["execute", "matmul_cycles", "rowop_cycles", "add_cycles", "read_format",
           "read_affine", "Buffers"]

I16 = (-(1 << 15), (1 << 15) - 1)
#: Cycles from a compute instruction's start to its first element read: the decode
#: register and the activation buffer's read.
FRONT = 3
#: Requantization pipeline (multiply, add, round and shift, saturate) and the write.
BACK = 5


def _sat16(t):
    return t.clamp(*I16)


class Buffers:
    """Typed views of the on-chip buffers with the core's bounds checks."""

    def __init__(self, config, abuf, wbuf, tbuf):
        self.c = config
        self.abuf, self.wbuf, self.tbuf = abuf, wbuf, tbuf

    def _span(self, name, size, addr, rows, stride, row_bytes):
        if rows == 0 or row_bytes == 0:
            return
        end = addr + (rows - 1) * stride + row_bytes
        if end > size:
            raise CoreFault(Error.BAD_ADDRESS, f"{name} access {addr:#x}..{end:#x} is outside "
                                                f"its {size} bytes")

    def rows(self, addr, rows, length, stride):
        """``rows`` x ``length`` signed 16-bit elements of ABUF (int64 tensor)."""
        if addr % 2 or stride % 2:
            raise CoreFault(Error.BAD_ADDRESS, f"ABUF element access at {addr:#x}, stride "
                                                f"{stride}: not 16-bit aligned")
        self._span("ABUF", len(self.abuf), addr, rows, stride, 2 * length)
        flat = torch.frombuffer(self.abuf, dtype=torch.int16)
        base = addr // 2 + torch.arange(rows)[:, None] * (stride // 2) + torch.arange(length)
        return flat[base].long() if rows and length else torch.zeros(rows, length, dtype=torch.long)

    def write(self, addr, values, tstride, nstride):
        """Element (t, n) of ``values`` to ``addr + t * tstride + n * nstride``."""
        T, N = values.shape
        if addr % 2 or tstride % 2 or nstride % 2:
            raise CoreFault(Error.BAD_ADDRESS, f"ABUF write at {addr:#x} (strides {tstride}, "
                                                f"{nstride}): not 16-bit aligned")
        if T == 0 or N == 0:
            return
        last = addr + (T - 1) * tstride + (N - 1) * nstride + 2
        if last > len(self.abuf):
            raise CoreFault(Error.BAD_ADDRESS, f"ABUF write up to {last:#x} is outside its "
                                                f"{len(self.abuf)} bytes")
        flat = torch.frombuffer(self.abuf, dtype=torch.int16)
        idx = addr // 2 + torch.arange(T)[:, None] * (tstride // 2) + torch.arange(N) * (nstride // 2)
        flat[idx.flatten()] = _sat16(values).to(torch.int16).flatten()

    def words(self, addr, n):
        """``n`` signed 32-bit TBUF words from word address ``addr``."""
        if addr + n > len(self.tbuf) // 4:
            raise CoreFault(Error.BAD_ADDRESS, f"TBUF words {addr}..{addr + n} are outside its "
                                                f"{len(self.tbuf) // 4} words")
        return torch.frombuffer(self.tbuf, dtype=torch.int32)[addr:addr + n].long()

    def slot_bytes(self, slot, offset, n):
        if slot >= self.c.slots:
            raise CoreFault(Error.BAD_ADDRESS, f"weight slot {slot} does not exist "
                                                f"({self.c.slots} slots)")
        base = slot * self.c.slot.stride + offset
        return bytes(self.wbuf[base:base + n])


def read_format(buf, addr, max_ba):
    """``(ba, shift, thresholds, centroids)`` of the quantizer format at TBUF ``addr``."""
    head = int(buf.words(addr, 1)[0])
    ba, shift = head & 0xFF, (head >> 8) & 0xFF
    if not 1 <= ba <= max_ba:
        raise CoreFault(Error.OVERFLOW, f"format at TBUF {addr}: {ba} index bits, the unit "
                                        f"takes 1..{max_ba}")
    J = 1 << ba
    w = buf.words(addr + 1, 2 * J - 1)
    thresholds, centroids = w[:J - 1], w[J - 1:]
    if bool((thresholds[1:] < thresholds[:-1]).any()):
        raise CoreFault(Error.BAD_OPCODE, f"format at TBUF {addr}: thresholds not sorted")
    return ba, shift, thresholds, centroids


def read_affine(words_at, addr, n):
    """``(M, B, sh)`` of ``n`` columns at TBUF ``addr`` (:func:`base.isa.affine_words`)."""
    sh = int(words_at(addr, 1)[0])
    w = words_at(addr + 1, 3 * n).view(n, 3)
    M = w[:, 0]
    B = (w[:, 2] << 32) | (w[:, 1] & 0xFFFFFFFF)
    return M, B, sh


def _shift_round(v, sh):
    return (v + (1 << (sh - 1))) >> sh if sh > 0 else v


# ------------------------------------------------------------------ the schedule

def matmul_cycles(config, tokens, k, lanes, fmt_ba, outliers, shift, y_nstride):
    """Compute-engine cycles of a MATMUL (hdl/matmul.py): the start and the checks, then

    * the setup, ``max(2**ba + 1, W + 1 + 2**bw)``: the ``2**ba`` quantizer thresholds and
      activation centroids read from TBUF one a cycle (``ba`` the core's: a format of fewer
      bits is padded), in parallel with the ``W`` WBUF words of the slot's codebooks and
      requantization read into registers and then ``2**bw`` codebook writes, each into every
      lane at once;
    * the front: :data:`FRONT` (start, checks, the first ABUF read) + the quantizer
      (``ba + 1``);
    * the IMU's exact stream schedule (:func:`golden.imu.stream_cycles`), its outliers
      always there before its tail asks for them;
    * the writer, one lane a cycle in either layout (``lanes`` cycles after the last
      result; when ``lanes`` exceeds the IMU's interval between results the stream waits for
      it), then the requantization pipeline and the write, :data:`BACK`.

    ``fmt_ba`` and ``y_nstride`` do not change the count."""
    imu = config.imu
    B = config.bus_bytes
    beats = -(-k // config.elems)
    n_out = 2 * min(outliers, k // 2)
    tail = imu.tail_ops(shift, n_out)
    lay = config.slot
    words = (lay.requant + 4 + 12 * config.outputs - 1) // B - lay.codebook // B + 1
    setup = max((1 << config.ba) + 1, words + 1 + (1 << config.bw))
    front = FRONT + config.ba + 1
    stream = stream_cycles(imu, [beats] * tokens, [tail] * tokens)
    writer = lanes
    interval = max(beats, imu.min_beats, tail)
    if writer > interval:
        stream += (tokens - 1) * (writer - interval)
    return setup + front + stream + BACK + writer


def rowop_cycles(config, kind, rows, length, ba, outliers=0):
    """Compute-engine cycles of a ROWOP on the row engine (:mod:`hdl.rowengine`), from its
    start to its done: the format's header, thresholds (and NORM's centroids) and the
    table (LUT ``2**ba`` words, exp table ``4**ba``) or NORM's affine (a column a cycle)
    copied from TBUF, the ABUF reader's head start, the rows (``S = max(b, Wmax)`` cycles
    each; SOFTMAX and NORM rows in round robin over the engine's histogram units, each busy
    ``2 b + L - 1`` cycles a row) and the pipeline after the last beat: the closed formula
    :func:`base.rowsched.rowop_schedule`.  ``outliers`` do not change it."""
    return rowop_schedule(config, kind, rows, length, ba)


def add_cycles(config, rows, length):
    """ADD on the row engine: the affine's shift and columns (a column a cycle), the ABUF
    reader's head start, rows of ``max(b, 2 Wmax)`` cycles (a and b through one read port),
    the multiply-add and the write (:func:`base.rowsched.add_schedule`)."""
    return add_schedule(config, rows, length)


# ------------------------------------------------------------------ execution

def execute(config, instr, abuf, wbuf, tbuf):
    """Run one compute instruction on ``abuf``/``wbuf``/``tbuf`` (bytearrays); return its
    cycles."""
    buf = Buffers(config, abuf, wbuf, tbuf)
    if instr.op == Op.MATMUL:
        return _matmul(config, buf, instr)
    if instr.op == Op.ROWOP:
        return _rowop(config, buf, instr)
    if instr.op == Op.ADD:
        return _add(config, buf, instr)
    raise CoreFault(Error.BAD_OPCODE, f"opcode {instr.op:#x} is not a compute instruction")


def _matmul(c, buf, i):
    a = i.args
    slot, T, K, lanes, k = i.sub, a["tokens"], a["k"], a["lanes"], a["outliers"]
    if slot >= c.slots:
        raise CoreFault(Error.BAD_ADDRESS, f"MATMUL: weight slot {slot} does not exist "
                                            f"({c.slots} slots)")
    if not 1 <= K <= c.k_max:
        raise CoreFault(Error.OVERFLOW, f"MATMUL: K={K} outside 1..k_max={c.k_max}")
    if not 1 <= lanes <= c.outputs:
        raise CoreFault(Error.OVERFLOW, f"MATMUL: lanes={lanes} outside 1..{c.outputs}")
    if k > c.outliers:
        raise CoreFault(Error.OVERFLOW, f"MATMUL: {k} outliers per side, the core takes "
                                        f"{c.outliers}")
    ba, shift, thresholds, Ca = read_format(buf, a["fmt"], c.ba)
    if shift > c.imu.shift_max:
        raise CoreFault(Error.OVERFLOW, f"MATMUL: activation shift {shift} > {c.imu.shift_max}")
    x = buf.rows(a["x_addr"], T, K, a["x_stride"])
    lay = c.slot
    # weight indices: entry (row, lane), P indices of bw bits, lowest first
    raw = buf.slot_bytes(slot, lay.index, lay.codebook)
    rows = -(-K // c.elems)
    ent = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(c.depth, c.outputs,
                                                                     lay.entry_bytes).long()
    word = sum(ent[..., b] << (8 * b) for b in range(lay.entry_bytes))       # (depth, L)
    mask = (1 << c.bw) - 1
    Iw = torch.stack([(word >> (c.bw * e)) & mask for e in range(c.elems)], -1)  # (depth, L, P)
    Iw = Iw[:rows, :lanes].permute(1, 0, 2).reshape(lanes, rows * c.elems)[:, :K]
    cb = torch.frombuffer(bytearray(buf.slot_bytes(slot, lay.codebook, lay.requant - lay.codebook)),
                          dtype=torch.int8).long().view(c.outputs, 1 << c.bw)[:lanes]
    rq = torch.frombuffer(bytearray(buf.slot_bytes(slot, lay.requant, 4 + 12 * c.outputs)),
                          dtype=torch.int32).long()
    M, B, sh = read_affine(lambda at, n: rq[at:at + n], 0, c.outputs)
    M, B = M[:lanes], B[:lanes]
    idx = quantize(x, thresholds)
    residual = None
    if k:
        sel = top_outliers(x, min(k, K // 2))
        residual = torch.where(sel, x - (Ca[idx] << shift), 0)
    y = index_matmul(Iw, cb, idx, Ca, shift=shift, residual=residual)      # (T, lanes)
    out = _sat16(_shift_round(y * M + B, sh))
    buf.write(a["y_addr"], out, a["y_tstride"], a["y_nstride"])
    return matmul_cycles(c, T, K, lanes, ba, k, shift, a["y_nstride"])


def _rowop(c, buf, i):
    a = i.args
    kind, R, n = i.sub, a["rows"], a["length"]
    if kind not in (RowKind.LUT, RowKind.SOFTMAX, RowKind.NORM):
        raise CoreFault(Error.BAD_OPCODE, f"ROWOP kind {kind} does not exist")
    limit = c.max_tokens if kind == RowKind.SOFTMAX else c.max_row
    if not 1 <= n <= limit:
        raise CoreFault(Error.OVERFLOW, f"ROWOP: row length {n} outside 1..{limit}")
    max_ba = {RowKind.LUT: c.lut_ba, RowKind.SOFTMAX: c.row_ba, RowKind.NORM: c.row_ba}[kind]
    ba, shift, thresholds, C = read_format(buf, a["fmt"], max_ba)
    J = 1 << ba
    k = a["outliers"]
    if k and kind != RowKind.NORM:
        raise CoreFault(Error.BAD_OPCODE, "ROWOP: outliers are a NORM option")
    if k > c.outliers:
        raise CoreFault(Error.OVERFLOW, f"ROWOP: {k} outliers per side, the core takes "
                                        f"{c.outliers}")
    x = buf.rows(a["src"], R, n, a["src_stride"])
    idx = quantize(x, thresholds)
    if kind == RowKind.LUT:
        out = buf.words(a["table"], J)[idx] >> a["out_shift"]
    elif kind == RowKind.SOFTMAX:
        p, _ = softmax_rows_table(idx, buf.words(a["table"], J * J).view(J, J))
        out = p >> a["out_shift"]
    else:
        mask = top_outliers(x, min(k, n // 2)) if k else None
        z = norm_rows_outliers(idx, C << shift, x, mask)
        M, B, sh = read_affine(buf.words, a["table"], n)
        out = _shift_round(z * M + B, sh)
    buf.write(a["dst"], _sat16(out), a["dst_stride"], 2)
    return rowop_cycles(c, kind, R, n, ba, k)


def _add(c, buf, i):
    a = i.args
    R, n = a["rows"], a["length"]
    if not 1 <= n <= c.max_row:
        raise CoreFault(Error.OVERFLOW, f"ADD: row length {n} outside 1..{c.max_row}")
    x = buf.rows(a["a"], R, n, a["stride"])
    y = buf.rows(a["b"], R, n, a["stride"])
    M, B, sh = read_affine(buf.words, a["params"], n)
    buf.write(a["dst"], _sat16(x + _shift_round(y * M + B, sh)), a["stride"], 2)
    return add_cycles(c, R, n)
